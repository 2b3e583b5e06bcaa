"""Traced, frozen TorchScript, for LibTorch (C++) and mobile users, and served by the runtime's
torchscript backend."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from stylestream.export.job import ExportJob


def save_torchscript(model: nn.Module, path: Path, static: tuple[int, int] | None = None,
                     batch: int | None = None) -> None:  # fmt: skip
    """Trace `model` on a (batch or 1, 3, H, W) example (`static`, else 96x128), freeze, save to `path`."""
    h, w = static or (96, 128)
    example = torch.rand(batch or 1, 3, h, w) * 255
    model = model.eval().cpu()
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarnings about shape arithmetic (checked by verification); torch.jit's deprecation in favour
        # of torch.export, while LibTorch/mobile users still load TorchScript
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        traced = torch.jit.freeze(traced)  # fold parameters into constants: a smaller, faster graph
        torch.jit.save(traced, str(path))


def build_torchscript(job: ExportJob) -> None:
    save_torchscript(job.model, job.artifact, job.options.static, job.options.batch)
