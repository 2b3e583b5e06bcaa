"""The pictures the optimizer studies leave: loss curves on one log-scale plot, a labelled grid of
images, and a heat map of a loss over learning rate x batch size. Every label is drawn whole (titles
and grid labels wrap instead of running off the edge) and every number on a heat map is written in the
colour that contrasts with its cell."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # label -> (x, values)
LOSS_PLOT_WIDTH_IN = 10.5  # 8 for the plot, the rest for the legend beside it


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


def wrap_title(title: str, fig_width_in: float, fontsize: float = 12.0) -> str:
    """`title` broken into lines that fit a figure `fig_width_in` inches wide (about 0.55 em a glyph)."""
    chars = max(20, int(fig_width_in * 72 / (fontsize * 0.55)) - 4)
    return "\n".join(textwrap.wrap(title, chars)) if title else ""


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def auto_smoothing(curves: Curves) -> float:
    """0.9 (TensorBoard's usual) from 200 points on, less for shorter curves, none under 20: a moving
    average over a few dozen points mostly lags behind them."""
    n = max((len(v) for _, v in curves.values()), default=0)
    return max(0.0, min(0.9, 1.0 - 20.0 / n)) if n else 0.0


def plot_loss_curves(curves: Curves, path: str | os.PathLike, title: str = "Training loss per optimizer",
                     smoothing: float | None = None, ylabel: str = "total loss (log scale)",
                     xlabel: str = "step") -> None:  # fmt: skip
    """Labelled (x, values) curves, raw faint and smoothed solid (smoothing 0: raw only; None: by
    length, auto_smoothing), on one log-scale plot (the study's Fig 3.2)."""
    plt = _pyplot()
    smoothing = auto_smoothing(curves) if smoothing is None else smoothing
    fig, ax = plt.subplots(figsize=(LOSS_PLOT_WIDTH_IN, 5), dpi=100)
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20")
    for i, (label, (x, values)) in enumerate(curves.items()):
        color = cmap(i % cmap.N)
        good = np.isfinite(values) & (values > 0)
        if smoothing > 0:
            ax.plot(x[good], values[good], color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, smooth(values, smoothing), color=color, linewidth=1.8, label=label)
        else:
            ax.plot(x[good], values[good], color=color, linewidth=1.5, label=label)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(wrap_title(title, LOSS_PLOT_WIDTH_IN - 2.5))
    ax.grid(True, which="both", alpha=0.3)
    if curves:  # beside the plot, where it hides no curve
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ---------------------------------------------------------------- labelled grid

PAD = 8


def _font(size: int) -> ImageFont.ImageFont:
    """DejaVu Sans (shipped with matplotlib; Pillow's default font has no η), else Pillow's default."""
    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        pass
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


def _wrap(label: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """The label's lines (it may hold newlines), each broken at spaces to fit `width` pixels."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    for part in label.split("\n"):
        line = ""
        for word in part.split(" "):
            trial = f"{line} {word}" if line else word
            if line and draw.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return lines


def label_lines(labels: Sequence[str], tile: int, size: int) -> tuple[ImageFont.ImageFont, list[list[str]]]:
    """The largest font up to `size` px at which every label's longest word fits a tile, and each
    label's wrapped lines at that size."""
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    words = [w for label in labels for w in label.replace("\n", " ").split(" ") if w]
    while size > 8 and any(draw.textlength(w, font=_font(size)) > tile for w in words):
        size -= 1
    font = _font(size)
    return font, [_wrap(label, font, tile) for label in labels]


def _line_height(font: ImageFont.ImageFont) -> int:
    return round(font.size * 1.25) if hasattr(font, "size") else 14


def label_height(labels: Sequence[str], tile: int, font_size: int = 16) -> int:
    """Pixels under each tile of a labelled grid: room for the label with the most lines."""
    font, lines = label_lines(labels, tile, font_size)
    return max(1, max((len(ls) for ls in lines), default=1)) * _line_height(font) + 6


def grid_layout(n: int, tile: int, label_h: int, columns: int | None = None) -> tuple[int, int, int]:
    """(columns, width, height) of a grid of n tiles with label_h pixels of label under each."""
    cols = columns or min(n, 5)
    rows = math.ceil(n / cols)
    return cols, PAD + cols * (tile + PAD), PAD + rows * (tile + label_h + PAD)


def tile_box(i: int, cols: int, tile: int, label_h: int) -> tuple[int, int, int, int]:
    """Pixel box (left, top, right, bottom) of tile i in a labelled grid."""
    x = PAD + (i % cols) * (tile + PAD)
    y = PAD + (i // cols) * (tile + label_h + PAD)
    return x, y, x + tile, y + tile


def labelled_grid(items: Sequence[tuple[str, Image.Image | None]], path: str | os.PathLike, tile: int = 256,
                  columns: int | None = None, font_size: int = 16) -> tuple[Image.Image, int]:  # fmt: skip
    """Tiles in reading order, each with its (wrapped, never clipped) label underneath; an item whose
    image is None leaves its tile empty (the study's Figs 3.1 and 3.3). Returns the picture and the
    label height, for tile_box."""
    font, lines = label_lines([label for label, _ in items], tile, font_size)
    line_h = _line_height(font)
    label_h = label_height([label for label, _ in items], tile, font_size)
    cols, width, height = grid_layout(len(items), tile, label_h, columns)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for i, ((_, img), text) in enumerate(zip(items, lines)):
        if img is None:
            continue
        x, y, _, _ = tile_box(i, cols, tile, label_h)
        canvas.paste(_fit(img, tile), (x, y))
        for k, line in enumerate(text):
            draw.text((x + tile // 2, y + tile + 3 + k * line_h), line, fill="black", font=font, anchor="ma")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=92)
    return canvas, label_h


# ---------------------------------------------------------------- heat map


def relative_luminance(rgb: Sequence[float]) -> float:
    """WCAG 2 relative luminance of an sRGB colour with channels in [0, 1]."""
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    """WCAG 2 contrast ratio of two colours (1 to 21; 4.5 is the floor for normal text)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def text_color(background: Sequence[float]) -> str:
    """Black or white, whichever contrasts more with `background` (always >= 4.58:1)."""
    return "black" if contrast_ratio(background, (0, 0, 0)) >= contrast_ratio(background, (1, 1, 1)) else "white"


def plot_heatmap(title: str, lrs: Sequence[float], batch_sizes: Sequence[int], values: np.ndarray,
                 marks: dict[tuple[int, int], str], path: str | os.PathLike) -> None:  # fmt: skip
    """values[i, j] (NaN where a run has no value) for lrs[i] x batch_sizes[j] on a log colour scale,
    each cell's number in black or white, whichever contrasts with the cell; `marks` name what happened
    to a cell's run (diverged, collapsed, ...) in dark red on grey."""
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(2.6 + 1.4 * len(batch_sizes), 1.8 + 0.7 * len(lrs)), dpi=100)
    ax.set_facecolor("#d9d9d9")  # cells without a value
    finite = values[np.isfinite(values) & (values > 0)]
    norm = LogNorm(finite.min(), max(finite.max(), finite.min() * 1.0001)) if finite.size else None
    im = ax.imshow(np.ma.masked_invalid(values), cmap="viridis_r", norm=norm, aspect="auto")
    ax.set_xticks(range(len(batch_sizes)), [str(b) for b in batch_sizes])
    ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
    ax.set_xlabel("batch size")
    ax.set_ylabel("learning rate η")
    ax.set_title(wrap_title(title, 2.6 + 1.4 * len(batch_sizes), 11), fontsize=11)
    for (i, j), v in np.ndenumerate(values):
        mark = marks.get((i, j))
        if math.isfinite(v):
            color = text_color(im.cmap(im.norm(v)))
            text = f"{v:.2e}" + (f"\n{mark}" if mark else "")
        else:
            color, text = "#8b0000", mark or ""
        ax.text(j, i, text, ha="center", va="center", fontsize=9, color=color)
    if norm is not None:
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
