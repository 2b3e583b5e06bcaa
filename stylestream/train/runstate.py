"""The state of one training run, and how its folder holds it: where it stands in the data (Position,
`batches`), its checkpoint (weights, optimizer, schedule, loss scaler, position, seconds, and every RNG,
CUDA's included), the folder rules of `start_mode`, and the card. A run resumed from a checkpoint ends
with the same weights, bit for bit, as one that never stopped (tests/train/test_loop.py)."""

from __future__ import annotations

import logging
import platform
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from stylestream.models.io import WriteError
from stylestream.train.config import RESUME_KEYS, ConfigError, TrainConfig
from stylestream.train.data import DataError, ResumableLoader
from stylestream.train.rundir import RunDir

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class Position:
    """Steps taken, and the next batch: batch `batch_in_epoch` of epoch `epoch`."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0


def batches(loader: ResumableLoader, start: Position, total_steps: int) -> Iterator[tuple[Position, torch.Tensor]]:
    """The batches from `start` until `total_steps`, each with the position after its step (one past an
    epoch's last batch resumes with the next epoch). An epoch that yields nothing from its start means
    no image could be read: DataError."""
    step, epoch, first = start.step, start.epoch, start.batch_in_epoch
    while step < total_steps:
        yielded = False
        for i, x in loader.epoch_batches(epoch, first):
            yielded, step = True, step + 1
            yield Position(step, epoch, i + 1), x
            if step >= total_steps:
                return
        if not yielded and first == 0:
            ds = loader.dataset
            raise DataError(f"{ds.root}: none of the {len(ds)} image files could be read")
        epoch, first = epoch + 1, 0


def rng_state() -> dict[str, Any]:
    """Every RNG a step may draw from; CUDA's whenever this process has used CUDA."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    if "cuda" in state and torch.cuda.is_initialized():  # a CPU resume of a GPU run has no use for it
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:  # torch.load returns lists where random.setstate wants tuples
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


def start_mode(run: RunDir, cfg: TrainConfig) -> bool:
    """How a run folder is used: True to continue from its checkpoint, False to start at step 0 (the
    caller clears what an earlier run left). Raises ConfigError when that would lose a run nobody asked
    to replace."""
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


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def library_versions() -> dict[str, str]:
    import numpy
    import torchvision

    from stylestream import __version__

    return {"stylestream": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__}  # fmt: skip


def new_card(cfg: TrainConfig, **facts: Any) -> dict[str, Any]:
    """card.json as a run starts: its settings, `facts` (device, data, VGG weights, ...), the time and
    library versions. Its end adds status, step, losses and times."""
    return {"kind": "stylestream-train", "status": "running", "settings": asdict(cfg), **facts,
            "started": utc_now(), "versions": library_versions()}  # fmt: skip


@dataclass
class RunState:
    """One network in training: what its checkpoint holds, its card, and where its files go."""

    cfg: TrainConfig
    dir: RunDir
    core: nn.Module  # the network that is saved
    model: nn.Module  # what takes the steps: core, or its DistributedDataParallel wrapper
    optimizer: Optimizer
    scheduler: LRScheduler
    scaler: torch.amp.GradScaler | None
    amp_dtype: torch.dtype | None
    fused: bool = False  # takes its steps in the group's fused pass (stylestream.train.fused)
    resumed: bool = False  # continues from its checkpoint (False: starts at step 0 in a cleared folder)
    pos: Position = field(default_factory=Position)
    seconds: float = 0.0  # its compute plus its share of the group's, resumed sessions included
    session_s: float = 0.0  # the same, this session only
    images: int = 0  # trained on this session
    seen: int = 0  # images trained on, resumed sessions included (all ranks)
    rate: float = 0.0  # images/s of the last step
    losses: dict[str, float] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)
    tb: Any = None  # its TensorBoard writer, if any
    done: bool = False  # ended and its card written

    def checkpoint(self) -> dict[str, Any]:
        return {"config": asdict(self.cfg), "model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
                "step": self.pos.step, "epoch": self.pos.epoch, "batch_in_epoch": self.pos.batch_in_epoch,
                "seconds": self.seconds, "images_seen": self.seen, "rng": rng_state()}  # fmt: skip

    def save_checkpoint(self) -> None:
        self.dir.save_checkpoint(self.checkpoint())

    def resume(self) -> None:
        """Continue from the checkpoint: every state it holds, the global RNGs included (the runs of a
        group checkpoint together, so they hold the same ones)."""
        ck = self.dir.load_checkpoint()
        # a setting added after the checkpoint was written (e.g. temporal_weight) had its default then
        then = {k: ck["config"].get(k, TrainConfig.__dataclass_fields__[k].default) for k in RESUME_KEYS}
        changed = [k for k in RESUME_KEYS if then[k] != getattr(self.cfg, k)]
        if changed:
            raise ConfigError(
                f"--resume: {self.dir.path}: these settings differ from the checkpoint's: "
                + ", ".join(f"{k} ({then[k]!r} there, {getattr(self.cfg, k)!r} now)" for k in changed)
            )
        self.core.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.pos = Position(ck["step"], ck["epoch"], ck["batch_in_epoch"])
        self.seconds = float(ck["seconds"])
        # checkpoints from before the count: full batches is the best estimate
        self.seen = int(ck.get("images_seen", self.pos.step * self.cfg.batch_size))
        restore_rng_state(ck["rng"])
        log.info("resuming %s at step %d (epoch %d, batch %d)", self.dir.path, self.pos.step, self.pos.epoch,
                 self.pos.batch_in_epoch)

    def open_folder(self, card: dict[str, Any]) -> None:
        """Clear what an earlier run left (--overwrite, or --resume before any checkpoint) unless
        resuming, then start metrics.csv (on resume: its rows up to the checkpoint) and card.json."""
        self.card = card
        if not self.resumed:
            self.dir.clear()
        self.dir.prepare_folder()
        self.dir.start_metrics(keep_through_step=self.pos.step if self.resumed else None)
        self.dir.write_card(card)

    def count(self, seconds: float, images: int) -> None:
        self.seconds += seconds
        self.session_s += seconds
        self.images += images

    def end_card(self, status: str, error: str | None = None) -> None:
        self.card.update(status=status, step=self.pos.step, losses=self.losses, wall_time_s=round(self.seconds, 3),
                         images_per_s=round(self.images / self.session_s, 4) if self.session_s > 0 else None,
                         ended=utc_now())  # fmt: skip
        if error:
            self.card["error"] = error

    def record_failure(self, exc: WriteError) -> None:
        """A write the disk refused stopped this run: card.json says "failed" and why, if it still can."""
        if self.done or not self.card:
            return
        self.card.update(status="failed", error=exc.line("--out"), ended=utc_now())
        try:
            self.dir.write_card(self.card)
        except WriteError:
            pass  # the caller's one-line error still says why
