"""Several per-image optimizations of one problem, side by side: `stylestream optimize --compare
lbfgs,adam:5,...` (optimizers, each at its own or its family's default lr) and `--lrs 0.1,1,5,...`
(seed 001's learning-rate study: one optimizer at several lrs; with --save-every, the grid shows each
run's image at every saved step, e.g. 500 vs 2000 iterations).

Writes OUT_<run>.png/.csv per run, OUT.png (a labelled grid: content and style, then one column per run,
one row per saved step and a last row with the image written) and OUT.loss.png (every run's loss
curve on one plot)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from stylestream import devices
from stylestream.train.optimize import (
    OptimizeConfig,
    OptimizeResult,
    check_config,
    load_loss,
    loss_curve,
    optimize_image,
    out_path,
)

log = logging.getLogger(__name__)

Plan = Sequence[tuple[str, float | None]]  # (optimizer, lr or None for its default)


@dataclass
class StudyResult:
    grid: Path
    loss_plot: Path
    results: list[OptimizeResult]


def run_tag(optimizer: str, lr: float | None, plan: Plan) -> str:
    """A run's file suffix: the optimizer's name, plus its lr when the plan has it more than once."""
    if sum(1 for name, _ in plan if name == optimizer) > 1:
        return f"{optimizer}_lr{lr:g}"
    return optimizer


def run_study(cfg: OptimizeConfig, plan: Plan) -> StudyResult:
    """Every (optimizer, lr) of `plan` on the problem of `cfg` (one VGG load for all), then the grid and
    the loss plot. Every run's settings are checked before the first starts."""
    from stylestream.train.figures import labelled_grid, plot_loss_curves
    from stylestream.train.vgg import weights_notice

    if not plan:
        raise ValueError("give at least one optimizer")
    tags = [run_tag(name, lr, plan) for name, lr in plan]
    if len(set(tags)) != len(tags):
        raise ValueError(f"a run is listed twice: {', '.join(t for t in tags if tags.count(t) > 1)}")
    out = Path(cfg.out)
    configs = [dataclasses.replace(cfg, optimizer=name, lr=lr, out=out_path(out, f"_{tag}.png"))
               for (name, lr), tag in zip(plan, tags)]  # fmt: skip
    for c in configs:
        check_config(c)
    vgg = load_loss(cfg, devices.resolve(cfg.device))
    weights_notice(vgg)
    results = []
    for i, c in enumerate(configs, 1):
        log.info("run %d/%d: %s", i, len(configs), c.optimizer)
        r = optimize_image(c, vgg=vgg)
        out_path(c.out, ".loss.png").unlink(missing_ok=True)  # the combined plot replaces these
        results.append(r)

    # tiles of at least 160 px, so labels fit even under tiny images
    labelled_grid(_grid_items(cfg, results), out, tile=min(256, max(160, cfg.image_size)), columns=max(2, len(results)))
    curves = {f"{r.label} ({r.wall_s:.0f} s)" + ("" if r.status == "ok" else f" [{r.status}]"): loss_curve(r)
              for r in results}  # fmt: skip
    loss_plot = out_path(out, ".loss.png")
    plot_loss_curves(curves, loss_plot, smoothing=0.0, xlabel="step (loss evaluations)",
                     title=f"Per-image optimization: {Path(cfg.content).name} × {Path(cfg.style).name}, "
                           f"{cfg.image_size} px, loss {cfg.loss}")  # fmt: skip
    return StudyResult(out, loss_plot, results)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def _grid_items(cfg: OptimizeConfig, results: list[OptimizeResult]) -> list[tuple[str, Image.Image | None]]:
    """Row 1: content and style; a row per saved step (the best image so far); a last row with each run's
    image as written, its loss and status. None leaves a tile empty."""
    cols = max(2, len(results))
    items: list[tuple[str, Image.Image | None]] = [("content", _open(cfg.content)), ("style", _open(cfg.style))]
    items += [("", None)] * (cols - 2)
    for step in sorted({s for r in results for s in r.snapshots if s < cfg.steps}):  # the last row shows the end
        for r in results:
            path = r.snapshots.get(step)
            items.append((f"{r.label}\nstep {step}", _open(path)) if path else ("", None))
        items += [("", None)] * (cols - len(results))
    for r in results:
        status = "" if r.status == "ok" else f" [{r.status}]"
        items.append((f"{r.label}\nloss {r.final_loss:.3g} (step {r.best_step}){status}", _open(r.out)))
    return items
