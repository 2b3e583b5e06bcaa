"""One optimization step of a style network against a perceptual loss, shared by `train`, sweeps
and lockstep multi-model runs. Supports closures (L-BFGS re-evaluates the loss several times per
step), autocast (bf16 on CPU/GPU, fp16 + GradScaler on older GPUs) and the temporal term
(stylestream.train.temporal_loss). The fused pass of several models is stylestream.train.fused."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.optim import Optimizer

from stylestream.train.losses import PerceptualLoss
from stylestream.train.temporal_loss import MovedBatch

Terms = dict[str, torch.Tensor]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def model_outputs(model: nn.Module, x: torch.Tensor,
                  moved: MovedBatch | None) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """(f(x), f(moved frames) or None). With partner frames both go through the network as one batch:
    one pass instead of two (with batch norm its statistics then cover both halves)."""
    if moved is None:
        return model(x), None
    y = model(torch.cat([x, moved.moved]))
    return y[: x.shape[0]], y[x.shape[0] :]


def add_temporal(terms: Terms, weight: float, moved: MovedBatch | None, y: torch.Tensor,
                 y_moved: torch.Tensor | None) -> Terms:  # fmt: skip
    """`terms` with "temporal" (0 when off) and a total that includes it."""
    if moved is None or y_moved is None or not weight:
        terms["temporal"] = terms["total"].new_zeros(())
        return terms
    terms["temporal"] = weight * moved.loss(y, y_moved)
    terms["total"] = terms["total"] + terms["temporal"]
    return terms


def apply_update(optimizer: Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """The optimizer step from the gradients a backward left (unscaled first under a GradScaler)."""
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()


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
    moved: MovedBatch | None = None,
    temporal_weight: float = 0.0,
) -> Terms:
    """Forward, backward and optimizer step on batch `x` with precomputed `loss_fn.content_targets(x)`;
    with `moved` (stylestream.train.temporal_loss.move_batch(x)) and a temporal weight, the temporal term
    joins the loss. Returns the detached loss terms of the first evaluation (the loss before this step's
    update)."""
    first: list[Terms] = []
    moved = moved if temporal_weight else None

    def evaluate() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, amp_dtype):  # the loss itself does its arithmetic in float32
            y, y_moved = model_outputs(model, x, moved)
            terms = add_temporal(loss_fn(y, targets), temporal_weight, moved, y, y_moved)
        total = terms["total"]
        (scaler.scale(total) if scaler is not None else total).backward()
        if not first:
            first.append({k: v.detach() for k, v in terms.items()})
        return total

    if closure:
        optimizer.step(evaluate)
    else:
        evaluate()
        apply_update(optimizer, scaler)
    return first[0]


def content_targets(loss_fn: PerceptualLoss, x: torch.Tensor, amp_dtype: torch.dtype | None) -> Terms:
    with autocast(x.device, amp_dtype):
        return loss_fn.content_targets(x)
