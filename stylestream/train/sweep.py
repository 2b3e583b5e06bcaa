"""`stylestream sweep`: the optimizer study (Geng et al. 2020) as one command. One normal train run
per (optimizer, learning rate, batch size) under SWEEP_DIR/<optimizer>/lr<η>-bs<bs>/, trained in
lockstep groups that share a batch size, every run from the same initial weights on the same images
in the same order; then the report (stylestream.train.sweep_report).

The study's choices are the defaults: float32 (AMP only when asked for), the style image at its own
size (`stylestream sweep --style-size 0`), a budget in epochs (equal images seen, not equal steps).

Loss value per run: the mean total loss over the last 5% of its steps, and the eval loss on a fixed
held-out image set (--eval-data, or a seeded split of --data that no run trains on). The best setting
per optimizer is chosen by eval loss. A run whose network ends by putting out a constant image is
"collapsed" (it finished, but learnt nothing to rank). A diverged or crashed run is recorded and the
sweep goes on; with resume, finished runs (ok or diverged) are kept, and unfinished or crashed ones
continue from their checkpoint or start again; with overwrite, every run starts again from step 0.

Where the groups train is a Dispatch: this process, one group after another (LocalDispatch), or a Ray
cluster, one task per group (stylestream.train.sweep_ray). Planning, resume and the report are the same
for both; so is run_group, the code that trains a group and records its runs' ends."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import pickle
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from stylestream.card import read_card
from stylestream.models import inference_model
from stylestream.models.io import WriteError, atomic_write
from stylestream.train.config import ConfigError, TrainConfig
from stylestream.train.optimizers import OPTIMIZERS
from stylestream.train.rundir import RunDir
from stylestream.train.runstate import Position, library_versions
from stylestream.train.sweep_report import (
    RunResult,
    default_setting,
    read_metrics,
    run_name,
    tail_means,
    write_report,
)

if TYPE_CHECKING:
    from stylestream.train.data import ImageFolderDataset
    from stylestream.train.lockstep import OnStep, Outcome, Shared

log = logging.getLogger(__name__)

STUDY_OPTIMIZERS = ("adam", "adamax", "amsgrad", "nadam", "rmsprop", "adagrad", "adadelta", "rprop")
FINISHED = ("ok", "diverged")
GRID_SIDE = 256  # long side of the content image each run stylizes for grid.jpg
# an output whose every channel varies less than this (std, in grey levels) is a constant image
COLLAPSE_STD = 1.0
SWEEP_FILE = "sweep.json"
# settings that must match for --resume to continue the same sweep
RESUME_KEYS = ("style", "data", "arch", "norm", "schedule", "epochs", "steps", "image_size", "style_size",
               "content_weight", "style_weight", "tv_weight", "temporal_weight", "style_reduction", "vgg_weights",
               "amp", "seed")  # fmt: skip
# keys a sweep.json written before them lacks: their value then was TrainConfig's default
LATER_KEYS = ("temporal_weight",)


@dataclass
class SweepConfig:
    base: TrainConfig  # every `train` option; out is the sweep folder; optimizer/lr/batch_size per run;
    # amp None means float32 here (the study's precision)
    optimizers: list[str] = field(default_factory=lambda: list(STUDY_OPTIMIZERS))
    lrs: list[float] = field(default_factory=lambda: [1e-3])
    batch_sizes: list[int] = field(default_factory=lambda: [4])
    eval_data: str | None = None
    eval_images: int = 64
    content: str | None = None  # the image each run stylizes for grid.jpg; default: the first eval image
    parallel: int = 0  # runs per lockstep group; 0: as many as fit in memory
    resume: bool = False
    overwrite: bool = False  # start the sweep in --out afresh: every run from step 0
    ray: str | None = None  # train the groups as Ray tasks: "auto", "local" or a cluster address
    ray_cpus: int = 1  # CPUs each Ray task reserves (and trains with)

    def validate(self) -> None:
        if self.resume and self.overwrite:
            raise ConfigError(
                "pass --resume (continue the sweep in --out) or --overwrite (start it afresh), not both"
            )
        if not self.optimizers:
            raise ConfigError("--optimizers: give at least one optimizer")
        for name in self.optimizers:
            if name not in OPTIMIZERS:
                raise ConfigError(f"unknown optimizer {name!r}; choose from: {', '.join(OPTIMIZERS.names())}")
        for lists, what in ((self.optimizers, "--optimizers"), (self.lrs, "--lrs"),
                            (self.batch_sizes, "--batch-sizes")):  # fmt: skip
            if len(set(lists)) != len(lists):
                raise ConfigError(f"{what} lists a value twice: {lists}")
        if not self.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in self.lrs):
            raise ConfigError(f"--lrs must be positive finite numbers, got {self.lrs}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"--batch-sizes must be whole numbers >= 1, got {self.batch_sizes}")
        if self.eval_images < 1:
            raise ConfigError(f"--eval-images must be >= 1, got {self.eval_images}")
        if self.parallel < 0:
            raise ConfigError(f"--parallel must be >= 0 (0: as many as fit), got {self.parallel}")
        if self.ray_cpus < 1:
            raise ConfigError(f"--ray-cpus must be >= 1, got {self.ray_cpus}")
        if self.ray_cpus != 1 and not self.ray:
            raise ConfigError("--ray-cpus is for Ray tasks: add --ray (without it a sweep uses this machine's CPUs)")
        dataclasses.replace(self.base, optimizer=self.optimizers[0], lr=self.lrs[0],
                            batch_size=self.batch_sizes[0]).validate()  # fmt: skip

    def run_config(self, optimizer: str, lr: float, batch_size: int) -> TrainConfig:
        out = Path(self.base.out) / run_name(optimizer, lr, batch_size)
        return dataclasses.replace(self.base, optimizer=optimizer, lr=lr, batch_size=batch_size, out=str(out),
                                   amp=bool(self.base.amp), resume=False, overwrite=False, progress=False,
                                   tensorboard=False)  # fmt: skip

    def planned(self) -> list[TrainConfig]:
        return [self.run_config(o, lr, bs) for o in self.optimizers for lr in self.lrs for bs in self.batch_sizes]


@dataclass
class SweepResult:
    runs: list[RunResult]
    files: dict[str, Path]
    wall_s: float
    meta: dict[str, Any]


def is_constant_image(y: torch.Tensor) -> bool:
    """True when every channel of every image in `y` (N, 3, H, W; [0, 255]) is flat: std < COLLAPSE_STD."""
    return bool(y.float().flatten(2).std(dim=2).max() < COLLAPSE_STD)


def _read_card(run_dir: Path) -> dict[str, Any]:
    return read_card(run_dir / "card.json", missing_ok=True)  # a run still pending has none


def run_status(cfg: TrainConfig) -> str | None:
    """What the run's card says: ok, diverged, crashed, running, ... (None: no card yet)."""
    return _read_card(Path(cfg.out)).get("status")


