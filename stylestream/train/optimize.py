"""Per-image style transfer (the method of Gatys et al.): optimize the pixels of one image against a
perceptual loss of stylestream.train.losses.LOSSES (`johnson`: VGG-16 and Johnson's layers, the loss
`train` uses; `gatys`: VGG-19 and Gatys et al.'s layers) with any optimizer of the registry.

Pixels stay in [0, 255] without corrupting any optimizer's model of the loss:
- first-order optimizers take their step, then the image is projected onto [0, 255] (outside the loss
  evaluation, so every evaluated loss is that of a valid image);
- `lbfgs` (torch, strong-Wolfe line search) optimizes the unconstrained pixels: clamping inside its
  closure would make the loss it sees differ from the point it steps to, and its curvature pairs wrong;
- `lbfgsb` (SciPy's L-BFGS-B) keeps the [0, 255] bounds inside the method (seed 002's).

The image written is the best one evaluated, clamped; its loss is measured again (`final_loss`). A run
whose last evaluation ends above its starting loss (or at NaN/Inf) is "diverged", even though the best
image it found is still written.

A "step" is one loss evaluation (one VGG forward + backward) for every optimizer, L-BFGS included, so
equal `steps` means equal compute when optimizers are compared."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from stylestream import devices
from stylestream.train.pixel_lr import base_optimizer, first_step_levels, pixel_lr, takes_lr

log = logging.getLogger(__name__)

INITS = ("content", "noise")
LOW, HIGH = 0.0, 255.0


class _Stop(Exception):
    """Ends an optimization from inside the closure (step budget reached or loss not finite)."""


@dataclass
class OptimizeConfig:
    content: Path
    style: Path
    out: Path
    optimizer: str = "lbfgs"
    lr: float | None = None  # None: the family's pixel default (stylestream.train.pixel_lr)
    steps: int = 500
    loss: str = "johnson"  # a name of stylestream.train.losses.LOSSES
    image_size: int = 512  # long side of the output; the content image's aspect is kept
    style_size: int | None = None  # long side of the style image; None: image_size
    init: str = "content"
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    vgg_weights: str = "imagenet"
    device: str = "auto"
    save_every: int = 0  # also write OUT_<step>.png (the best image so far) every N steps (0: never)
    seed: int = 0
    progress: bool = True


@dataclass
class OptimizeResult:
    optimizer: str
    lr: float | None  # the lr used (picked from the first gradient for SGD-like defaults); None: lbfgsb
    status: str  # "ok" | "diverged"
    out: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step (evaluation)
    final: dict[str, float] = field(default_factory=dict)  # loss terms of the image written
    best_step: int = 0  # the step whose image was written
    snapshots: dict[int, Path] = field(default_factory=dict)  # --save-every images by step
    lr_auto: bool = False  # lr picked from the first gradient
    wall_s: float = 0.0
    device: str = "cpu"
    vgg_weights: str = ""
    error: str | None = None

    @property
    def initial_loss(self) -> float:
        return self.history[0]["total"] if self.history else math.nan

    @property
    def last_loss(self) -> float:
        """Where the run ended (its last evaluation)."""
        return self.history[-1]["total"] if self.history else math.nan

    @property
    def final_loss(self) -> float:
        """The loss of the image that was written."""
        return self.final.get("total", math.nan)

    @property
    def label(self) -> str:
        """e.g. "adam η=5", "sgd η=724 (auto)", "lbfgsb"."""
        if self.lr is None:
            return self.optimizer
        return f"{self.optimizer} η={self.lr:.3g}" + (" (auto)" if self.lr_auto else "")


def out_path(out: Path, suffix: str) -> Path:
    """OUT.png -> OUT<suffix>, e.g. OUT.loss.png, OUT.csv, OUT_00100.png."""
    return out.with_name(out.stem + suffix)


def write_history_csv(history: Sequence[dict[str, float]], path: Path) -> None:
    if not history:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def check_config(cfg: OptimizeConfig) -> None:
    """Every setting checked before any work; raises ValueError (UnknownNameError for names)."""
    from stylestream.train.lbfgsb import scipy_problem
    from stylestream.train.losses import LOSSES
    from stylestream.train.optimizers import OPTIMIZERS

    OPTIMIZERS.entry(cfg.optimizer)  # raises UnknownNameError listing the choices
    LOSSES.entry(cfg.loss)
    if cfg.init not in INITS:
        raise ValueError(f"unknown init {cfg.init!r}; choose one of: {', '.join(INITS)}")
    if cfg.steps < 1 or cfg.image_size < 16 or cfg.save_every < 0:
        raise ValueError("--steps must be >= 1, --image-size >= 16 and --save-every >= 0")
    if base_optimizer(cfg.optimizer) == "lbfgsb" and (problem := scipy_problem()):
        raise ValueError(problem)
    if cfg.lr is not None and not takes_lr(cfg.optimizer):
        raise ValueError(f"{cfg.optimizer} takes no learning rate (SciPy's L-BFGS-B line-searches); drop it")
    if cfg.lr is not None and not (math.isfinite(cfg.lr) and cfg.lr > 0):
        raise ValueError(f"learning rates must be positive finite numbers, got {cfg.lr} for {cfg.optimizer}")


def load_loss(cfg: OptimizeConfig, device: torch.device):
    """The VGG net of --loss with --vgg-weights (the caller says which weights it uses, once)."""
    from stylestream.train.losses import LOSSES
    from stylestream.train.vgg import load_vgg

    return load_vgg(cfg.vgg_weights, device=device, seed=cfg.seed, net=LOSSES[cfg.loss].net)


def optimize_image(cfg: OptimizeConfig, vgg: torch.nn.Module | None = None) -> OptimizeResult:
    """Run one per-image optimization and write OUT, OUT.loss.png and OUT.csv (+ OUT_<step>.png)."""
    from tqdm.auto import tqdm

    from stylestream.train.figures import plot_loss_curves
    from stylestream.train.images import load_image, save_image
    from stylestream.train.losses import LOSSES, PerceptualLoss
    from stylestream.train.optimizers import make_optimizer, needs_closure
    from stylestream.train.vgg import weights_notice

    check_config(cfg)
    device = devices.resolve(cfg.device)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if vgg is None:
        vgg = load_loss(cfg, device)
        weights_notice(vgg)
    vgg = vgg.to(device)
    content = load_image(cfg.content, cfg.image_size).to(device)  # long side; aspect kept
    style = load_image(cfg.style, cfg.style_size or cfg.image_size).to(device)
    loss_fn = PerceptualLoss(vgg, style, content_weight=cfg.content_weight, style_weight=cfg.style_weight,
                             tv_weight=cfg.tv_weight, layers=LOSSES[cfg.loss])  # fmt: skip
    targets = loss_fn.content_targets(content)

    if cfg.init == "content":
        start = content.detach().clone(memory_format=torch.contiguous_format)  # L-BFGS views grads flat
    else:
        gen = torch.Generator().manual_seed(cfg.seed)
        start = (torch.rand(content.shape, generator=gen) * HIGH).to(device)
    image = start.requires_grad_(True)
    lr = cfg.lr if cfg.lr is not None else pixel_lr(cfg.optimizer)
    levels = first_step_levels(cfg.optimizer) if cfg.lr is None else None
    extra = {}
    if base_optimizer(cfg.optimizer) == "lbfgsb":  # one long SciPy run within the pixel bounds
        extra = {"bounds": (LOW, HIGH), "max_iter": cfg.steps, "max_eval": cfg.steps}
    optimizer = make_optimizer(cfg.optimizer, [image], 1.0 if lr is None else lr, **extra)
    closure_step = needs_closure(cfg.optimizer)

    history: list[dict[str, float]] = []
    best = {"loss": math.inf, "image": image.detach().clone(), "step": 0}
    snapshots: dict[int, Path] = {}
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"optimize {cfg.optimizer}", unit="step", disable=not cfg.progress)

    def closure() -> torch.Tensor:
        if len(history) >= cfg.steps:
            raise _Stop  # L-BFGS evaluates several times per step(); end exactly at the budget
        optimizer.zero_grad(set_to_none=True)
        terms = loss_fn(image, targets)
        row = {"step": float(len(history) + 1), **{k: float(v.detach()) for k, v in terms.items()},
               "time_s": time.perf_counter() - t0}  # fmt: skip
        history.append(row)
        bar.update(1)
        if not math.isfinite(row["total"]):
            raise _Stop
        if row["total"] < best["loss"]:  # an L-BFGS trial point may be the best: keep whichever is
            best.update(loss=row["total"], image=image.detach().clone(), step=len(history))
        bar.set_postfix(loss=f"{row['total']:.4g}", best=f"{best['loss']:.4g}", refresh=False)
        n = len(history)
        if cfg.save_every and n % cfg.save_every == 0:
            snapshots[n] = out_path(out, f"_{n:05d}.png")
            save_image(best["image"].clamp(LOW, HIGH).cpu(), snapshots[n])
        terms["total"].backward()
        return terms["total"]

    try:
        while len(history) < cfg.steps:
            before, best_before = len(history), best["loss"]
            if closure_step:
                optimizer.step(closure)
                if best["loss"] >= best_before:  # a whole L-BFGS step without progress: converged
                    break
            else:
                closure()
                if levels is not None and len(history) == 1:  # SGD-like default: from the first gradient
                    lr = levels / max(float(image.grad.abs().max()), 1e-30)
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                optimizer.step()
                with torch.no_grad():
                    image.clamp_(LOW, HIGH)  # projection, outside the loss evaluation
            if len(history) == before:
                break
    except _Stop:
        pass
    finally:
        bar.close()

    written = best["image"].clamp(LOW, HIGH)
    with torch.no_grad():
        final = {k: float(v) for k, v in loss_fn(written, targets).items()}
    save_image(written.cpu(), out)
    result = OptimizeResult(
        optimizer=cfg.optimizer, lr=lr, status="ok", out=out, history=history, final=final, best_step=best["step"],
        snapshots=snapshots, lr_auto=levels is not None, wall_s=time.perf_counter() - t0, device=str(device),
        vgg_weights=str(getattr(vgg, "weights_desc", cfg.vgg_weights)),
    )  # fmt: skip
    last, first = result.last_loss, result.initial_loss
    if not math.isfinite(last) or last > first:
        result.status = "diverged"
        result.error = (f"the loss ended at {last:.4g}, above its start {first:.4g}; the best image "
                        f"(step {result.best_step}, {result.final_loss:.4g}) was written; try a lower lr")  # fmt: skip
        log.warning("%s (%s): %s", out, result.label, result.error)
    write_history_csv(history, out_path(out, ".csv"))
    plot_loss_curves({result.label: loss_curve(result)}, out_path(out, ".loss.png"),
                     title=f"Per-image optimization: {Path(cfg.content).name} × {Path(cfg.style).name}",
                     smoothing=0.0, xlabel="step (loss evaluations)")  # fmt: skip
    return result


def loss_curve(r: OptimizeResult) -> tuple:
    """(steps, total losses) of a run, for plot_loss_curves."""
    import numpy as np

    return (np.array([h["step"] for h in r.history]), np.array([h["total"] for h in r.history]))
