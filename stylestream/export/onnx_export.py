"""PyTorch -> ONNX (FP32) and ONNX FP32 -> FP16.

The legacy TorchScript-based exporter (`dynamo=False`) is used because it takes `dynamic_axes` and
emits InstanceNormalization as such; the onnxscript path has emitted InstanceNorm as a training-mode
BatchNorm (onnxscript 1262). Either way, the export is only trusted after verification."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from stylestream.export.formats import ExportError
from stylestream.export.options import ExportOptions

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)

INPUT, OUTPUT = "input", "output"


def export_onnx(model: nn.Module, path: Path, options: ExportOptions) -> None:
    """Export, simplify with onnxslim and check. Input `input`/output `output`: float32
    (N, 3, H, W) RGB in [0, 255]; N, H, W dynamic unless --batch / --static fix them."""
    import onnx
    import onnxslim

    if options.opset < 17:
        raise ExportError(f"--opset {options.opset} is too old: InstanceNormalization/Resize need opset >= 17")
    h, w = options.static or (96, 128)
    n = options.batch or 1
    axes: dict[int, str] = {}
    if options.batch is None:
        axes[0] = "batch"
    if options.static is None:
        axes.update({2: "height", 3: "width"})
    dummy = torch.rand(n, 3, h, w) * 255
    model = model.eval().cpu()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns that InstanceNorm "train=True" - spurious: running stats are off.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (dummy,), str(path), input_names=[INPUT], output_names=[OUTPUT],
            opset_version=options.opset, dynamo=False, do_constant_folding=True,
            dynamic_axes={INPUT: axes, OUTPUT: axes} if axes else None,
        )  # fmt: skip
    proto = onnx.load(str(path))
    slim = onnxslim.slim(proto)
    if slim is None:  # onnxslim returns None only on internal failure; keep the plain export
        log.warning("onnxslim could not simplify %s; keeping the unsimplified graph", path.name)
        slim = proto
    _set_metadata(slim, model)
    onnx.save(slim, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def _set_metadata(proto, model: nn.Module) -> None:
    import json

    from stylestream import __version__

    cfg = getattr(model, "stylestream_config", {})
    meta = {"stylestream_version": __version__, "stylestream_config": json.dumps(cfg),
            "interface": "float32 RGB (N,3,H,W) in [0,255] -> same"}  # fmt: skip
    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "stylestream"


def convert_fp16(src: Path, dst: Path) -> None:
    """FP16 weights and compute with float32 I/O. InstanceNormalization stays FP32: on [0, 255]
    activations its variance overflows FP16 and collapses channels (ORT 10079, TensorRT 2691).
    Resize stays FP32 too (its `scales` input must be float32)."""
    import onnx
    from onnxconverter_common import float16

    proto = onnx.load(str(src))
    # Stale float32 value_info from shape inference makes the converter insert mistyped casts.
    del proto.graph.value_info[:]
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | {"InstanceNormalization"})
    with warnings.catch_warnings():  # "float32 number ... truncated": expected for tiny weights
        warnings.simplefilter("ignore", UserWarning)
        fp16 = float16.convert_float_to_float16(proto, keep_io_types=True, op_block_list=block)
    onnx.save(fp16, str(dst))
    onnx.checker.check_model(str(dst), full_check=True)


def build_onnx(job: ExportJob) -> None:
    import shutil

    shutil.copyfile(job.onnx_fp32, job.artifact)


def build_onnx_fp16(job: ExportJob) -> None:
    import shutil

    shutil.copyfile(job.onnx_for("fp16"), job.artifact)
    job.info["fp16"] = {"kept_fp32_ops": ["InstanceNormalization", "Resize"], "io": "float32"}
