"""The optimizer-study report of a sweep: report.md (the study's Table 1 columns plus the content/style
split, status and ranking, and a fairness statement), report.json (the same data), losses.png (every
optimizer's smoothed loss curve on one log-scale plot, the study's Fig 3.2), grid.jpg (content, style
and each optimizer's stylized content image, labelled, Fig 3.1) and one heat map per optimizer (eval
loss over learning rate x batch size) when the sweep searched a grid.

Everything here reads the run directories (metrics.csv, card.json), so a report can be rebuilt from a
finished or half-finished sweep folder at any time."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

TAIL_FRACTION = 0.05  # the "loss value" of a run: mean total loss over the last 5% of its steps
STATUSES = ("ok", "diverged", "crashed", "pending")


@dataclass
class RunResult:
    """One (optimizer, learning rate, batch size) run of a sweep, as the report shows it."""

    name: str  # "<optimizer>/lr<lr>-bs<bs>", also the run directory relative to the sweep folder
    optimizer: str
    lr: float
    batch_size: int
    status: str = "pending"
    steps: int = 0  # optimizer steps taken
    total_steps: int = 0  # steps planned
    loss: float | None = None  # tail mean of the total training loss
    content: float | None = None
    style: float | None = None
    tv: float | None = None
    eval_loss: float | None = None  # mean total loss on the held-out images
    eval_content: float | None = None
    eval_style: float | None = None
    train_time_s: float | None = None
    error: str | None = None  # why a run diverged or crashed
    stylized: str | None = None  # the run's stylized content image, relative to the sweep folder
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        """What the best setting is chosen by: eval loss, else (no eval set) the training loss value."""
        v = self.eval_loss if self.eval_loss is not None else self.loss
        return v if v is not None and math.isfinite(v) and self.status == "ok" else math.inf

    def to_json(self) -> dict[str, Any]:
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def run_name(optimizer: str, lr: float, batch_size: int) -> str:
    return f"{optimizer}/lr{lr:g}-bs{batch_size}"


# ---------------------------------------------------------------- metrics.csv


def read_metrics(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """metrics.csv as columns of floats (empty cells -> NaN). A missing file reads as no rows."""
    path = Path(path)
    if not path.is_file():
        return {}
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    cols: dict[str, np.ndarray] = {}
    for key in rows[0]:
        vals = []
        for r in rows:
            try:
                vals.append(float(r.get(key) or "nan"))
            except ValueError:
                vals.append(math.nan)
        cols[key] = np.asarray(vals, dtype=np.float64)
    return cols


def tail_means(cols: dict[str, np.ndarray], fraction: float = TAIL_FRACTION) -> dict[str, float]:
    """Mean of each loss term over the last `fraction` of the logged steps (at least one row)."""
    total = cols.get("total")
    if total is None or len(total) == 0:
        return {}
    n = max(1, math.ceil(len(total) * fraction))
    return {term: float(np.mean(cols[term][-n:])) for term in ("total", "content", "style", "tv") if term in cols}


def smooth(values: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); NaN/inf end the curve."""
    out = np.full(len(values), np.nan)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            break
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


# ---------------------------------------------------------------- choosing and ranking


def best_per_optimizer(runs: Iterable[RunResult]) -> dict[str, RunResult]:
    """Per optimizer, the finished run with the lowest eval loss; an optimizer whose runs all failed
    keeps its first run so the report can still say what happened to it."""
    best: dict[str, RunResult] = {}
    for r in runs:
        cur = best.get(r.optimizer)
        if cur is None or r.score < cur.score:
            best[r.optimizer] = r
    return best


def ranking(runs: Iterable[RunResult]) -> list[RunResult]:
    """Best run per optimizer, best optimizer first; optimizers without a finished run come last."""
    return sorted(best_per_optimizer(runs).values(), key=lambda r: (r.score, r.optimizer))


# ---------------------------------------------------------------- report.md / report.json


def _fmt(v: float | None, spec: str = ".3e") -> str:
    return "–" if v is None or not math.isfinite(v) else format(v, spec)


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def fairness_statement(meta: dict[str, Any]) -> str:
    seed = meta.get("seed", "?")
    parts = [
        (f"Every run started from the same initial weights (architecture `{meta.get('arch', '?')}`, "
         f"seed {seed}) and saw the same training images in the same order (data seed {seed}; "
         f"{meta.get('train_images', '?')} training images)."),
        (f"The loss value is the mean total training loss over the last {TAIL_FRACTION:.0%} of a run's "
         "steps; the eval loss is the mean total loss on "
         f"{meta.get('eval_images', '?')} held-out images ({meta.get('eval_source', 'a split of the data')}) "
         "that no run trained on, and the best setting per optimizer is chosen by eval loss."),
        "All runs use the same loss weights, image size, step budget, VGG weights and device.",
    ]
    if meta.get("lockstep"):
        parts.append(
            "Runs sharing a batch size were trained in lockstep in one process (one data loader and one "
            "content-target VGG pass per batch shared by all of them); a run's training time is the "
            "compute spent on that run plus an equal share of the shared work."
        )
    return " ".join(parts)


