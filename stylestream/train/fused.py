"""The fused lockstep pass (`--fused auto|on|off`, issue 15): the K models of a lockstep group put their
outputs for one batch through VGG as one stacked batch, and one backward of the sum of their losses
fills every model's gradients.

Why it equals the unfused runs: the models share no parameters and VGG is frozen, so the gradient of
the sum with respect to one model's weights is the gradient of that model's own loss. Each model's loss
is computed from its own slice of the feature maps (its Grams, its content error, its TV and temporal
terms), exactly as its own pass would. What changes is only the batch size the VGG kernels see, which
may move results by float rounding: on this project's CPU (oneDNN) fused and unfused runs came out bit
for bit equal (tests/train/test_fused.py allows 1e-5 relative in the weights); on CUDA cuDNN picks other
kernels for the stacked batch, and torch's default TF32 convolutions round at about 1e-3.

Why a diverged model cannot poison the others: every model's total is checked before the backward
(agreed across ranks under DDP, so every rank leaves out the same models) and a non-finite one is left
out of the sum. Its slice of the stacked batch then gets zero gradient; autograd still carries that
back through its own network, but every operation between a model's output and its loss is per-sample
and VGG has no trainable weights, so whatever its NaNs make lands on its own weights only. Those
gradients are cleared, it takes no optimizer step and the group marks it diverged, as an unfused run
would be (tests/train/test_fused.py: the others' gradients and weights equal their runs alone).

Who cannot join: a closure optimizer (L-BFGS re-evaluates its loss many times per step) and a run
whose autocast/GradScaler setting differs from the pass's; they take their own pass (the card says
which runs were fused). The choice is automatic by device: on for CUDA, where one wide VGG pass keeps
the GPU busy (H200: 162 vs 186 ms per group step of 8 optimizers, bench/RESULTS.md); off on CPU, where
it measured about as fast (README, train section) and holds every run's activations at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from stylestream.train.distributed import mean_across_ranks
from stylestream.train.losses import PerceptualLoss
from stylestream.train.step import Terms, add_temporal, autocast, model_outputs
from stylestream.train.temporal_loss import MovedBatch


def fused_wanted(mode: str, device: torch.device) -> bool:
    """--fused auto|on|off on `device`: auto is on for CUDA only."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


@dataclass(frozen=True)
class Member:
    """One model of a fused pass."""

    model: nn.Module
    optimizer: Optimizer
    scaler: torch.amp.GradScaler | None
    temporal_weight: float


@dataclass(frozen=True)
class MemberResult:
    terms: Terms  # detached loss terms (the loss before this step's update)
    backward: bool  # its loss was finite and its gradients are filled: it may take its optimizer step


def fused_backward(members: Sequence[Member], loss_fn: PerceptualLoss, x: torch.Tensor, targets: Terms, *,
                   amp_dtype: torch.dtype | None, moved: MovedBatch | None) -> list[MemberResult]:  # fmt: skip
    """Forward every member on batch `x`, one VGG pass over their stacked outputs, one backward of the
    sum of their finite losses. The optimizer steps are left to the caller (stylestream.train.step
    .apply_update), so a failure here leaves every model as it was."""
    n = x.shape[0]
    for m in members:
        m.optimizer.zero_grad(set_to_none=True)
    with autocast(x.device, amp_dtype):  # as in train_step: the loss arithmetic itself stays float32
        outs = [model_outputs(m.model, x, moved if m.temporal_weight else None) for m in members]
        feats = loss_fn.features(torch.cat([y for y, _ in outs]))
        terms = [
            add_temporal(loss_fn.terms({k: f[i * n : (i + 1) * n] for k, f in feats.items()}, y, targets),
                         m.temporal_weight, moved, y, y_moved)
            for i, (m, (y, y_moved)) in enumerate(zip(members, outs))
        ]  # fmt: skip
    totals = torch.stack([t["total"].detach().float() for t in terms])
    finite = torch.isfinite(mean_across_ranks({"totals": totals})["totals"]).tolist()  # one sync
    live = [m.scaler.scale(t["total"]) if m.scaler is not None else t["total"]
            for m, t, ok in zip(members, terms, finite) if ok]  # fmt: skip
    if live:
        torch.stack(live).sum().backward()
    for m, ok in zip(members, finite):
        if not ok:  # zeros reached it through the stacked batch: it has no gradient, and takes no step
            m.optimizer.zero_grad(set_to_none=True)
    return [MemberResult({k: v.detach() for k, v in t.items()}, ok) for t, ok in zip(terms, finite)]
