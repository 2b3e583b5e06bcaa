"""The training loop behind `stylestream train`.

Pieces are separable for sweeps and distributed runs: `prepare()` validates and loads everything
before any work starts, `train_step` (stylestream.train.step) does one update, `RunDir` writes the
files, and only rank 0 writes when torch.distributed is initialised."""

from __future__ import annotations

import logging
import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn

from stylestream import devices
from stylestream.models import ARCHITECTURES, build_model, save_model
from stylestream.models.io import WriteError
from stylestream.models.layers import NORMS
from stylestream.train.data import DataError, ImageFolderDataset, make_loader
from stylestream.train.distributed import init_from_env, local_device, mean_across_ranks, min_across_ranks
from stylestream.train.images import load_image
from stylestream.train.losses import PerceptualLoss
from stylestream.train.optimizers import OPTIMIZERS, make_optimizer, needs_closure
from stylestream.train.rundir import RunDir
from stylestream.train.schedules import SCHEDULES, make_schedule
from stylestream.train.step import content_targets, train_step
from stylestream.train.vgg import load_vgg

log = logging.getLogger(__name__)

EXIT_DIVERGED = 3
# settings that must match for --resume to continue the same run
RESUME_KEYS = ("style", "data", "arch", "norm", "optimizer", "lr", "schedule", "batch_size", "epochs", "steps",
               "image_size", "style_size", "content_weight", "style_weight", "tv_weight", "style_reduction",
               "vgg_weights", "seed")  # fmt: skip


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
    style_reduction: str = "mean"
    vgg_weights: str = "imagenet"
    device: str = "auto"
    amp: bool | None = None  # None: on where it is fast (CUDA; CPUs with AMX bf16)
    channels_last: bool = True
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
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive finite number, got {self.lr}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            v = getattr(self, name)
            need(math.isfinite(v) and v >= 0, f"--{name.replace('_', '-')} must be finite and >= 0, got {v}")
        need(self.content_weight > 0 or self.style_weight > 0, "content and style weights cannot both be 0")
        need(
            self.device == "auto" or self.device in ("cpu", "mps") or self.device.startswith("cuda"),
            f"unknown device {self.device!r}; use auto, cpu, cuda, cuda:N or mps",
        )


@dataclass
class TrainResult:
    status: str  # "ok" | "diverged" (a disk that refuses a write raises WriteError; card.json says "failed")
    step: int
    losses: dict[str, float]
    wall_time_s: float
    images_per_s: float
    run_dir: str
    card: dict[str, Any] = field(default_factory=dict)


