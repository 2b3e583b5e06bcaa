"""`stylestream train`: one style network, trained as a lockstep group of one (stylestream.train.lockstep),
so a run on its own and a sweep's runs take the very same steps and leave the same files. Under torchrun
it joins the process group first and trains with DistributedDataParallel (stylestream.train.distributed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stylestream.train.config import TrainConfig
from stylestream.train.distributed import init_from_env
from stylestream.train.lockstep import train_lockstep


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged" (a disk that refuses a write raises WriteError; card.json says "failed")
    step: int
    losses: dict[str, float]
    wall_time_s: float
    images_per_s: float
    run_dir: str
    card: dict[str, Any] = field(default_factory=dict)


def train(cfg: TrainConfig, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train a style network; writes model.pt, metrics.csv, card.json, checkpoint.pt and pictures into
    cfg.out. Every user error (ConfigError, DataError, ImageLoadError, VGGWeightsError, DeviceError: one
    line saying what to do) surfaces before the first step. `on_step(step, losses)` follows every step;
    an error it or a step raises propagates. A write the disk refuses raises WriteError, after recording
    status "failed" and the reason in card.json where that can still be written."""
    init_from_env()  # joins torchrun's process group (DDP); a no-op otherwise
    (oc,) = train_lockstep([cfg], keep_going=False, progress=cfg.progress,
                           on_step=None if on_step is None else lambda _, step, losses: on_step(step, losses))  # fmt: skip
    return TrainResult(oc.status, oc.step, oc.losses, oc.seconds, oc.card.get("images_per_s") or 0.0, oc.out, oc.card)
