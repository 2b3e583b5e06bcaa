"""Watching training: the progress bar, TensorBoard scalars and samples, and the pictures a finished run
leaves (losses.png, samples.jpg; drawn by stylestream.train.run_pictures). None of it changes what is
trained, and a picture that cannot be drawn is a logged warning, never a failed run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from stylestream.models import inference_model
from stylestream.train.config import ConfigError, TrainConfig
from stylestream.train.data import ImageFolderDataset
from stylestream.train.rundir import RunDir
from stylestream.train.runstate import RunState

log = logging.getLogger(__name__)


def progress_bar(total: int, initial: int, enabled: bool, desc: str | None) -> Any:
    """A named bar (a sweep's lockstep group) sits under the sweep's own bar and goes when done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", desc=desc, disable=not enabled, leave=desc is None,
                dynamic_ncols=True)  # fmt: skip


def bar_postfix(runs: Sequence[RunState]) -> dict[str, str]:
    """One run's loss terms and speed; for several, how many are left and the best total."""
    if len(runs) == 1:
        r = runs[0]
        temporal = {"temporal": f"{r.losses['temporal']:.4g}"} if r.cfg.temporal_weight else {}
        return {"total": f"{r.losses['total']:.4g}", "content": f"{r.losses['content']:.4g}",
                "style": f"{r.losses['style']:.4g}", **temporal, "img_s": f"{r.rate:.2f}"}  # fmt: skip
    return {"runs": str(len(runs)), "best": f"{min(r.losses['total'] for r in runs):.4g}"}


def open_tensorboard(run: RunDir) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError(f"--tensorboard needs the tensorboard package ({exc}); pip install tensorboard") from None
    return SummaryWriter(log_dir=str(run.path / "tensorboard"))


def log_scalars(r: RunState, lr: float) -> None:
    for k, v in r.losses.items():
        r.tb.add_scalar(f"loss/{k}", v, r.pos.step)
    r.tb.add_scalar("lr", lr, r.pos.step)
    r.tb.add_scalar("images_per_s", r.rate, r.pos.step)


def log_samples(r: RunState, dataset: ImageFolderDataset, device: torch.device) -> None:
    x = sample_batch(dataset)
    if len(x):
        r.tb.add_images("samples", stylize(r.core, x, device) / 255.0, r.pos.step)


def sample_batch(dataset: ImageFolderDataset, n: int = 4) -> torch.Tensor:
    """The first `n` training images (fewer if some are unreadable)."""
    items = [dataset[i] for i in range(min(n, len(dataset)))]
    good = [t for t in items if isinstance(t, torch.Tensor)]
    return torch.stack(good) if good else torch.empty(0)


@torch.no_grad()
def stylize(core: nn.Module, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """The network's pictures of `x` as images leave it: eval mode, clamped to [0, 255]."""
    was_training = core.training
    core.eval()
    y = inference_model(core)(x.to(dev)).float().cpu()
    core.train(was_training)
    return y


def draw_pictures(core: nn.Module, cfg: TrainConfig, run: RunDir, dataset: ImageFolderDataset,
                  device: torch.device) -> None:  # fmt: skip
    """losses.png and samples.jpg of a finished run."""
    from stylestream.train.run_pictures import plot_losses, sample_grid

    try:
        title = f"{cfg.arch} / {cfg.optimizer} / lr {cfg.lr:g}"
        if cfg.vgg_weights == "random":
            title += " (random VGG-16: smoke test, not a trained style)"
        plot_losses(run.read_metrics(), run.path / "losses.png", title=title)
        x = sample_batch(dataset)
        if len(x):
            sample_grid(x, stylize(core, x, device), run.path / "samples.jpg")
    except OSError as exc:  # e.g. the disk filled up: one line, the run itself is saved
        log.warning("could not write losses.png / samples.jpg in %s: %s", run.path, exc)
    except Exception:  # pictures are a convenience: never fail a finished run over them
        log.exception("could not draw losses.png / samples.jpg in %s", run.path)