def summarize_run(sweep_dir: Path, cfg: TrainConfig) -> RunResult:
    """A run's row of the report, from its card.json and metrics.csv (pending if it has neither)."""
    name = run_name(cfg.optimizer, cfg.lr, cfg.batch_size)
    run_dir = sweep_dir / name
    card = _read_card(run_dir)
    extra = card.get("sweep", {})
    status = card.get("status", "pending")
    if status not in FINISHED and status != "crashed":
        status = "pending"
    error = card.get("error")
    if status == "ok" and extra.get("collapsed"):
        status = "collapsed"
        colour = extra.get("output_colour")
        error = ("its output is a constant image" + (f", colour ({', '.join(map(str, colour))})" if colour else "")
                 + f" (largest channel std {extra.get('output_std', 0):.2g} grey levels)")  # fmt: skip
    cols = read_metrics(run_dir / "metrics.csv")
    tail = tail_means(cols)
    images = cols.get("images")
    ev = {k: _number(v) for k, v in (extra.get("eval") or {}).items()}  # a card keeps NaN/inf as text
    return RunResult(
        name=name, optimizer=cfg.optimizer, lr=cfg.lr, batch_size=cfg.batch_size, status=status,
        steps=int(card.get("step", 0) or 0), total_steps=int(card.get("total_steps", 0) or 0),
        images_seen=int(images[-1]) if images is not None and len(images) and math.isfinite(images[-1]) else 0,
        loss=tail.get("total"), content=tail.get("content"), style=tail.get("style"), tv=tail.get("tv"),
        eval_loss=ev.get("total"), eval_content=ev.get("content"), eval_style=ev.get("style"),
        train_time_s=card.get("wall_time_s"), error=error,
        stylized=f"{name}/{extra['stylized']}" if extra.get("stylized") else None,
    )  # fmt: skip


