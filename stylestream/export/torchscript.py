"""Traced TorchScript, for LibTorch (C++) and mobile users."""

from __future__ import annotations

import warnings

import torch

from stylestream.export.options import ExportJob


def build_torchscript(job: ExportJob) -> None:
    h, w = job.options.static or (96, 128)
    example = torch.rand(job.options.batch or 1, 3, h, w) * 255
    model = job.model.eval().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic: checked by verification
        # (TorchScript is deprecated in favour of torch.export, but LibTorch/mobile users still load it.)
        traced = torch.jit.trace(model, example, check_trace=False)
        traced = torch.jit.freeze(traced)  # fold parameters into constants: a smaller, faster graph
        torch.jit.save(traced, str(job.artifact))
