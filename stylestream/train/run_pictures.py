"""Pictures of a run: the loss curves (losses.png) and content/stylized sample grids (samples.jpg)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from stylestream.train.figures import wrap_title
from stylestream.train.images import save_image


def plot_losses(rows: list[dict[str, str]], path: str | os.PathLike, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, height_ratios=(3, 1))
    for key in ("total", "content", "style", "tv", "temporal"):
        values = [float(r.get(key) or 0) for r in rows]  # runs written before a term existed lack its column
        if any(values):
            ax.plot(steps, values, label=key, lw=1)
    ax.set_yscale("log")
    ax.set_ylabel("weighted loss")
    ax.legend()
    ax.set_title(wrap_title(title, 7))
    ax_lr.plot(steps, [float(r["lr"]) for r in rows], color="gray", lw=1)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(Path(path), dpi=100)
    plt.close(fig)


def sample_grid(content: torch.Tensor, stylized: torch.Tensor, path: str | os.PathLike) -> None:
    """Top row: content images; bottom row: the network's output for them (clamped to [0, 255] by the
    caller, as images leave the model: stylestream.train.monitor.stylize)."""
    from torchvision.utils import make_grid

    grid = make_grid(
        torch.cat([content, stylized]).float().cpu(), nrow=content.shape[0], padding=4, pad_value=255
    )
    save_image(grid, path)
