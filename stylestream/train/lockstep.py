"""The trainer: style networks that share a batch size trained together, in lockstep, in one process.
`stylestream train` is a group of one (stylestream.train.loop); a sweep's optimizers and learning rates
are larger groups. Per batch there is one data-loader read and one VGG pass for the content targets,
shared by every network; the style Grams live in the one PerceptualLoss. Each network then takes its
own step (stylestream.train.step) from the same initial weights, on the same images in the same order,
so a group reproduces the separate runs of the same settings. With --fused (auto: on CUDA) the
networks' outputs share one VGG pass and one backward instead (stylestream.train.fused); runs that
cannot join it take their own. With --temporal-weight, one set of partner frames per batch
(stylestream.train.temporal_loss) serves every run that asks for the term.

A run whose loss becomes NaN/Inf ends as "diverged" and the others go on; so does one whose step
raises ("crashed"), unless keep_going is off (`train`: the error propagates). Each run writes a normal
run folder (stylestream.train.rundir) under the rules of stylestream.train.runstate.start_mode. Ctrl-C
checkpoints every unfinished run; a write the disk refuses stops the group with WriteError, every
unfinished run recorded as "failed". Under torchrun each network is wrapped in DistributedDataParallel
and only rank 0 writes."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stylestream import devices
from stylestream.models import build_model, save_model
from stylestream.models.io import WriteError
from stylestream.train.amp import amp_setup
from stylestream.train.config import ConfigError, TrainConfig, check_group
from stylestream.train.data import ImageFolderDataset, make_loader
from stylestream.train.distributed import local_device, mean_across_ranks, min_across_ranks, rank_world
from stylestream.train.fused import Member, MemberResult, fused_backward, fused_wanted
from stylestream.train.images import load_image
from stylestream.train.losses import PerceptualLoss
from stylestream.train.monitor import (
    bar_postfix,
    draw_pictures,
    log_samples,
    log_scalars,
    open_tensorboard,
    progress_bar,
    sample_batch,
)
from stylestream.train.optimizers import make_optimizer, needs_closure
from stylestream.train.rundir import RunDir
from stylestream.train.runstate import Position, RunState, batches, new_card, start_mode
from stylestream.train.schedules import make_schedule
from stylestream.train.step import apply_update, content_targets, train_step
from stylestream.train.temporal_loss import MovedBatch, describe, move_batch
from stylestream.train.vgg import load_vgg, weights_notice

log = logging.getLogger(__name__)


@dataclass
class Shared:
    """What the runs of a group share: device, training images, the loss (VGG + style Grams)."""

    device: torch.device
    dataset: ImageFolderDataset
    loss_fn: PerceptualLoss
    style_size: list[int]  # (H, W) of the style image in the loss

    @property
    def vgg_desc(self) -> str:
        return str(self.loss_fn.vgg.weights_desc)


def make_shared(cfg: TrainConfig, dataset: ImageFolderDataset | None = None) -> Shared:
    """Load the style image (at --style-size) and VGG-16 once, and say which weights and device (once per
    `train` or `sweep`); `dataset` defaults to every image under cfg.data."""
    cfg.validate()
    device = local_device(devices.resolve(cfg.device))
    dataset = dataset if dataset is not None else ImageFolderDataset(cfg.data, cfg.image_size)
    style = load_image(cfg.style, cfg.image_size if cfg.style_size is None else (cfg.style_size or None))
    vgg = load_vgg(cfg.vgg_weights, device=device, seed=cfg.seed)
    if rank_world()[0] == 0:
        weights_notice(vgg, f"; device: {devices.device_name(device)}")
    if cfg.channels_last:
        vgg = vgg.to(memory_format=torch.channels_last)
    loss_fn = PerceptualLoss(vgg, style, cfg.content_weight, cfg.style_weight, cfg.tv_weight, cfg.style_reduction)
    return Shared(device, dataset, loss_fn, list(style.shape[-2:]))


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


OnDone = Callable[[TrainConfig, Outcome, nn.Module | None], None]
OnStep = Callable[[TrainConfig, int, dict[str, float]], None]


def train_lockstep(
    cfgs: Sequence[TrainConfig],
    shared: Shared | None = None,
    *,
    on_done: OnDone | None = None,
    on_step: OnStep | None = None,
    extra_card: Callable[[TrainConfig], dict[str, Any]] | None = None,
    keep_going: bool = True,
    progress: bool = True,
    desc: str | None = None,
) -> list[Outcome]:
    """Train every config of `cfgs` together; they must share GROUP_KEYS. Runs with cfg.resume continue
    from their checkpoint, which must be at the same step for all runs of the group. `shared` defaults to
    make_shared(cfgs[0]), loaded once every folder is checked. `on_step(cfg, step, losses)` follows each
    step of each run; `on_done(cfg, outcome, model)` each run's end (model None unless it is "ok");
    `extra_card(cfg)` adds to a run's card. `desc` names the progress bar (a sweep's group)."""
    check_group(cfgs)
    rank, _ = rank_world()
    folders = [RunDir(cfg.out, writable=rank == 0) for cfg in cfgs]
    resumes = [start_mode(d, cfg) for d, cfg in zip(folders, cfgs)]  # every folder checked before any work
    group = _Group(cfgs[0], shared if shared is not None else make_shared(cfgs[0]), on_done, on_step, keep_going)
    try:
        group.start(cfgs, folders, resumes, extra_card)
        return group.train(progress, desc)
    except WriteError as exc:
        for r in group.runs:  # record why on every run the failure stopped
            r.record_failure(exc)
        raise


class _Group:
    """The runs of one train_lockstep call, from their setup to their ends."""

    def __init__(self, base: TrainConfig, shared: Shared, on_done: OnDone | None, on_step: OnStep | None,
                 keep_going: bool):  # fmt: skip
        self.base, self.shared, self.dev = base, shared, shared.device
        self.on_done, self.on_step, self.keep_going = on_done, on_step, keep_going
        self.rank, self.world = rank_world()
        workers = base.workers if base.workers is not None else (4 if self.dev.type == "cuda" else 0)
        self.loader = make_loader(shared.dataset, base.batch_size, base.seed, num_workers=workers,
                                  pin_memory=self.dev.type == "cuda", rank=self.rank, world_size=self.world)  # fmt: skip
        # DDP shards can differ by an image, and every rank must take the same number of steps
        self.total_steps = min_across_ranks(base.steps or base.epochs * self.loader.batches_per_epoch)
        self.runs: list[RunState] = []
        self.outcomes: list[Outcome] = []

    def start(self, cfgs: Sequence[TrainConfig], folders: list[RunDir], resumes: list[bool],
              extra_card: Callable[[TrainConfig], dict[str, Any]] | None) -> None:  # fmt: skip
        """Build (or resume) every run, then open its folder: cleared unless resumed, card "running"."""
        dev, shared = self.dev, self.shared
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(self.base.seed)  # one set of initial weights: those of any run with this seed
        random.seed(self.base.seed)
        init = build_model(self.base.arch, norm=self.base.norm)
        for cfg, folder, resume in zip(cfgs, folders, resumes):
            closure = needs_closure(cfg.optimizer)
            core = copy.deepcopy(init).to(dev)
            if cfg.channels_last and not closure:  # L-BFGS flattens gradients with .view(-1): contiguous only
                core = core.to(memory_format=torch.channels_last)
            model = core
            if self.world > 1:
                model = nn.parallel.DistributedDataParallel(core, device_ids=[dev.index] if dev.type == "cuda" else None)
            optimizer = make_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr)
            scheduler = make_schedule(cfg.schedule, optimizer, self.total_steps)
            amp_dtype, use_scaler = amp_setup(dev, cfg.amp, closure)
            scaler = torch.amp.GradScaler(dev.type) if use_scaler else None
            r = RunState(cfg, folder, core, model, optimizer, scheduler, scaler, amp_dtype, resumed=resume)
            if resume:
                r.resume()
            self.runs.append(r)
        if len({r.pos for r in self.runs}) != 1:
            steps = sorted({r.pos.step for r in self.runs})
            raise ConfigError(f"runs of one lockstep group resume from different steps: {steps}")

        amp = [str(r.amp_dtype).removeprefix("torch.") if r.amp_dtype else "off" for r in self.runs]
        if self.rank == 0:
            log.info("precision: %s", "float32" if amp[0] == "off" else f"{amp[0]} autocast")
        fused = self._choose_fused()
        for r, run_amp, run_fused in zip(self.runs, amp, fused):
            temporal = {"temporal": {"weight": r.cfg.temporal_weight, "pairs": describe()}} if r.cfg.temporal_weight else {}
            r.open_folder(new_card(
                r.cfg, vgg_weights=shared.vgg_desc, device=devices.device_name(dev), amp=run_amp,
                dataset={"folder": str(self.base.data), "images": len(shared.dataset),
                         "batches_per_epoch": self.loader.batches_per_epoch},
                style_image={"path": str(self.base.style), "size": shared.style_size},
                total_steps=self.total_steps, fused=run_fused, **temporal,
                **(extra_card(r.cfg) if extra_card else {}),
            ))  # fmt: skip
            if r.cfg.tensorboard and r.dir.writable:
                r.tb = open_tensorboard(r.dir)

    def _choose_fused(self) -> list[dict[str, Any]]:
        """Which runs take the fused pass (RunState.fused), and each run's card entry saying so or why not.
        The pass runs in one precision: that of the first run that can join it."""
        mode, dev = self.base.fused, self.dev
        wanted = fused_wanted(mode, dev)
        joinable = [r for r in self.runs if not needs_closure(r.cfg.optimizer)]
        precision = (joinable[0].amp_dtype, joinable[0].scaler is not None) if joinable else None
        why_not: list[str | None] = []
        for r in self.runs:
            if not wanted:
                why_not.append(f"--fused {mode}" + (f" (auto: on for CUDA only, this is {dev.type})" if mode == "auto" else ""))
            elif needs_closure(r.cfg.optimizer):
                why_not.append(f"{r.cfg.optimizer} re-evaluates its loss several times per step: its own pass")
            elif (r.amp_dtype, r.scaler is not None) != precision:
                why_not.append("its precision (AMP) differs from the fused pass's: its own pass")
            else:
                r.fused = True
                why_not.append(None)
        n = sum(r.fused for r in self.runs)
        if wanted and self.rank == 0:
            own = [f"{r.cfg.out} ({why})" for r, why in zip(self.runs, why_not) if why]
            log.info("fused lockstep pass: %d of %d runs%s", n, len(self.runs), "; own passes: " + ", ".join(own) if own else "")
        return [{"mode": mode, "used": r.fused, "fused_runs": n} | ({"why_not": why} if why else {})
                for r, why in zip(self.runs, why_not)]  # fmt: skip

    def train(self, progress: bool, desc: str | None) -> list[Outcome]:
        """Step every run on each batch until the last step or until none is left; then finish them."""
        base, dev, loss_fn = self.base, self.dev, self.shared.loss_fn
        start = self.runs[0].pos
        active = list(self.runs)
        for r in active:
            r.model.train()
        targets_amp = active[0].amp_dtype  # the same for all but L-BFGS on GPUs without bf16 (float32 there)
        bar = progress_bar(self.total_steps, start.step, progress and self.rank == 0, desc)
        mark = time.perf_counter()
        try:
            for pos, x in batches(self.loader, start, self.total_steps):
                x = x.to(dev, non_blocking=True)
                if base.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                targets = content_targets(loss_fn, x, targets_amp)
                moved = move_batch(x, base.seed, pos.step) if any(r.cfg.temporal_weight for r in active) else None
                shared_s = (time.perf_counter() - mark) / len(active)  # data, targets, files: split evenly
                fused = self._fused_pass([r for r in active if r.fused], x, targets, moved, pos)
                for r in list(active):
                    if not self._step(r, x, targets, moved, pos, shared_s, fused.get(id(r))):
                        active.remove(r)
                mark = time.perf_counter()
                if active:  # this step's losses (refresh=False: tqdm redraws at its own pace)
                    bar.set_postfix(bar_postfix(active), refresh=False)
                bar.update(1)
                if not active:
                    break
                if pos.step < self.total_steps and pos.step % base.checkpoint_every == 0:
                    for r in active:
                        r.save_checkpoint()
                        if r.tb is not None:
                            log_samples(r, self.shared.dataset, dev)
        except KeyboardInterrupt:
            for r in active:  # a clean stop: --resume continues each run from its last whole step
                if not r.done:
                    r.save_checkpoint()
                    r.card.update(status="interrupted", step=r.pos.step, losses=r.losses)
                    r.dir.write_card(r.card)
            raise
        finally:
            bar.close()
        for r in active:
            broken = self._unusable(r)
            if broken:
                log.warning("%s: %s", r.cfg.out, broken)
            self._finish(r, "diverged" if broken else "ok", broken)
        return self.outcomes

    @torch.no_grad()
    def _unusable(self, r: RunState) -> str | None:
        """Why a run whose logged losses all stayed finite still has no usable net (each loss is measured
        before its update, so the last update can blow the weights up unseen); None when it is usable."""
        tensors = [t for t in (*r.core.parameters(), *r.core.buffers()) if t.is_floating_point()]
        finite = all(bool(torch.isfinite(t).all()) for t in tensors)
        x = sample_batch(self.shared.dataset, 1)
        if finite and len(x):
            was_training = r.core.training
            r.core.eval()
            finite = bool(torch.isfinite(r.core(x.to(self.dev))).all())  # raw: the clamp would hide an Inf
            r.core.train(was_training)
        return None if finite else f"after its last step ({r.pos.step}) its output is NaN/Inf; try a lower lr"

    def _fused_pass(self, runs: list[RunState], x: torch.Tensor, targets: dict[str, torch.Tensor],
                    moved: MovedBatch | None, pos: Position) -> dict[int, tuple[MemberResult, float]]:  # fmt: skip
        """The fused forward/backward of `runs` on batch `x`: by id(run), its result and its share of the
        pass's seconds. If the pass fails (e.g. out of memory for the stacked batch) no model has changed:
        the runs fall back to their own passes from this batch on (unless keep_going is off)."""
        if not runs:
            return {}
        ts = time.perf_counter()
        members = [Member(r.model, r.optimizer, r.scaler, r.cfg.temporal_weight) for r in runs]
        try:
            results = fused_backward(members, self.shared.loss_fn, x, targets, amp_dtype=runs[0].amp_dtype,
                                     moved=moved)  # fmt: skip
        except Exception as exc:
            if not self.keep_going:
                raise
            why = f"the fused pass failed at step {pos.step} ({type(exc).__name__}: {exc})"[:300]
            log.warning("%s; %d runs take their own passes from now on", why, len(runs))
            for r in runs:
                r.fused = False
                r.card["fused"].update(used=False, why_not=why)
            return {}
        share = (time.perf_counter() - ts) / len(runs)
        return {id(r): (res, share) for r, res in zip(runs, results)}

    def _step(self, r: RunState, x: torch.Tensor, targets: dict[str, torch.Tensor], moved: MovedBatch | None,
              pos: Position, shared_s: float, fused: tuple[MemberResult, float] | None) -> bool:  # fmt: skip
        """One run's step on batch `x`, logged; False when the run ended (diverged or crashed). `fused`:
        its result and time share of the group's fused pass, which left its gradients ready (None: its
        own pass)."""
        ts = time.perf_counter()
        lr = r.optimizer.param_groups[0]["lr"]
        shared_s += fused[1] if fused is not None else 0.0
        try:
            if fused is None:
                terms = train_step(r.model, r.optimizer, self.shared.loss_fn, x, targets, amp_dtype=r.amp_dtype,
                                   scaler=r.scaler, closure=needs_closure(r.cfg.optimizer), moved=moved,
                                   temporal_weight=r.cfg.temporal_weight)  # fmt: skip
            else:
                terms = fused[0].terms
                if fused[0].backward:  # a non-finite loss took no backward: no step, it ends as diverged
                    apply_update(r.optimizer, r.scaler)
            terms = mean_across_ranks(terms)  # the whole batch's loss, the same on every rank
            r.scheduler.step()
        except Exception as exc:
            if not self.keep_going:
                raise
            log.exception("%s crashed at step %d", r.cfg.out, pos.step)  # one run's failure ends no other
            r.count(time.perf_counter() - ts + shared_s, images=0)
            self._finish(r, "crashed", f"{type(exc).__name__}: {exc}"[:500])
            return False
        dt = time.perf_counter() - ts + shared_s
        r.pos, r.losses, r.rate = pos, {k: float(v) for k, v in terms.items()}, x.shape[0] / dt
        r.count(dt, images=x.shape[0])
        r.seen += x.shape[0] * self.world
        r.dir.log_metrics({"step": pos.step, "epoch": pos.epoch, "images": r.seen,
                           **{k: f"{v:.6g}" for k, v in r.losses.items()},
                           "lr": f"{lr:.6g}", "images/s": f"{r.rate:.4g}", "seconds": f"{r.seconds:.3f}"})  # fmt: skip
        if r.tb is not None and (pos.step % r.cfg.log_every == 0 or pos.step == 1):
            log_scalars(r, lr)
        if not math.isfinite(r.losses["total"]):
            log.warning("%s: loss became %s at step %d: the run diverged (try a lower --lr)",
                        r.cfg.out, r.losses["total"], pos.step)  # fmt: skip
            self._finish(r, "diverged", f"loss became {r.losses['total']} at step {pos.step}; try a lower lr")
            return False
        if self.on_step is not None:
            self.on_step(r.cfg, pos.step, r.losses)
        return True

    def _finish(self, r: RunState, status: str, error: str | None = None) -> None:
        """End a run: its card, and for an "ok" run the final checkpoint, model.pt and pictures."""
        r.end_card(status, error)
        model = None
        if status == "ok":
            r.core.eval()
            r.save_checkpoint()
            if r.dir.writable:
                save_model(r.core, r.dir.model_path, card={k: v for k, v in r.card.items() if k != "versions"})
                r.card["model"] = r.dir.model_path.name
                draw_pictures(r.core, r.cfg, r.dir, self.shared.dataset, self.dev)
            model = r.core
        r.dir.write_card(r.card)
        if r.tb is not None:
            r.tb.close()
        r.done = True
        oc = Outcome(str(r.cfg.out), status, r.pos.step, self.total_steps, dict(r.losses), r.seconds, error, r.card)
        self.outcomes.append(oc)
        if self.on_done is not None:
            self.on_done(r.cfg, oc, model)


def persistent_bytes_per_run(model: nn.Module, optimizer: str) -> int:
    """Memory a run holds between its steps: weights, gradients and optimizer state (L-BFGS keeps up
    to 100 pairs of flat vectors). Unfused, activations are freed after each model's step, so they are
    needed once, not per run (fused: per run, see auto_parallel)."""
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
    by the largest per-run persistent state. A fused pass holds every run's activations until its one
    backward, so there each run needs its own."""
    model = build_model(cfg.arch, norm=cfg.norm)
    per_run = max(persistent_bytes_per_run(model, o) for o in optimizers)
    budget = available_bytes(device) // 2
    if fused_wanted(cfg.fused, device):
        per_run += activation_bytes
    else:
        budget -= activation_bytes
    return max(1, min(len(optimizers), budget // max(1, per_run)))
