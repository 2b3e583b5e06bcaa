"""Mixed precision for training: which autocast dtype a device gets, and whether it needs a GradScaler.
bf16 wherever it is native (CUDA from Ampere, CPUs with AMX tiles), fp16 + GradScaler on older GPUs,
float32 elsewhere. The step itself is in stylestream.train.step."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def cpu_has_fast_bf16() -> bool:
    """AMX tiles make bf16 convolutions several times faster than float32 on CPU; without them bf16
    is emulated and slower, so AMP stays off by default."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def amp_setup(dev: torch.device, amp: bool | None, closure: bool) -> tuple[torch.dtype | None, bool]:
    """Returns (autocast dtype or None, whether a GradScaler is needed). `amp` None: on where fast."""
    if dev.type == "cuda":
        if amp is False:
            return None, False
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, False
        if closure:  # GradScaler cannot drive a closure optimizer
            log.warning("fp16 AMP does not work with L-BFGS closures; training in float32")
            return None, False
        return torch.float16, True
    if dev.type == "cpu" and (amp or (amp is None and cpu_has_fast_bf16())):
        return torch.bfloat16, False
    if amp and dev.type != "cpu":
        log.warning("AMP is not supported on %s; training in float32", dev)
    return None, False
