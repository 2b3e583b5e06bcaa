"""The settings of a training run (every `stylestream train` option) and their checks: one run's
(TrainConfig.validate), what --resume must find unchanged (RESUME_KEYS), and what the runs of one
lockstep group must share (check_group). Every error is a ConfigError with a one-line message."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from stylestream.cli_choices import FUSED_MODES
from stylestream.models import ARCHITECTURES
from stylestream.models.layers import NORMS
from stylestream.train.lbfgsb import scipy_problem
from stylestream.train.optimizers import OPTIMIZERS
from stylestream.train.pixel_lr import base_optimizer
from stylestream.train.schedules import SCHEDULES

# settings that must match for --resume to continue the same run
RESUME_KEYS = ("style", "data", "arch", "norm", "optimizer", "lr", "schedule", "batch_size", "epochs", "steps",
               "image_size", "style_size", "content_weight", "style_weight", "tv_weight", "temporal_weight",
               "style_reduction", "vgg_weights", "seed")  # fmt: skip
# settings every run of one lockstep group shares (they may differ in optimizer, lr, schedule, out,
# temporal_weight, ...): one data loader, one VGG and one set of initial weights serve them all, and
# fused (one VGG pass for all of them) is a choice of the group's, not of a run's
GROUP_KEYS = ("style", "data", "arch", "norm", "batch_size", "epochs", "steps", "image_size", "style_size",
              "content_weight", "style_weight", "tv_weight", "style_reduction", "vgg_weights", "device",
              "amp", "channels_last", "seed", "workers", "fused")  # fmt: skip


class ConfigError(ValueError):
    """A bad training setting or input, found before any work starts."""


@dataclass
class TrainConfig:
    """Every `stylestream train` option."""

    style: str
    data: str
    out: str
    arch: str = "johnson"
    norm: str = "instance"
    optimizer: str = "adam"
    lr: float = 1e-3
    schedule: str = "constant"
    batch_size: int = 4
    epochs: int = 2
    steps: int | None = None  # overrides epochs
    image_size: int = 256
    style_size: int | None = None  # longer side of the style image; None: image_size; 0: as is
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    temporal_weight: float = 0.0  # 0: off (stylestream.train.temporal_loss)
    style_reduction: str = "mean"
    vgg_weights: str = "imagenet"
    device: str = "auto"
    amp: bool | None = None  # None: on where it is fast (CUDA; CPUs with AMX bf16)
    channels_last: bool = True
    fused: str = "auto"  # one VGG pass for a lockstep group's models: auto (on for CUDA), on, off
    seed: int = 42
    resume: bool = False
    overwrite: bool = False  # start afresh in a folder that holds a run (its run files are removed)
    checkpoint_every: int = 500
    log_every: int = 50
    tensorboard: bool = False
    workers: int | None = None  # data-loading processes; None: 0 on CPU, 4 on GPU
    progress: bool = True

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        for name, choices in (("arch", ARCHITECTURES.names()), ("optimizer", OPTIMIZERS.names()),
                              ("schedule", SCHEDULES.names()), ("norm", list(NORMS)),
                              ("style_reduction", ["mean", "sum"])):  # fmt: skip
            need(
                getattr(self, name) in choices,
                f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; choose one of: {', '.join(choices)}",
            )
        for name in ("batch_size", "epochs", "checkpoint_every", "log_every"):
            need(
                int(getattr(self, name)) >= 1,
                f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}",
            )
        need(self.steps is None or self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        need(
            self.image_size >= 16,
            f"--image-size must be >= 16 (the nets downsample by 4), got {self.image_size}",
        )
        need(
            self.style_size is None or self.style_size == 0 or self.style_size >= 16,
            f"--style-size must be >= 16 (or 0 for the original size), got {self.style_size}",
        )
        need(not (self.resume and self.overwrite),
             "pass --resume (continue the run in --out) or --overwrite (start it afresh), not both")  # fmt: skip
        need(self.workers is None or self.workers >= 0, f"--workers must be >= 0, got {self.workers}")
        if base_optimizer(self.optimizer) == "lbfgsb":
            problem = scipy_problem()
            need(problem is None, str(problem))
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive finite number, got {self.lr}")
        for name in ("content_weight", "style_weight", "tv_weight", "temporal_weight"):
            v = getattr(self, name)
            need(math.isfinite(v) and v >= 0, f"--{name.replace('_', '-')} must be finite and >= 0, got {v}")
        need(self.content_weight > 0 or self.style_weight > 0, "content and style weights cannot both be 0")
        need(self.fused in FUSED_MODES, f"unknown --fused {self.fused!r}; choose one of: {', '.join(FUSED_MODES)}")
        need(
            self.device == "auto" or self.device in ("cpu", "mps") or self.device.startswith("cuda"),
            f"unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps",
        )


def check_group(cfgs: Sequence[TrainConfig]) -> None:
    """Each config valid, all sharing GROUP_KEYS, each writing its own folder."""
    if not cfgs:
        raise ConfigError("a lockstep group needs at least one run")
    base = cfgs[0]
    for cfg in cfgs:
        cfg.validate()
        diff = [k for k in GROUP_KEYS if getattr(cfg, k) != getattr(base, k)]
        if diff:
            raise ConfigError(f"runs {base.out} and {cfg.out} cannot train in lockstep: they differ in "
                              + ", ".join(diff))  # fmt: skip
    outs = [str(c.out) for c in cfgs]
    if len(set(outs)) != len(outs):
        raise ConfigError("two runs of a lockstep group write to the same folder")