def cpu_has_fast_bf16() -> bool:
    """AMX tiles make bf16 convolutions several times faster than float32 on CPU; without them bf16
    is emulated and slower, so AMP stays off by default."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def amp_setup(dev: torch.device, amp: bool | None, closure: bool) -> tuple[torch.dtype | None, bool]:
    """Returns (autocast dtype or None, whether a GradScaler is needed)."""
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


def dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    from stylestream import __version__

    return {"stylestream": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__}  # fmt: skip


@dataclass
class Prepared:
    """Everything loaded and checked before the first step."""

    cfg: TrainConfig
    device: torch.device
    run: RunDir
    dataset: ImageFolderDataset
    style_image: torch.Tensor
    loss_fn: PerceptualLoss
    amp_dtype: torch.dtype | None
    use_scaler: bool
    rank: int = 0
    world_size: int = 1
    resume: bool = False  # continue from the checkpoint (False: start at step 0, clearing an earlier run)
    card: dict[str, Any] = field(default_factory=dict)  # the run card, once training starts


def start_mode(run: RunDir, cfg: TrainConfig) -> bool:
    """How a run folder is used, the same for `train` and lockstep runs: True to continue from its
    checkpoint, False to start at step 0 (the caller clears what an earlier run left). Raises
    ConfigError when that would lose a run nobody asked to replace."""
    if run.path.exists() and not run.path.is_dir():
        raise ConfigError(f"--out {run.path}: exists and is not a folder")
    if cfg.resume:
        if run.checkpoint_path.is_file():
            return True
        if run.model_path.exists():
            raise ConfigError(f"--resume: {run.path} holds a model.pt but no checkpoint.pt to continue from; "
                              "pass --overwrite to train it again from step 0, or choose another --out")  # fmt: skip
        if not run.holds_run():
            raise ConfigError(f"--resume: no checkpoint at {run.checkpoint_path}; start without --resume")
        # killed before its first checkpoint: nothing to continue, and the user asked for this folder
        if run.writable:
            log.warning("--resume: %s has no checkpoint yet (the run stopped before its first one); "
                        "starting over from step 0", run.path)  # fmt: skip
        return False
    if run.holds_run() and not cfg.overwrite:
        raise ConfigError(f"--out {run.path} already holds a run; pass --resume to continue it, --overwrite "
                          "to start it afresh, or choose another --out")  # fmt: skip
    return False


def build_loss(cfg: TrainConfig, device: torch.device) -> tuple[torch.Tensor, PerceptualLoss]:
    """The style image (at --style-size) and the perceptual loss on VGG-16, as `train` and sweeps use them."""
    style_size = cfg.image_size if cfg.style_size is None else (cfg.style_size or None)
    style = load_image(cfg.style, style_size)
    vgg = load_vgg(cfg.vgg_weights, device=device, seed=cfg.seed)
    if cfg.channels_last:
        vgg = vgg.to(memory_format=torch.channels_last)
    loss_fn = PerceptualLoss(vgg, style, cfg.content_weight, cfg.style_weight, cfg.tv_weight,
                             cfg.style_reduction)  # fmt: skip
    return style, loss_fn


def prepare(cfg: TrainConfig) -> Prepared:
    """Validate options and load data, style image and VGG; every user error surfaces here, before any
    training work (ConfigError, DataError, ImageLoadError, VGGWeightsError: all ValueError/RuntimeError
    with a message that says what to do)."""
    cfg.validate()
    init_from_env()  # joins torchrun's process group (DDP); a no-op otherwise
    device = local_device(devices.resolve(cfg.device))
    rank, world = dist_rank_world()
    run = RunDir(cfg.out, writable=rank == 0)
    resume = start_mode(run, cfg)
    dataset = ImageFolderDataset(cfg.data, cfg.image_size)
    style, loss_fn = build_loss(cfg, device)
    amp_dtype, use_scaler = amp_setup(device, cfg.amp, needs_closure(cfg.optimizer))
    return Prepared(cfg, device, run, dataset, style, loss_fn, amp_dtype, use_scaler, rank, world, resume)


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:  # torch.load returns lists where random.setstate wants tuples
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def train(cfg: TrainConfig, on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train a style network; writes model.pt, metrics.csv, card.json and checkpoint.pt into cfg.out.
    `on_step(step, losses)` is called after every step (progress for sweeps; tests use it to crash).
    A write the disk refuses raises WriteError, after recording status "failed" and the reason in
    card.json where that can still be written."""
    p = prepare(cfg)
    try:
        return _train(p, on_step)
    except WriteError as exc:
        if p.card and p.run.writable:
            p.card.update(status="failed", error=exc.line("--out"),
                          ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
            try:
                p.run.write_card(p.card)
            except WriteError:
                pass  # the caller's one-line error still says why
        raise


def _train(p: Prepared, on_step: Callable[[int, dict[str, float]], None] | None) -> TrainResult:
    cfg, dev, run = p.cfg, p.device, p.run
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    closure = needs_closure(cfg.optimizer)
    model: nn.Module = build_model(cfg.arch, norm=cfg.norm).to(dev)
    # L-BFGS flattens gradients with .view(-1), which channels-last weights do not allow
    if cfg.channels_last and not closure:
        model = model.to(memory_format=torch.channels_last)
    core = model  # the module to save; `model` may become a DDP wrapper
    if p.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    workers = cfg.workers if cfg.workers is not None else (4 if dev.type == "cuda" else 0)
    loader = make_loader(p.dataset, cfg.batch_size, cfg.seed, num_workers=workers,
                         pin_memory=dev.type == "cuda", rank=p.rank, world_size=p.world_size)  # fmt: skip
    total_steps = cfg.steps or cfg.epochs * loader.batches_per_epoch
    total_steps = min_across_ranks(total_steps)  # shards can differ by an image; DDP needs equal step counts
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr)
    scheduler = make_schedule(cfg.schedule, optimizer, total_steps)
    scaler = torch.amp.GradScaler(dev.type) if p.use_scaler else None

    step, epoch, batch_in_epoch, prior_seconds = 0, 0, 0, 0.0
    if p.resume:
        ck = run.load_checkpoint()
        changed = [k for k in RESUME_KEYS if ck["config"].get(k) != getattr(cfg, k)]
        if changed:
            raise ConfigError(
                "--resume: these settings differ from the checkpoint's: "
                + ", ".join(f"{k} ({ck['config'].get(k)!r} there, {getattr(cfg, k)!r} now)" for k in changed)
            )
        core.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if scaler is not None and ck.get("scaler"):
            scaler.load_state_dict(ck["scaler"])
        step, epoch, batch_in_epoch = ck["step"], ck["epoch"], ck["batch_in_epoch"]
        prior_seconds = float(ck["seconds"])
        _set_rng_state(ck["rng"], dev)
        log.info("resuming %s at step %d (epoch %d, batch %d)", run.path, step, epoch, batch_in_epoch)

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    card: dict[str, Any] = {
        "kind": "stylestream-train",
        "status": "running",
        "settings": asdict(cfg),
        "vgg_weights": p.loss_fn.vgg.weights_desc,
        "device": devices.device_name(dev),
        "amp": str(p.amp_dtype).removeprefix("torch.") if p.amp_dtype else "off",
        "dataset": {
            "folder": str(cfg.data),
            "images": len(p.dataset),
            "batches_per_epoch": loader.batches_per_epoch,
        },
        "style_image": {"path": str(cfg.style), "size": list(p.style_image.shape[-2:])},
        "total_steps": total_steps,
        "started": started,
        "versions": library_versions(),
    }
    p.card = card  # `train` records a failure in it
    if p.rank == 0:
        line = f"VGG-16 weights: {p.loss_fn.vgg.weights_desc}; device: {card['device']}; amp: {card['amp']}"
        if "random" in p.loss_fn.vgg.weights_desc:  # say it loudly: such a net is not a trained style
            log.warning(line)
        else:
            log.info(line)
    if not p.resume:
        run.clear()  # what an earlier run left (--overwrite, or --resume before any checkpoint)
    run.prepare_folder()
    run.start_metrics(keep_through_step=step if p.resume else None)
    run.write_card(card)
    tb = _tensorboard(run) if cfg.tensorboard and run.writable else None

    def checkpoint() -> None:
        run.save_checkpoint({
            "config": asdict(cfg), "model": core.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
            "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "seconds": prior_seconds + (time.perf_counter() - t0), "rng": _rng_state(dev),
        })  # fmt: skip

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, unit="step", disable=not cfg.progress or p.rank != 0,
               dynamic_ncols=True)  # fmt: skip
    t0 = time.perf_counter()
    status, losses, session_images = "ok", {}, 0
    model.train()
    try:
        while step < total_steps and status == "ok":
            yielded = False
            for i, x in loader.epoch_batches(epoch, batch_in_epoch):
                yielded = True
                ts = time.perf_counter()
                x = x.to(dev, non_blocking=True)
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = optimizer.param_groups[0]["lr"]
                targets = content_targets(p.loss_fn, x, p.amp_dtype)
                terms = train_step(model, optimizer, p.loss_fn, x, targets, amp_dtype=p.amp_dtype,
                                   scaler=scaler, closure=closure)  # fmt: skip
                terms = mean_across_ranks(terms)  # whole-batch loss, the same on every rank
                scheduler.step()
                step, batch_in_epoch = step + 1, i + 1  # right after the update: Ctrl-C sees a whole step
                losses = {k: float(v) for k, v in terms.items()}
                dt = time.perf_counter() - ts
                session_images += x.shape[0]
                run.log_metrics({"step": step, "epoch": epoch, **{k: f"{v:.6g}" for k, v in losses.items()},
                                 "lr": f"{lr:.6g}", "images/s": f"{x.shape[0] / dt:.4g}",
                                 "seconds": f"{prior_seconds + time.perf_counter() - t0:.3f}"})  # fmt: skip
                bar.update(1)
                if step % cfg.log_every == 0 or step == 1:
                    bar.set_postfix(total=f"{losses['total']:.4g}", content=f"{losses['content']:.4g}",
                                    style=f"{losses['style']:.4g}", img_s=f"{x.shape[0] / dt:.2f}")  # fmt: skip
                    if tb is not None:
                        for k, v in losses.items():
                            tb.add_scalar(f"loss/{k}", v, step)
                        tb.add_scalar("lr", lr, step)
                        tb.add_scalar("images_per_s", x.shape[0] / dt, step)
                if not math.isfinite(losses["total"]):
                    status = "diverged"
                    log.error(
                        "loss became %s at step %d: the run diverged (try a lower --lr)",
                        losses["total"],
                        step,
                    )
                    break
                if on_step is not None:
                    on_step(step, losses)
                if step >= total_steps:
                    break
                if step % cfg.checkpoint_every == 0:
                    checkpoint()
                    if tb is not None:
                        _tb_samples(tb, core, p, step)
            else:  # the epoch ran out
                if not yielded and batch_in_epoch == 0:
                    raise DataError(f"{cfg.data}: none of the {len(p.dataset)} image files could be read")
                epoch, batch_in_epoch = epoch + 1, 0
        if batch_in_epoch >= loader.batches_per_epoch:
            epoch, batch_in_epoch = epoch + 1, 0
    except KeyboardInterrupt:
        checkpoint()  # a clean stop: --resume continues from this step
        card.update(status="interrupted", step=step, losses=losses)
        run.write_card(card)
        raise
    finally:
        bar.close()
    seconds = prior_seconds + time.perf_counter() - t0
    session_s = time.perf_counter() - t0
    core.eval()
    card.update(status=status, step=step, losses=losses, wall_time_s=round(seconds, 3),
                images_per_s=round(session_images / session_s, 4) if session_s > 0 else None,
                ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))  # fmt: skip
    if status == "ok":
        checkpoint()
        if run.writable:
            save_model(core, run.model_path, card={k: v for k, v in card.items() if k != "versions"})
            card["model"] = run.model_path.name
            _pictures(core, p, run)
    run.write_card(card)
    if tb is not None:
        tb.close()
    return TrainResult(status, step, losses, seconds, card["images_per_s"] or 0.0, str(run.path), card)