def markdown_report(runs: Sequence[RunResult], meta: dict[str, Any], images: dict[str, str]) -> str:
    ranked = ranking(runs)
    lines = ["# Optimizer sweep", ""]
    if "random" in str(meta.get("vgg_weights", "")):
        lines += [
            ("> **Random VGG-16 weights** (a test/plumbing run): these losses and images say nothing "
             "about the optimizers' quality as style-transfer trainers."),
            "",
        ]
    setting = ", ".join(
        f"{k}: {meta[k]}"
        for k in ("style", "data", "steps_per_run", "image_size", "arch", "device", "vgg_weights",
                  "content_weight", "style_weight", "tv_weight")
        if k in meta
    )  # fmt: skip
    lines += [f"Setting: {setting}.", "", "## Fairness", "", fairness_statement(meta), ""]
    lines += [
        "## Best setting per optimizer (Table 1)",
        "",
        "| rank | optimizer | η | bs | loss value | content | style | eval loss | training time | status |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, r in enumerate(ranked, 1):
        rank = str(i) if r.status == "ok" else "–"
        lines.append(
            f"| {rank} | {r.optimizer} | {r.lr:g} | {r.batch_size} | {_fmt(r.loss)} | {_fmt(r.content)} | "
            f"{_fmt(r.style)} | {_fmt(r.eval_loss)} | {_fmt_time(r.train_time_s)} | {r.status} |"
        )
    ok = [r for r in ranked if r.status == "ok"]
    if ok:
        lines += ["", "Ranking (by eval loss, lower is better): " + " < ".join(r.optimizer for r in ok) + "."]
    failed = [r for r in runs if r.status in ("diverged", "crashed", "pending")]
    if failed:
        lines += ["", "## Runs that did not finish", ""]
        lines += [f"- `{r.name}`: {r.status} at step {r.steps}/{r.total_steps}" + (f": {r.error}" if r.error else "")
                  for r in failed]  # fmt: skip
    if len(runs) > len(ranked):
        lines += [
            "",
            "## All runs",
            "",
            "| run | loss value | content | style | eval loss | steps | training time | status |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in sorted(runs, key=lambda r: (r.optimizer, r.lr, r.batch_size)):
            lines.append(
                f"| `{r.name}` | {_fmt(r.loss)} | {_fmt(r.content)} | {_fmt(r.style)} | {_fmt(r.eval_loss)} "
                f"| {r.steps}/{r.total_steps} | {_fmt_time(r.train_time_s)} | {r.status} |"
            )
    if images:
        lines += ["", "## Figures", ""]
        lines += [f"![{label}]({path})" for label, path in images.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- pictures


def plot_loss_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike,
                     title: str = "Training loss per optimizer", smoothing: float = 0.9,
                     ylabel: str = "total loss (log scale)") -> None:
    """Labelled (steps, values) curves, raw faint and smoothed solid, on one log-scale plot (Fig 3.2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for i, (label, (steps, values)) in enumerate(curves.items()):
        color = cmap(i % cmap.N)
        good = np.isfinite(values) & (values > 0)
        ax.plot(steps[good], values[good], color=color, alpha=0.25, linewidth=0.8)
        ax.plot(steps, smooth(values, smoothing), color=color, linewidth=1.8, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if curves:
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def _fit(img: Image.Image, tile: int) -> Image.Image:
    """Scale to fit a tile x tile square, keeping the aspect, centred on white."""
    img = img.convert("RGB")
    scale = tile / max(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (tile, tile), "white")
    canvas.paste(img.resize((w, h), Image.Resampling.LANCZOS), ((tile - w) // 2, (tile - h) // 2))
    return canvas


def grid_layout(n: int, tile: int, label_h: int = 28, pad: int = 8,
                columns: int | None = None) -> tuple[int, int, int]:  # fmt: skip
    """(columns, width, height) of a labelled grid of n tiles."""
    cols = columns or min(n, 5)
    rows = math.ceil(n / cols)
    return cols, pad + cols * (tile + pad), pad + rows * (tile + label_h + pad)


def tile_box(i: int, cols: int, tile: int, label_h: int = 28, pad: int = 8) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of tile i in a labelled grid."""
    x = pad + (i % cols) * (tile + pad)
    y = pad + (i // cols) * (tile + label_h + pad)
    return x, y, x + tile, y + tile


def labelled_grid(items: Sequence[tuple[str, Image.Image]], path: str | os.PathLike, tile: int = 256,
                  columns: int | None = None, label_h: int = 28, pad: int = 8) -> Image.Image:
    """Tiles in reading order, each with its label underneath (Figs 3.1/3.3 of the study)."""
    cols, width, height = grid_layout(len(items), tile, label_h, pad, columns)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, label_h - 12))
    for i, (label, img) in enumerate(items):
        x, y, _, _ = tile_box(i, cols, tile, label_h, pad)
        canvas.paste(_fit(img, tile), (x, y))
        text = label
        while len(text) > 1 and draw.textlength(text, font=font) > tile:
            text = text[:-2] + "…"
        draw.text((x + tile // 2, y + tile + label_h // 2), text, fill="black", font=font, anchor="mm")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=92)
    return canvas


def plot_heatmap(optimizer: str, runs: Sequence[RunResult], path: str | os.PathLike) -> None:
    """Eval loss (training loss value without an eval set) over learning rate x batch size for one
    optimizer; failed cells are marked with their status."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    lrs = sorted({r.lr for r in runs}, reverse=True)
    bss = sorted({r.batch_size for r in runs})
    grid = np.full((len(lrs), len(bss)), np.nan)
    marks: dict[tuple[int, int], str] = {}
    for r in runs:
        i, j = lrs.index(r.lr), bss.index(r.batch_size)
        if math.isfinite(r.score):
            grid[i, j] = r.score
        else:
            marks[(i, j)] = r.status
    fig, ax = plt.subplots(figsize=(2.4 + 1.3 * len(bss), 1.6 + 0.7 * len(lrs)), dpi=100)
    finite = grid[np.isfinite(grid) & (grid > 0)]
    norm = LogNorm(finite.min(), max(finite.max(), finite.min() * 1.0001)) if finite.size else None
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", norm=norm, aspect="auto")
    ax.set_xticks(range(len(bss)), [str(b) for b in bss])
    ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_xlabel("batch size")
    ax.set_ylabel("learning rate η")
    which = "eval loss" if any(r.eval_loss is not None for r in runs) else "loss value"
    ax.set_title(f"{optimizer}: {which}")
    for (i, j), v in np.ndenumerate(grid):
        text = f"{v:.2e}" if math.isfinite(v) else marks.get((i, j), "")
        ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if math.isfinite(v) else "red")
    if norm is not None:
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- the whole report


def write_report(sweep_dir: str | os.PathLike, runs: Sequence[RunResult], meta: dict[str, Any],
                 content: Image.Image | None = None, style: Image.Image | None = None) -> dict[str, Path]:
    """Write report.md, report.json, losses.png, grid.jpg (when a content and a style image are given)
    and heatmaps/<optimizer>.png (when the sweep searched more than one lr or batch size). Returns the
    paths written."""
    sweep_dir = Path(sweep_dir)
    written: dict[str, Path] = {}
    best = {r.optimizer: r for r in ranking(runs)}

    curves = {}
    for opt, r in best.items():
        cols = read_metrics(sweep_dir / r.name / "metrics.csv")
        if len(cols.get("total", ())):
            label = f"{opt} (η={r.lr:g}, bs={r.batch_size})" + ("" if r.status == "ok" else f" [{r.status}]")
            curves[label] = (cols["step"], cols["total"])
    written["losses"] = sweep_dir / "losses.png"
    plot_loss_curves(curves, written["losses"])

    if content is not None and style is not None:
        items: list[tuple[str, Image.Image]] = [("content", content), ("style", style)]
        for opt, r in best.items():
            img_path = sweep_dir / r.stylized if r.stylized else None
            if img_path is not None and img_path.is_file() and r.status == "ok":
                with Image.open(img_path) as im:
                    items.append((opt, im.convert("RGB")))
            else:
                items.append((f"{opt} ({r.status})", Image.new("RGB", content.size, (235, 235, 235))))
        written["grid"] = sweep_dir / "grid.jpg"
        labelled_grid(items, written["grid"], columns=min(len(items), 5))

    if len({r.lr for r in runs}) > 1 or len({r.batch_size for r in runs}) > 1:
        for opt in sorted({r.optimizer for r in runs}):
            p = sweep_dir / "heatmaps" / f"{opt}.png"
            plot_heatmap(opt, [r for r in runs if r.optimizer == opt], p)
            written[f"heatmap {opt}"] = p

    images = {k: str(p.relative_to(sweep_dir)) for k, p in written.items()}
    written["md"] = sweep_dir / "report.md"
    written["md"].write_text(markdown_report(runs, meta, images))
    payload = {
        "meta": meta,
        "fairness": fairness_statement(meta),
        "tail_fraction": TAIL_FRACTION,
        "ranking": [r.optimizer for r in ranking(runs) if r.status == "ok"],
        "best": {opt: r.name for opt, r in best.items()},
        "runs": [r.to_json() for r in runs],
        "figures": images,
    }
    written["json"] = sweep_dir / "report.json"
    written["json"].write_text(json.dumps(payload, indent=2, default=str))
    log.info("sweep report written to %s", written["md"])
    return written
