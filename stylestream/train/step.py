"""One optimization step of a style network against a perceptual loss, shared by `train`, sweeps
and lockstep multi-model runs. Supports closures (L-BFGS re-evaluates the loss several times per
step), autocast (bf16 on CPU/GPU, fp16 + GradScaler on older GPUs)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.optim import Optimizer

from stylestream.train.losses import PerceptualLoss

Terms = dict[str, torch.Tensor]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_step(
    model: nn.Module,
    optimizer: Optimizer,
    loss_fn: PerceptualLoss,
    x: torch.Tensor,
    targets: Terms,
    *,
    amp_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    closure: bool = False,
) -> Terms:
    """Forward, backward and optimizer step on batch `x` with precomputed `loss_fn.content_targets(x)`.
    Returns the detached loss terms of the first evaluation (the loss before this step's update)."""
    first: list[Terms] = []

    def evaluate() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, amp_dtype):  # the loss itself does its arithmetic in float32
            terms = loss_fn(model(x), targets)
        total = terms["total"]
        (scaler.scale(total) if scaler is not None else total).backward()
        if not first:
            first.append({k: v.detach() for k, v in terms.items()})
        return total

    if closure:
        optimizer.step(evaluate)
    else:
        evaluate()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
    return first[0]


def content_targets(loss_fn: PerceptualLoss, x: torch.Tensor, amp_dtype: torch.dtype | None) -> Terms:
    with autocast(x.device, amp_dtype):
        return loss_fn.content_targets(x)
