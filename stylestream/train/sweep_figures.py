"""The figures of a sweep report, as the study has them:

- grid.jpg and losses.png (Figs 3.1 and 3.2): every optimizer at the default setting (η 1e-3, bs 4, or
  the swept setting closest to it);
- grid_best.jpg and losses_best.png (Fig 3.3): every optimizer at its best setting;
- heatmaps/<optimizer>.png: eval loss over η x batch size, when the sweep searched more than one.

Every tile and curve is labelled with optimizer, η and batch size. Curves whose batch sizes differ are
plotted against images seen, so a run of batch 1 and one of batch 8 are compared at equal data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stylestream.train.figures import Curves, labelled_grid, plot_heatmap, plot_loss_curves
from stylestream.train.sweep_report import (
    RunResult,
    at_setting,
    default_setting,
    ranking,
    read_metrics,
)

GREY = (235, 235, 235)


def run_label(r: RunResult) -> str:
    return f"{r.optimizer}\nη={r.lr:g}, bs={r.batch_size}" + ("" if r.status == "ok" else f" [{r.status}]")


def loss_curves(sweep_dir: Path, runs: Sequence[RunResult]) -> tuple[Curves, str]:
    """Each run's total-loss curve against steps, or against images seen when the batch sizes differ;
    and the x-axis label."""
    by_images = len({r.batch_size for r in runs}) > 1
    curves: Curves = {}
    for r in runs:
        cols = read_metrics(sweep_dir / r.name / "metrics.csv")
        if not len(cols.get("total", ())):
            continue
        x = cols["step"]
        if by_images:  # metrics.csv counts images; older runs without the column: steps x batch size
            x = cols["images"] if "images" in cols else cols["step"] * r.batch_size
        curves[run_label(r).replace("\n", " ")] = (x, cols["total"])
    return curves, "images seen" if by_images else "step"


def result_grid(sweep_dir: Path, runs: Sequence[RunResult], content: Image.Image, style: Image.Image,
                path: Path) -> None:  # fmt: skip
    """Content, style, then each run's stylized content image (a grey tile where it has none)."""
    items: list[tuple[str, Image.Image | None]] = [("content", content), ("style", style)]
    for r in runs:
        img_path = sweep_dir / r.stylized if r.stylized else None
        if img_path is not None and img_path.is_file():
            with Image.open(img_path) as im:
                items.append((run_label(r), im.convert("RGB")))
        else:
            items.append((run_label(r), Image.new("RGB", content.size, GREY)))
    labelled_grid(items, path, columns=min(len(items), 5))


def heatmap(optimizer: str, runs: Sequence[RunResult], path: Path) -> None:
    """Eval loss (training loss value without an eval set) over η x bs; a run that is not "ok" is marked
    with its status (a collapsed run keeps its number: it finished, to a constant image)."""
    lrs = sorted({r.lr for r in runs}, reverse=True)
    bss = sorted({r.batch_size for r in runs})
    values = np.full((len(lrs), len(bss)), np.nan)
    marks: dict[tuple[int, int], str] = {}
    for r in runs:
        i, j = lrs.index(r.lr), bss.index(r.batch_size)
        v = r.value if r.status in ("ok", "collapsed") else None
        if v is not None and math.isfinite(v):
            values[i, j] = v
        if r.status != "ok":
            marks[(i, j)] = r.status
    which = "eval loss" if any(r.eval_loss is not None for r in runs) else "loss value"
    plot_heatmap(f"{optimizer}: {which}", lrs, bss, values, marks, path)


def write_figures(sweep_dir: Path, runs: Sequence[RunResult], meta: dict[str, Any],
                  content: Image.Image | None, style: Image.Image | None) -> dict[str, Path]:  # fmt: skip
    """The four figures (the grids only with a content and a style image) and the heat maps."""
    written: dict[str, Path] = {}
    order = {name: i for i, name in enumerate(meta.get("optimizers") or sorted({r.optimizer for r in runs}))}
    lr, bs = meta.get("default_setting") or default_setting([r.lr for r in runs], [r.batch_size for r in runs])
    sets = {
        "": sorted(at_setting(runs, lr, bs).values(), key=lambda r: order.get(r.optimizer, len(order))),
        "_best": ranking(runs),
    }
    random = "random" in str(meta.get("vgg_weights", ""))
    for suffix, chosen in sets.items():
        which = f"at η={lr:g}, bs={bs}" if not suffix else "at each one's best setting"
        curves, xlabel = loss_curves(sweep_dir, chosen)
        title = f"Training loss per optimizer, {which}" + (" (random VGG-16: not a result)" if random else "")
        written[f"losses{suffix}"] = sweep_dir / f"losses{suffix}.png"
        plot_loss_curves(curves, written[f"losses{suffix}"], title=title, xlabel=xlabel)
        if content is not None and style is not None:
            written[f"grid{suffix}"] = sweep_dir / f"grid{suffix}.jpg"
            result_grid(sweep_dir, chosen, content, style, written[f"grid{suffix}"])
    if len({r.lr for r in runs}) > 1 or len({r.batch_size for r in runs}) > 1:
        for opt in sorted({r.optimizer for r in runs}, key=lambda o: order.get(o, len(order))):
            written[f"heatmap {opt}"] = sweep_dir / "heatmaps" / f"{opt}.png"
            heatmap(opt, [r for r in runs if r.optimizer == opt], written[f"heatmap {opt}"])
    return written
