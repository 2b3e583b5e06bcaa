"""ncnn models (NAME.param + NAME.bin) for Android, embedded Linux and Vulkan GPUs, through pnnx
(PyTorch -> TorchScript trace -> ncnn), with pnnx's FP16 weight storage.

The input size is fixed (--static WxH): pnnx bakes size-dependent padding into the graph (a traced
size), and at other sizes the output comes out the wrong shape. The size is written into the Input
layer (ncnn's `0=w 1=h 2=c`), so the runtime backend can refuse other sizes with a clear line."""

from __future__ import annotations

import logging
import re
import shutil
import warnings
from importlib.metadata import version
from typing import TYPE_CHECKING

from stylestream.export.formats import ExportError
from stylestream.plugins.modelfiles import first_line

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)


def build_ncnn(job: ExportJob) -> None:
    import pnnx
    import torch

    h, w = job.options.static  # type: ignore[misc]  # a fixed_size row: preflight checked
    work = job.workdir / "pnnx"  # pnnx writes several side files beside its TorchScript input
    work.mkdir()
    example = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pnnx traces: TracerWarnings about shape arithmetic (verified after)
            pnnx.export(job.model.eval(), str(work / "model.pt"), (example,), fp16=True)
    except Exception as exc:  # noqa: BLE001 - tracing and pnnx raise many kinds; one line says why
        raise ExportError(f"pnnx could not convert the model ({first_line(exc)})") from None
    param, weights = work / "model.ncnn.param", work / "model.ncnn.bin"
    if not (param.is_file() and weights.is_file()):
        raise ExportError("pnnx wrote no ncnn model (model.ncnn.param/.bin); see its output above")
    lines = _map_reflect_pads(param.read_text().splitlines(), (work / "model.pnnx.param").read_text())
    unsupported = sorted({ln.split()[0] for ln in lines[2:] if ln.split()[0].startswith(("pnnx.", "F.", "torch."))})
    if unsupported:  # ops pnnx could not map to ncnn layers: ncnn would refuse to load the file
        raise ExportError(f"pnnx left ops ncnn does not have: {', '.join(unsupported)}")
    for i, line in enumerate(lines[2:], 2):  # the fixed size, for the runtime: Input 0=w 1=h 2=c
        if line.split()[0] == "Input":
            lines[i] = f"{line} 0={w} 1={h} 2=3"
    job.artifact.write_text("\n".join(lines) + "\n")
    shutil.copyfile(weights, job.artifact.with_suffix(".bin"))
    job.info["ncnn"] = {"converter": f"pnnx {version('pnnx')}", "weights": "fp16 storage",
                        "input": [1, 3, h, w], "layout": "NCHW (ncnn::Mat c, h, w)"}  # fmt: skip


_PNNX_PAD = re.compile(r"^F\.pad\s+(\S+)\s.*\bmode=(reflect|replicate|constant)\b.*\bpad=\((\d+),(\d+),(\d+),(\d+)\)")
_PAD_TYPE = {"constant": 0, "replicate": 1, "reflect": 2}


def _map_reflect_pads(ncnn_lines: list[str], pnnx_param: str) -> list[str]:
    """pnnx leaves the nets' size-dependent pad (F.pad to a multiple of 4, e.g. pad=(0,3,0,3) at odd
    sizes) unconverted; at a fixed size it is a plain ncnn Padding layer (0=top 1=bottom 2=left 3=right
    4=type), with the amounts pnnx traced."""
    pads = {m[1]: m for m in map(_PNNX_PAD.match, pnnx_param.splitlines()) if m}
    out = []
    for line in ncnn_lines:
        parts = line.split()
        if parts and parts[0] == "F.pad" and parts[1] in pads and len(parts) == 6:
            m = pads[parts[1]]
            left, right, top, bottom = m[3], m[4], m[5], m[6]
            line = (f"Padding {parts[1]} 1 1 {parts[4]} {parts[5]} 0={top} 1={bottom} 2={left} 3={right} "
                    f"4={_PAD_TYPE[m[2]]}")  # fmt: skip
        out.append(line)
    return out