def _number(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _resume_point(cfg: TrainConfig) -> Position | None:
    run = RunDir(cfg.out)
    if not run.checkpoint_path.is_file():
        return None
    try:
        state = run.load_checkpoint()
        return Position(int(state["step"]), int(state["epoch"]), int(state["batch_in_epoch"]))
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        # a torn or foreign checkpoint: start that run again
        log.warning("%s: unreadable checkpoint (%s); the run starts again", run.checkpoint_path, exc)
        return None


def _settings(sc: SweepConfig) -> dict[str, Any]:
    return {k: getattr(sc.base, k) for k in RESUME_KEYS} | {"amp": bool(sc.base.amp),
        "eval_data": sc.eval_data, "eval_images": sc.eval_images, "content": sc.content}  # fmt: skip


def _check_sweep_dir(sc: SweepConfig) -> Path:
    sweep_dir = Path(sc.base.out)
    state = sweep_dir / SWEEP_FILE
    if sweep_dir.exists() and not sweep_dir.is_dir():
        raise ConfigError(f"--out {sweep_dir}: exists and is not a folder")
    if state.is_file():
        if sc.overwrite:
            return sweep_dir
        if not sc.resume:
            raise ConfigError(f"--out {sweep_dir} already holds a sweep; pass --resume to continue it, "
                              "--overwrite to start it afresh, or choose another --out")  # fmt: skip
        try:
            old = json.loads(state.read_text()).get("settings", {})
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{state}: unreadable sweep state ({exc}); start a new sweep in another --out") from None
        new = json.loads(json.dumps(_settings(sc)))
        old |= {k: TrainConfig.__dataclass_fields__[k].default for k in LATER_KEYS if k not in old}
        changed = [k for k in new if old.get(k) != new[k]]
        if changed:
            raise ConfigError("--resume: these settings differ from the sweep's: "
                              + ", ".join(f"{k} ({old.get(k)!r} there, {new[k]!r} now)" for k in changed))  # fmt: skip
    elif sc.resume and not sweep_dir.is_dir():
        raise ConfigError(f"--resume: no sweep at {sweep_dir}; start without --resume")
    elif sweep_dir.is_dir() and any(sweep_dir.iterdir()) and not sc.resume:
        raise ConfigError(f"--out {sweep_dir} is not empty; choose a new folder for the sweep")
    return sweep_dir


def precision_text(amp: bool, card_amp: str | None) -> str:
    """How the runs computed: float32, or the autocast dtype the cards recorded (the loss stays float32)."""
    if not amp or card_amp in (None, "off"):
        return "float32" if not amp else "float32 (AMP asked for, not available on this device)"
    return f"{card_amp} autocast (loss arithmetic in float32)"


@dataclass
class SweepContext:
    """What every lockstep group of a sweep shares: the training and eval images, VGG with the style Grams
    (Shared) and the image each run stylizes. Built once per process: the sweep's, or each Ray worker's."""

    base: TrainConfig  # amp resolved: None is the study's float32
    shared: Shared
    train_ds: ImageFolderDataset
    eval_ds: ImageFolderDataset
    eval_source: str
    content_path: Path
    content: torch.Tensor


def sweep_context(sc: SweepConfig, device: str | None = None) -> SweepContext:
    """Load the sweep's images, style image and VGG; `device` overrides --device (a Ray driver, which
    trains nothing, loads them on its CPU for the report)."""
    from stylestream.train.evaluate import train_eval_datasets
    from stylestream.train.images import load_image
    from stylestream.train.lockstep import make_shared

    base = dataclasses.replace(sc.base, amp=bool(sc.base.amp))  # None: the study's float32
    train_ds, eval_ds, eval_source = train_eval_datasets(base.data, base.image_size, base.seed, sc.eval_data,
                                                         sc.eval_images)  # fmt: skip
    shared = make_shared(dataclasses.replace(base, optimizer=sc.optimizers[0], device=device or base.device),
                         dataset=train_ds)  # fmt: skip
    content_path = Path(sc.content) if sc.content else eval_ds.files[0]
    content = load_image(content_path, max(GRID_SIDE, base.image_size))
    return SweepContext(base, shared, train_ds, eval_ds, eval_source, content_path, content)


@dataclass
class Group:
    """Runs that train together in one lockstep group: one batch size, all from the same step."""

    batch_size: int
    point: Position
    cfgs: list[TrainConfig]

    @property
    def desc(self) -> str:
        return f"bs={self.batch_size} x{len(self.cfgs)}"

    @property
    def names(self) -> str:
        return ", ".join(f"{c.optimizer}@{c.lr:g}" for c in self.cfgs)


Notify = Callable[[TrainConfig, str], None]  # a run ended, with this status


class Dispatch(Protocol):
    """Where the groups of a sweep train: this process (LocalDispatch) or a Ray cluster (sweep_ray)."""

    def group_size(self, batch_size: int, optimizers: list[str]) -> int:
        """How many runs of this batch size fit one group (--parallel 0)."""
        ...

    def run(self, groups: list[Group], progress: SweepProgress) -> None:
        """Train every group; a group that fails leaves its runs crashed and the others go on."""
        ...

    def describe(self) -> str:
        """Where the runs trained, for report.json."""
        ...


class SweepProgress:
    """The sweep's bar over finished runs (ok, diverged or crashed), its postfix the last run that ended
    and what the dispatch says (a Ray sweep: the groups left and running)."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=done, unit="run", desc="sweep", disable=not enabled,
                        dynamic_ncols=True)  # fmt: skip
        self.last = self.state = ""

    def done(self, cfg: TrainConfig, status: str) -> None:
        self.bar.update(1)
        self.last = f"last: {run_name(cfg.optimizer, cfg.lr, cfg.batch_size)} {status}"
        self._show()

    def note(self, text: str) -> None:
        if text != self.state:
            self.state = text
            self._show()

    def _show(self) -> None:
        self.bar.set_postfix_str("; ".join(t for t in (self.last, self.state) if t))

    def close(self) -> None:
        self.bar.close()


def group_size(base: TrainConfig, batch_size: int, optimizers: list[str], device: torch.device) -> int:
    """How many runs fit one lockstep group in this process's memory on `device`."""
    from stylestream.train.lockstep import auto_parallel

    return auto_parallel(dataclasses.replace(base, batch_size=batch_size), optimizers, device,
                         activation_bytes=batch_size * 3 * base.image_size**2 * 4 * 400)  # generous: net + VGG, with grads  # fmt: skip


def plan_groups(sc: SweepConfig, planned: list[TrainConfig], group_size: Callable[[int, list[str]], int],
                ) -> tuple[list[Group], list[int]]:  # fmt: skip
    """The lockstep groups of the runs left to train, and the group size used per batch size. Without
    resume every run starts afresh; with it, finished runs (ok, diverged) are skipped and the others
    continue from their checkpoints, grouped by the step they resume from."""
    todo: dict[tuple[int, Position], list[TrainConfig]] = defaultdict(list)
    for cfg in planned:
        status = _read_card(Path(cfg.out)).get("status")
        if sc.resume and status in FINISHED:
            continue
        point = _resume_point(cfg) if sc.resume else None
        # no usable checkpoint on resume (killed before the first, or torn): that run starts again
        run_cfg = dataclasses.replace(cfg, resume=point is not None,
                                      overwrite=point is None and (sc.resume or sc.overwrite))  # fmt: skip
        todo[(cfg.batch_size, point or Position())].append(run_cfg)
    groups: list[Group] = []
    sizes: list[int] = []
    for (bs, point), cfgs in sorted(todo.items(), key=lambda kv: kv[0]):
        k = sc.parallel or group_size(bs, [c.optimizer for c in cfgs])
        sizes.append(k)
        groups += [Group(bs, point, cfgs[i:i + k]) for i in range(0, len(cfgs), k)]
    return groups, sizes


def mark_crashed(cfgs: list[TrainConfig], error: str, notify: Notify) -> None:
    """Record `error` on the card of every run of `cfgs` that had not ended (a whole group failed)."""
    for c in cfgs:
        card = _read_card(Path(c.out))
        if card.get("status") not in ("ok", "diverged", "crashed"):
            card.update(status="crashed", error=error[:500])
            folder = RunDir(c.out)
            folder.prepare_folder()  # a group can fail before its runs' folders exist (a Ray task at its start)
            folder.write_card(card)
            notify(c, "crashed")


def run_group(ctx: SweepContext, group: Group, notify: Notify, *, progress: bool,
              on_step: OnStep | None = None) -> None:  # fmt: skip
    """Train one group; as each run ends, its eval loss, stylized content image and whether that is a
    constant image go into its card. A failure of the whole group (e.g. out of memory) marks its runs
    crashed and returns; a bad setting, a refused write or Ctrl-C stops the sweep. The same code runs
    in the sweep's process and in a Ray task."""
    from stylestream.train.evaluate import evaluate
    from stylestream.train.images import save_image
    from stylestream.train.lockstep import train_lockstep

    shared = ctx.shared

    def on_done(cfg: TrainConfig, oc: Outcome, model: nn.Module | None) -> None:
        extra: dict[str, Any] = {"lockstep_group": oc.card.get("lockstep", {}).get("group_size")}
        card, status = dict(oc.card), oc.status
        if model is not None:
            try:
                extra["eval"] = evaluate(model, shared.loss_fn, ctx.eval_ds, shared.device,
                                         batch_size=max(1, min(8, cfg.batch_size * 2)))  # fmt: skip
                with torch.no_grad():
                    y = inference_model(model)(ctx.content.to(shared.device)).float().cpu()
                if not (math.isfinite(extra["eval"]["total"]) and bool(torch.isfinite(y).all())):
                    # its training losses were finite, its net is not usable: the last updates blew it up
                    status = "diverged"
                    card.update(status=status, error=f"after its last step ({card.get('step')}) its output is "
                                                     "NaN/Inf; try a lower lr")  # fmt: skip
                    log.warning("%s: %s", cfg.out, card["error"])
                    RunDir(cfg.out).write_card({**card, "sweep": extra})
                    notify(cfg, status)
                    return
                save_image(y, Path(cfg.out) / "stylized.jpg")
                extra["stylized"] = "stylized.jpg"
                extra["output_std"] = float(y.flatten(2).std(dim=2).max())
                extra["output_colour"] = [round(float(v)) for v in y.mean(dim=(0, 2, 3))]
                extra["collapsed"] = is_constant_image(y)
                if extra["collapsed"]:
                    log.warning("%s: the network puts out a constant image: collapsed", cfg.out)
            except Exception as exc:
                log.exception("%s: evaluation failed", cfg.out)
                extra["eval_error"] = f"{type(exc).__name__}: {exc}"
        RunDir(cfg.out).write_card({**card, "sweep": extra})
        notify(cfg, status)

    log.info("lockstep group bs=%d from step %d: %s", group.batch_size, group.point.step, group.names)
    lockstep = {"lockstep": {"group_size": len(group.cfgs), "runs": [str(c.out) for c in group.cfgs]}}
    try:
        train_lockstep(group.cfgs, shared, on_done=on_done, on_step=on_step,
                       extra_card=lambda _: lockstep, progress=progress, desc=group.desc)  # fmt: skip
    except (ConfigError, WriteError, KeyboardInterrupt):  # the disk fails every group alike
        raise
    except Exception as exc:  # e.g. out of memory for the whole group: record, go on
        log.exception("lockstep group bs=%d (%s) failed", group.batch_size, group.names)
        mark_crashed(group.cfgs, f"group failed: {type(exc).__name__}: {exc}", notify)


class LocalDispatch:
    """Every group in this process, one after another (the default)."""

    def __init__(self, ctx: SweepContext) -> None:
        self.ctx = ctx

    def group_size(self, batch_size: int, optimizers: list[str]) -> int:
        return group_size(self.ctx.base, batch_size, optimizers, self.ctx.shared.device)

    def run(self, groups: list[Group], progress: SweepProgress) -> None:
        for group in groups:
            run_group(self.ctx, group, progress.done, progress=self.ctx.base.progress)

    def describe(self) -> str:
        return "this process"


def run_sweep(sc: SweepConfig) -> SweepResult:
    """Train every planned run (skipping finished ones on resume), here or on a Ray cluster (sc.ray), then
    write the report."""
    from PIL import Image

    from stylestream.train.images import tensor_to_pil

    sc.validate()
    sweep_dir = _check_sweep_dir(sc)
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        ray = None
        if sc.ray:
            from stylestream.train.sweep_ray import RayDispatch

            ray = RayDispatch(sc)
            stack.enter_context(ray)  # connected first: a wrong address fails before VGG and the images load
        # a Ray driver trains nothing: it loads VGG and the images on its CPU, for the report
        ctx = sweep_context(sc, device="cpu" if ray else None)
        dispatch: Dispatch = ray or LocalDispatch(ctx)
        base = ctx.base
        state = json.dumps({
            "settings": _settings(sc), "optimizers": sc.optimizers, "lrs": sc.lrs, "batch_sizes": sc.batch_sizes,
            "eval_files": [str(p) for p in ctx.eval_ds.files], "train_images": len(ctx.train_ds),
        }, indent=2, default=str)  # fmt: skip
        atomic_write(sweep_dir / SWEEP_FILE, lambda tmp: Path(tmp).write_text(state))

        planned = sc.planned()
        groups, sizes = plan_groups(sc, planned, dispatch.group_size)
        left = sum(len(g.cfgs) for g in groups)
        progress = SweepProgress(len(planned), len(planned) - left, base.progress)
        try:
            dispatch.run(groups, progress)
        finally:
            progress.close()
        where = dispatch.describe()

    runs = [summarize_run(sweep_dir, cfg) for cfg in planned]
    started = [card for card in (_read_card(Path(c.out)) for c in planned) if card.get("total_steps")]
    first = started[0] if started else {}
    devices = sorted({card["device"] for card in started if card.get("device")})  # a Ray cluster's can differ
    meta = {
        "style": base.style, "data": base.data, "epochs": None if base.steps else base.epochs,
        "steps": base.steps, "image_size": base.image_size, "style_size": base.style_size,
        "style_image_size": "x".join(str(v) for v in reversed(ctx.shared.style_size)), "arch": base.arch,
        "device": ", ".join(devices) or base.device, "devices": devices,
        "precision": precision_text(base.amp, first.get("amp")),
        "versions": first.get("versions") or library_versions(), "vgg_weights": ctx.shared.vgg_desc,
        "content_weight": base.content_weight, "style_weight": base.style_weight, "tv_weight": base.tv_weight,
        "seed": base.seed, "train_images": len(ctx.train_ds), "eval_images": len(ctx.eval_ds),
        "eval_source": ctx.eval_source, "lockstep": True, "parallel": max(sizes) if sizes else None,
        "trained_on": where, "optimizers": sc.optimizers, "lrs": sc.lrs, "batch_sizes": sc.batch_sizes,
        "default_setting": default_setting(sc.lrs, sc.batch_sizes),
        "content_image": str(ctx.content_path), "sweep_wall_s": round(time.perf_counter() - t0, 2),
    }  # fmt: skip
    with Image.open(base.style) as style_img:
        files = write_report(sweep_dir, runs, meta, content=tensor_to_pil(ctx.content),
                             style=style_img.convert("RGB"))  # fmt: skip
    return SweepResult(runs, files, time.perf_counter() - t0, meta)
