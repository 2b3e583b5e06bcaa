"""Learning-rate schedule registry, stepped once per optimizer step. Defaults are relative to the
run length, so every schedule means the same thing for a 20-step smoke run and a 2-epoch COCO run."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, StepLR

from stylestream.registry import Registry

ScheduleFactory = Callable[..., LRScheduler]
SCHEDULES: Registry[ScheduleFactory] = Registry("schedule")


@SCHEDULES.register("constant", help="fixed learning rate")
def constant(optimizer: Optimizer, total_steps: int) -> LRScheduler:
    return LambdaLR(optimizer, lambda t: 1.0)


@SCHEDULES.register("step", help="x gamma (0.1) every step_size steps (default: a third of the run)")
def step(
    optimizer: Optimizer, total_steps: int, step_size: int | None = None, gamma: float = 0.1
) -> LRScheduler:
    return StepLR(optimizer, step_size=step_size or max(1, math.ceil(total_steps / 3)), gamma=gamma)


@SCHEDULES.register(
    "exponential", help="x gamma per step; default gamma reaches final_factor (0.01) at the end"
)
def exponential(optimizer: Optimizer, total_steps: int, gamma: float | None = None,
                final_factor: float = 0.01) -> LRScheduler:  # fmt: skip
    g = gamma if gamma is not None else final_factor ** (1.0 / max(1, total_steps))
    return LambdaLR(optimizer, lambda t: g**t)


@SCHEDULES.register("inverse-time", help="lr0 / (1 + k t); default k makes the final lr lr0/10")
def inverse_time(optimizer: Optimizer, total_steps: int, k: float | None = None) -> LRScheduler:
    decay = k if k is not None else 9.0 / max(1, total_steps)
    return LambdaLR(optimizer, lambda t: 1.0 / (1.0 + decay * t))


@SCHEDULES.register("cosine", help="cosine annealing from lr0 to eta_min (0) over the run")
def cosine(optimizer: Optimizer, total_steps: int, eta_min: float = 0.0) -> LRScheduler:
    return CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=eta_min)


def make_schedule(name: str, optimizer: Optimizer, total_steps: int, **kw: Any) -> LRScheduler:
    """Build a registered schedule; unknown names raise UnknownNameError listing the choices."""
    return SCHEDULES[name](optimizer, total_steps, **kw)
