"""ExecuTorch programs (NAME.pte) lowered to the XNNPACK backend, for Android, iOS and embedded Linux:
FP32, or INT8 by the PT2E flow (XNNPACKQuantizer, symmetric per-channel, calibrated on --calibration
frames).

The input size is fixed (--static WxH): ExecuTorch plans activation memory for the largest shape a
dynamic program allows, and for these nets (reflect padding by a size-dependent amount) that plan
comes out at gigabytes. The batch is --batch (default 1); the runtime backend runs larger batches
frame by frame."""

from __future__ import annotations

import logging
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import numpy as np

from stylestream.export.formats import ExportError
from stylestream.plugins.modelfiles import first_line

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob

log = logging.getLogger(__name__)

INT8_SCHEME = "PT2E XNNPACKQuantizer: symmetric per-channel INT8 weights, per-tensor INT8 activations, MinMax"


def _example(job: ExportJob) -> tuple[Any]:
    import torch

    h, w = job.options.static  # type: ignore[misc]  # a fixed_size row: preflight checked
    return (torch.rand(job.options.batch or 1, 3, h, w, generator=torch.Generator().manual_seed(0)) * 255,)


def _quantize(job: ExportJob, example: tuple[Any]) -> Any:
    """PT2E: annotate for XNNPACK, calibrate on real frames, convert; returns the re-exported program."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from stylestream.export.int8 import calibration_batches
    from stylestream.export.verify import psnr

    batches = calibration_batches(job.options)
    graph = torch.export.export(job.model.eval(), example).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for b in batches:
            prepared(torch.from_numpy(b))
        quantized = convert_pt2e(prepared)
        values = [psnr(quantized(torch.from_numpy(b)).numpy(), job.model(torch.from_numpy(b)).numpy())
                  for b in batches]  # fmt: skip
    job.info["quantization"] = {
        "scheme": INT8_SCHEME, "calibration": str(job.options.calibration),
        "calibration_frames": sum(len(b) for b in batches), "calibration_size": list(batches[0].shape[2:]),
        "psnr_vs_fp32_calibration_db": {"min": round(min(values), 2), "mean": round(float(np.mean(values)), 2)},
    }  # fmt: skip
    return torch.export.export(quantized, example)


def _build(job: ExportJob, int8: bool) -> None:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = _example(job)
    try:
        with torch.no_grad():
            program = _quantize(job, example) if int8 else torch.export.export(job.model.eval(), example)
            lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as exc:  # noqa: BLE001 - torch.export / lowering raise many kinds; one line says why
        raise ExportError(f"ExecuTorch could not lower the model ({first_line(exc)})") from None
    job.artifact.write_bytes(lowered.buffer)
    job.info["executorch"] = {"version": version("executorch"), "backend": "XNNPACK",
                              "input": [*example[0].shape], "layout": "NCHW"}  # fmt: skip


def build_executorch(job: ExportJob) -> None:
    _build(job, int8=False)


def build_executorch_int8(job: ExportJob) -> None:
    _build(job, int8=True)