def _tensorboard(run: RunDir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(
            f"--tensorboard needs the tensorboard package ({exc}); pip install tensorboard"
        ) from None
    return SummaryWriter(log_dir=str(run.path / "tensorboard"))


def _sample_batch(p: Prepared, n: int = 4) -> torch.Tensor:
    items = [p.dataset[i] for i in range(min(n, len(p.dataset)))]
    return torch.stack([t for t in items if isinstance(t, torch.Tensor)])


@torch.no_grad()
def _stylize(core: nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    was_training = core.training
    core.eval()
    y = core(x.to(dev)).float().cpu()
    core.train(was_training)
    return y


def _tb_samples(tb, core: nn.Module, p: Prepared, step: int) -> None:
    x = _sample_batch(p)
    tb.add_images("samples", _stylize(core, x, p.device) / 255.0, step)


def _pictures(core: nn.Module, p: Prepared, run: RunDir) -> None:
    from stylestream.train.run_pictures import plot_losses, sample_grid

    try:
        title = f"{p.cfg.arch} / {p.cfg.optimizer} / lr {p.cfg.lr:g}"
        if p.cfg.vgg_weights == "random":
            title += " (random VGG-16: smoke test, not a trained style)"
        plot_losses(run.read_metrics(), run.path / "losses.png", title=title)
        x = _sample_batch(p)
        if len(x):
            sample_grid(x, _stylize(core, x, p.device), run.path / "samples.jpg")
    except OSError as exc:  # e.g. the disk filled up: one line, the run itself is saved
        log.warning("could not write losses.png / samples.jpg in %s: %s", run.path, exc)
    except Exception:  # pictures are a convenience: never fail a finished run over them
        log.exception("could not draw losses.png / samples.jpg")
