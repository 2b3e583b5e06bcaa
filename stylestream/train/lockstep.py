"""Lockstep training: several style networks that share a batch size (a sweep's optimizers and
learning rates) trained together in one process. Per batch there is one data-loader read and one VGG
pass for the content targets, shared by every model; the style Grams live in the one PerceptualLoss.
Each model then takes exactly the step `stylestream train` would take (stylestream.train.step), from
the same initial weights, on the same images in the same order, so a lockstep run reproduces the
sequential run of the same settings.

A run whose loss becomes NaN/Inf (diverged) or whose step raises (crashed) is finished on the spot and
the others go on. Each run writes a normal train run directory (model.pt, metrics.csv, card.json,
checkpoint.pt, losses.png) that `stylestream train --resume` understands, and its folder follows the
rules of `train` (stylestream.train.loop.start_mode): --resume without a checkpoint starts over, a used
folder needs --resume or --overwrite. A write the disk refuses stops the group with WriteError, every
unfinished run recorded as "failed"."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from stylestream import devices
from stylestream.models import build_model, save_model
from stylestream.models.io import WriteError
from stylestream.train.data import DataError, ImageFolderDataset, make_loader
from stylestream.train.loop import (
    RESUME_KEYS,
    ConfigError,
    TrainConfig,
    amp_setup,
    build_loss,
    library_versions,
    start_mode,
)
from stylestream.train.losses import PerceptualLoss
from stylestream.train.optimizers import make_optimizer, needs_closure
from stylestream.train.rundir import RunDir
from stylestream.train.schedules import make_schedule
from stylestream.train.step import content_targets, train_step

log = logging.getLogger(__name__)

# settings every run of one lockstep group must share (they may differ in optimizer, lr, schedule, out)
SHARED_KEYS = ("style", "data", "arch", "norm", "batch_size", "epochs", "steps", "image_size", "style_size",
               "content_weight", "style_weight", "tv_weight", "style_reduction", "vgg_weights", "device",
               "amp", "channels_last", "seed", "workers")  # fmt: skip


@dataclass
class Shared:
    """What the runs of a group share: device, training images, the loss (VGG + style Grams)."""

    device: torch.device
    dataset: ImageFolderDataset
    loss_fn: PerceptualLoss

    @property
    def vgg_desc(self) -> str:
        return str(self.loss_fn.vgg.weights_desc)


def make_shared(cfg: TrainConfig, dataset: ImageFolderDataset | None = None) -> Shared:
    """Load the style image and VGG once; `dataset` defaults to every image under cfg.data."""
    cfg.validate()
    device = devices.resolve(cfg.device)
    dataset = dataset if dataset is not None else ImageFolderDataset(cfg.data, cfg.image_size)
    _, loss_fn = build_loss(cfg, device)
    return Shared(device, dataset, loss_fn)


@dataclass
class Outcome:
    """How one run of a group ended."""

    out: str
    status: str  # "ok" | "diverged" | "crashed"
    step: int
    total_steps: int
    losses: dict[str, float]
    seconds: float  # this run's compute plus its share of the shared work, resumed sessions included
    error: str | None = None
    card: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    cfg: TrainConfig
    run: RunDir
    core: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    closure: bool
    amp_dtype: torch.dtype | None
    card: dict[str, Any]
    resume: bool = False
    done: bool = False  # finished and its card written
    seconds: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)


def check_compatible(cfgs: Sequence[TrainConfig]) -> None:
    if not cfgs:
        raise ValueError("a lockstep group needs at least one run")
    base = cfgs[0]
    for cfg in cfgs[1:]:
        diff = [k for k in SHARED_KEYS if getattr(cfg, k) != getattr(base, k)]
        if diff:
            raise ConfigError(f"runs {base.out} and {cfg.out} cannot train in lockstep: they differ in "
                              + ", ".join(diff))  # fmt: skip
    outs = [str(c.out) for c in cfgs]
    if len(set(outs)) != len(outs):
        raise ConfigError("two runs of a lockstep group write to the same folder")


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "python": random.getstate()}


def train_lockstep(
    cfgs: Sequence[TrainConfig],
    shared: Shared,
    *,
    on_done: Callable[[TrainConfig, Outcome, nn.Module | None], None] | None = None,
    extra_card: Callable[[TrainConfig], dict[str, Any]] | None = None,
    progress: bool = True,
    desc: str = "lockstep",
) -> list[Outcome]:
    """Train every config of `cfgs` together; they must share SHARED_KEYS. Runs with cfg.resume
    continue from their checkpoint, which must be at the same step for all runs of the group.
    `on_done(cfg, outcome, model)` is called as soon as a run ends (model None unless it is "ok")."""
    runs: list[_Run] = []
    try:
        return _train_lockstep(cfgs, shared, runs, on_done, extra_card, progress, desc)
    except WriteError as exc:
        for r in runs:  # record why on every run the failure stopped, where card.json can still be written
            if not r.done and r.card:
                r.card.update(status="failed", error=exc.line("--out"),
                              ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
                try:
                    r.run.write_card(r.card)
                except WriteError:
                    pass
        raise


def _train_lockstep(cfgs: Sequence[TrainConfig], shared: Shared, runs: list[_Run],
                    on_done: Callable[[TrainConfig, Outcome, nn.Module | None], None] | None,
                    extra_card: Callable[[TrainConfig], dict[str, Any]] | None, progress: bool,
                    desc: str) -> list[Outcome]:  # fmt: skip
    """The body of `train_lockstep`; appends each run to `runs` so a failure can be recorded in its card."""
    from tqdm.auto import tqdm

    check_compatible(cfgs)
    resumes = [start_mode(RunDir(cfg.out), cfg) for cfg in cfgs]  # every folder checked before any work
    base, dev, loss_fn = cfgs[0], shared.device, shared.loss_fn
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    # the same initial weights as `stylestream train --seed S` builds, for every run
    torch.manual_seed(base.seed)
    random.seed(base.seed)
    init_state = build_model(base.arch, norm=base.norm).state_dict()
    workers = base.workers if base.workers is not None else (4 if dev.type == "cuda" else 0)
    loader = make_loader(shared.dataset, base.batch_size, base.seed, num_workers=workers,
                         pin_memory=dev.type == "cuda")  # fmt: skip
    total_steps = base.steps or base.epochs * loader.batches_per_epoch
    targets_amp, _ = amp_setup(dev, base.amp, False)

    positions = set()
    for cfg, resume in zip(cfgs, resumes):
        closure = needs_closure(cfg.optimizer)
        core = build_model(cfg.arch, norm=cfg.norm)
        core.load_state_dict(init_state)
        core = core.to(dev)
        if cfg.channels_last and not closure:  # L-BFGS needs contiguous gradients
            core = core.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(cfg.optimizer, core.parameters(), lr=cfg.lr)
        scheduler = make_schedule(cfg.schedule, optimizer, total_steps)
        amp_dtype, use_scaler = amp_setup(dev, cfg.amp, closure)
        scaler = torch.amp.GradScaler(dev.type) if use_scaler else None
        run = RunDir(cfg.out)
        r = _Run(cfg, run, core, optimizer, scheduler, scaler, closure, amp_dtype, card={}, resume=resume)
        position = (0, 0, 0)
        if resume:
            ck = run.load_checkpoint()
            changed = [k for k in RESUME_KEYS if ck["config"].get(k) != getattr(cfg, k)]
            if changed:
                raise ConfigError(f"{run.path}: cannot resume, settings differ from the checkpoint's: "
                                  + ", ".join(changed))  # fmt: skip
            core.load_state_dict(ck["model"])
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            position = (ck["step"], ck["epoch"], ck["batch_in_epoch"])
            r.seconds = float(ck["seconds"])
        positions.add(position)
        runs.append(r)
    if len(positions) != 1:
        raise ConfigError(f"runs of one lockstep group resume from different steps: {sorted(positions)}")
    step, epoch, batch_in_epoch = positions.pop()

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for r in runs:
        r.card = {
            "kind": "stylestream-train", "status": "running", "settings": asdict(r.cfg),
            "vgg_weights": shared.vgg_desc, "device": devices.device_name(dev),
            "amp": str(r.amp_dtype).removeprefix("torch.") if r.amp_dtype else "off",
            "dataset": {"folder": str(r.cfg.data), "images": len(shared.dataset),
                        "batches_per_epoch": loader.batches_per_epoch},
            "total_steps": total_steps, "started": started, "versions": library_versions(),
            "lockstep": {"group_size": len(runs), "runs": [str(c.out) for c in cfgs]},
            **(extra_card(r.cfg) if extra_card else {}),
        }  # fmt: skip
        if not r.resume:
            r.run.clear()  # what an earlier run left (--overwrite, or --resume before any checkpoint)
        r.run.prepare_folder()
        r.run.start_metrics(keep_through_step=step if r.resume else None)
        r.run.write_card(r.card)

    def checkpoint(r: _Run) -> None:
        r.run.save_checkpoint({
            "config": asdict(r.cfg), "model": r.core.state_dict(), "optimizer": r.optimizer.state_dict(),
            "scheduler": r.scheduler.state_dict(), "scaler": r.scaler.state_dict() if r.scaler else None,
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "seconds": r.seconds,
            "rng": _rng_state(),
        })  # fmt: skip

    outcomes: list[Outcome] = []

    def finish(r: _Run, status: str, error: str | None = None) -> None:
        r.card.update(status=status, step=step, losses=r.losses, wall_time_s=round(r.seconds, 3),
                      ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
        if error:
            r.card["error"] = error
        model = None
        if status == "ok":
            r.core.eval()
            checkpoint(r)
            save_model(r.core, r.run.model_path, card={k: v for k, v in r.card.items() if k != "versions"})
            r.card["model"] = r.run.model_path.name
            _losses_png(r)
            model = r.core
        r.run.write_card(r.card)
        r.done = True
        oc = Outcome(str(r.cfg.out), status, step, total_steps, dict(r.losses), r.seconds, error, r.card)
        outcomes.append(oc)
        if on_done is not None:
            on_done(r.cfg, oc, model)

    active = list(runs)
    bar = tqdm(total=total_steps, initial=step, unit="step", desc=desc, disable=not progress, leave=False,
               dynamic_ncols=True)  # fmt: skip
    for r in active:
        r.core.train()
    try:
        while step < total_steps and active:
            yielded = False
            t_shared = time.perf_counter()
            for i, x in loader.epoch_batches(epoch, batch_in_epoch):
                yielded = True
                x = x.to(dev, non_blocking=True)
                if base.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                targets = content_targets(loss_fn, x, targets_amp)
                shared_s = (time.perf_counter() - t_shared) / len(active)  # data + targets, split evenly
                step, batch_in_epoch = step + 1, i + 1
                for r in list(active):
                    ts = time.perf_counter()
                    lr = r.optimizer.param_groups[0]["lr"]
                    try:
                        terms = train_step(r.core, r.optimizer, loss_fn, x, targets, amp_dtype=r.amp_dtype,
                                           scaler=r.scaler, closure=r.closure)  # fmt: skip
                        r.scheduler.step()
                        r.losses = {k: float(v) for k, v in terms.items()}
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:  # one run's failure must not end the others
                        log.exception("%s crashed at step %d", r.cfg.out, step)
                        r.seconds += time.perf_counter() - ts + shared_s
                        active.remove(r)
                        finish(r, "crashed", f"{type(exc).__name__}: {exc}"[:500])
                        continue
                    dt = time.perf_counter() - ts + shared_s
                    r.seconds += dt
                    r.run.log_metrics({"step": step, "epoch": epoch,
                                       **{k: f"{v:.6g}" for k, v in r.losses.items()},
                                       "lr": f"{lr:.6g}", "images/s": f"{x.shape[0] / dt:.4g}",
                                       "seconds": f"{r.seconds:.3f}"})  # fmt: skip
                    if not math.isfinite(r.losses["total"]):
                        log.warning("%s: loss became %s at step %d (diverged)", r.cfg.out, r.losses["total"], step)
                        active.remove(r)
                        finish(r, "diverged", f"loss became {r.losses['total']} at step {step}; try a lower lr")
                bar.update(1)
                if active:
                    bar.set_postfix(runs=len(active), best=f"{min(r.losses['total'] for r in active):.4g}")
                if step >= total_steps or not active:
                    break
                if step % base.checkpoint_every == 0:
                    for r in active:
                        checkpoint(r)
                t_shared = time.perf_counter()
            else:  # the epoch ran out
                if not yielded and batch_in_epoch == 0:
                    raise DataError(f"{base.data}: none of the {len(shared.dataset)} image files could be read")
                epoch, batch_in_epoch = epoch + 1, 0
        if batch_in_epoch >= loader.batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
    except KeyboardInterrupt:
        for r in active:  # a clean stop: --resume continues from this step
            checkpoint(r)
            r.card.update(status="interrupted", step=step, losses=r.losses)
            r.run.write_card(r.card)
        raise
    finally:
        bar.close()
    for r in active:
        finish(r, "ok")
    return outcomes


def _losses_png(r: _Run) -> None:
    from stylestream.train.run_pictures import plot_losses

    try:
        plot_losses(r.run.read_metrics(), r.run.path / "losses.png", title=f"{r.cfg.optimizer} lr={r.cfg.lr:g}")
    except Exception:  # a picture must never fail a finished run
        log.exception("could not draw %s/losses.png", r.run.path)


def persistent_bytes_per_run(model: nn.Module, optimizer: str) -> int:
    """Memory a run holds between its steps: weights, gradients and optimizer state (L-BFGS keeps up
    to 100 pairs of flat vectors). Activations are freed after each model's step, so they are needed
    once, not per run."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    return n * (200 if needs_closure(optimizer) else 4)


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # unknown: assume 4 GiB


def auto_parallel(cfg: TrainConfig, optimizers: Sequence[str], device: torch.device,
                  activation_bytes: int) -> int:  # fmt: skip
    """How many runs fit in one process: half the free memory, less one step's activations, divided
    by the largest per-run persistent state."""
    model = build_model(cfg.arch, norm=cfg.norm)
    per_run = max(persistent_bytes_per_run(model, o) for o in optimizers)
    budget = available_bytes(device) // 2 - activation_bytes
    return max(1, min(len(optimizers), budget // max(1, per_run)))
