"""Per-image style transfer (Gatys et al.): optimize the pixels of one image with the same perceptual
loss and VGG code as training, with any optimizer of the registry (L-BFGS through a closure).

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
from typing import Any

import torch

from stylestream import devices

log = logging.getLogger(__name__)

INITS = ("content", "noise")
# Pixel-space learning rates that work on [0, 255] images; L-BFGS does its own line scaling.
DEFAULT_LR = {"lbfgs": 1.0}
DEFAULT_FIRST_ORDER_LR = 5.0


class _Stop(Exception):
    """Ends an optimization from inside the closure (step budget reached or loss not finite)."""


def default_lr(optimizer: str) -> float:
    return DEFAULT_LR.get(optimizer, DEFAULT_FIRST_ORDER_LR)


@dataclass
class OptimizeConfig:
    content: Path
    style: Path
    out: Path
    optimizer: str = "lbfgs"
    lr: float | None = None  # None: default_lr(optimizer)
    steps: int = 500
    image_size: int = 512  # long side of the output; the content image's aspect is kept
    style_size: int | None = None  # long side of the style image; None: image_size
    init: str = "content"
    content_weight: float = 1e5
    style_weight: float = 1e10
    tv_weight: float = 0.0
    vgg_weights: str = "imagenet"
    device: str = "auto"
    save_every: int = 0  # also write OUT_<step>.png every N steps (0: never)
    seed: int = 0
    progress: bool = True


@dataclass
class OptimizeResult:
    optimizer: str
    lr: float
    status: str  # "ok" | "diverged"
    out: Path
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step
    wall_s: float = 0.0
    device: str = "cpu"
    vgg_weights: str = ""
    error: str | None = None

    @property
    def initial_loss(self) -> float:
        return self.history[0]["total"] if self.history else math.nan

    @property
    def final_loss(self) -> float:
        """The loss of the image that was written (the last finite evaluation)."""
        finite = [h["total"] for h in self.history if math.isfinite(h["total"])]
        return finite[-1] if finite else math.nan


def _out_path(out: Path, suffix: str) -> Path:
    """OUT.png -> OUT<suffix>, e.g. OUT.loss.png, OUT.csv, OUT_00100.png."""
    return out.with_name(out.stem + suffix)


def write_history_csv(history: Sequence[dict[str, float]], path: Path) -> None:
    if not history:
        return
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)


def optimize_image(cfg: OptimizeConfig, vgg: torch.nn.Module | None = None) -> OptimizeResult:
    """Run one per-image optimization and write OUT, OUT.loss.png and OUT.csv (+ intermediates)."""
    from tqdm.auto import tqdm

    from stylestream.train.images import load_image, save_image
    from stylestream.train.losses import PerceptualLoss
    from stylestream.train.optimizers import OPTIMIZERS, make_optimizer, needs_closure
    from stylestream.train.sweep_report import plot_loss_curves
    from stylestream.train.vgg import load_vgg

    if cfg.optimizer not in OPTIMIZERS:
        OPTIMIZERS.entry(cfg.optimizer)  # raises UnknownNameError listing the choices
    if cfg.init not in INITS:
        raise ValueError(f"unknown init {cfg.init!r}; choose one of: {', '.join(INITS)}")
    if cfg.steps < 1 or cfg.image_size < 16:
        raise ValueError("steps must be >= 1 and image size >= 16")
    device = devices.resolve(cfg.device)
    lr = cfg.lr if cfg.lr is not None else default_lr(cfg.optimizer)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    if vgg is None:
        vgg = load_vgg(cfg.vgg_weights, device=str(device), seed=cfg.seed)
    vgg = vgg.to(device)
    content = load_image(cfg.content, cfg.image_size).to(device)  # long side; aspect kept
    style = load_image(cfg.style, cfg.style_size or cfg.image_size).to(device)
    loss_fn = PerceptualLoss(vgg, style, content_weight=cfg.content_weight, style_weight=cfg.style_weight,
                             tv_weight=cfg.tv_weight)  # fmt: skip
    targets = loss_fn.content_targets(content)

    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.init == "content":
        start = content.detach().clone(memory_format=torch.contiguous_format)  # L-BFGS views grads flat
    else:
        start = (torch.rand(content.shape, generator=gen) * 255).to(device)
    image = start.requires_grad_(True)
    optimizer = make_optimizer(cfg.optimizer, [image], lr)
    closure_step = needs_closure(cfg.optimizer)

    history: list[dict[str, float]] = []
    best = image.detach().clone()  # the last image whose loss was finite
    t0 = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc=f"optimize {cfg.optimizer}", unit="step", disable=not cfg.progress)

    def closure() -> torch.Tensor:
        nonlocal best
        if len(history) >= cfg.steps:
            raise _Stop  # L-BFGS evaluates several times per step(); end exactly at the budget
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            image.clamp_(0, 255)  # keep pixels valid; inside the closure so L-BFGS sees it too
        terms = loss_fn(image, targets)
        row = {"step": float(len(history) + 1), **{k: float(v.detach()) for k, v in terms.items()},
               "time_s": time.perf_counter() - t0}  # fmt: skip
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['total']:.3e}")
        if not math.isfinite(row["total"]):
            raise _Stop
        best = image.detach().clone()
        n = len(history)
        if cfg.save_every and n % cfg.save_every == 0:
            save_image(best.cpu(), _out_path(out, f"_{n:05d}.png"))
        terms["total"].backward()
        return terms["total"]

    try:
        while len(history) < cfg.steps:
            before = len(history)
            if closure_step:
                optimizer.step(closure)
            else:
                closure()
                if len(history) < cfg.steps:
                    optimizer.step()
            if len(history) == before:
                break
    except _Stop:
        pass
    finally:
        bar.close()

    status, error = "ok", None
    if history and not math.isfinite(history[-1]["total"]):
        status = "diverged"
        error = (f"loss became {history[-1]['total']} at step {len(history)} with {cfg.optimizer} lr={lr:g}; "
                 "try a lower --lr")  # fmt: skip
        log.warning("%s: %s", out, error)
    save_image(best.clamp(0, 255).cpu(), out)
    write_history_csv(history, _out_path(out, ".csv"))
    steps = torch.tensor([h["step"] for h in history], dtype=torch.float64).numpy()
    totals = torch.tensor([h["total"] for h in history], dtype=torch.float64).numpy()
    plot_loss_curves({f"{cfg.optimizer} (lr={lr:g})": (steps, totals)}, _out_path(out, ".loss.png"),
                title=f"Per-image optimization: {Path(cfg.content).name} x {Path(cfg.style).name}",
                smoothing=0.0)  # fmt: skip
    return OptimizeResult(
        optimizer=cfg.optimizer, lr=lr, status=status, out=out, history=history,
        wall_s=time.perf_counter() - t0, device=str(device),
        vgg_weights=str(getattr(vgg, "weights_desc", cfg.vgg_weights)), error=error,
    )  # fmt: skip


def compare_optimizers(
    cfg: OptimizeConfig, optimizers: Sequence[str], lrs: dict[str, float] | None = None
) -> dict[str, Any]:
    """Run the same problem with several optimizers: OUT_<optimizer>.png/.csv each, then OUT.png (a
    labelled grid: content, style, each result) and OUT.loss.png (all loss curves on one plot)."""
    from PIL import Image

    from stylestream.train.sweep_report import labelled_grid, plot_loss_curves
    from stylestream.train.vgg import load_vgg

    out = Path(cfg.out)
    vgg = load_vgg(cfg.vgg_weights, device=str(devices.resolve(cfg.device)), seed=cfg.seed)
    results: dict[str, OptimizeResult] = {}
    for name in optimizers:
        sub = OptimizeConfig(**{**cfg.__dict__, "optimizer": name, "out": _out_path(out, f"_{name}.png"),
                                "lr": (lrs or {}).get(name, cfg.lr if len(optimizers) == 1 else None)})  # fmt: skip
        results[name] = optimize_image(sub, vgg=vgg)
        _out_path(out, f"_{name}.loss.png").unlink(missing_ok=True)  # the combined plot replaces these
    items = []
    for path, label in ((cfg.content, "content"), (cfg.style, "style")):
        with Image.open(path) as im:
            items.append((label, im.convert("RGB")))
    for name, r in results.items():
        with Image.open(r.out) as im:
            items.append((f"{name} {r.final_loss:.2e}" + ("" if r.status == "ok" else " (diverged)"),
                          im.convert("RGB")))  # fmt: skip
    labelled_grid(items, out, tile=min(384, cfg.image_size))
    curves = {}
    for name, r in results.items():
        steps = torch.tensor([h["step"] for h in r.history], dtype=torch.float64).numpy()
        totals = torch.tensor([h["total"] for h in r.history], dtype=torch.float64).numpy()
        curves[f"{name} (lr={r.lr:g}, {r.wall_s:.1f} s)"] = (steps, totals)
    plot_loss_curves(curves, _out_path(out, ".loss.png"), title="Per-image optimization: loss per optimizer",
                smoothing=0.0)  # fmt: skip
    return {"grid": out, "loss_plot": _out_path(out, ".loss.png"), "results": results}
