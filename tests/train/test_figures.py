"""The pictures people look at: heat-map numbers readable on every cell, grid labels and plot titles whole."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image, ImageDraw

from stylestream.train.figures import (
    contrast_ratio,
    label_height,
    label_lines,
    labelled_grid,
    plot_heatmap,
    text_color,
)


def test_heatmap_text_contrasts_with_every_colour_of_the_map():
    """WCAG's 4.5:1 for normal text, on every colour the heat map can give a cell."""
    cmap = matplotlib.colormaps["viridis_r"]
    for i in range(256):
        cell = cmap(i / 255)
        ink = (0, 0, 0) if text_color(cell) == "black" else (1, 1, 1)
        assert contrast_ratio(cell, ink) >= 4.5, (i, cell)
    assert contrast_ratio((0.851, 0.851, 0.851), (0.545, 0, 0)) >= 4.5  # status marks on empty cells
    assert text_color((1, 1, 0.2)) == "black" and text_color((0.27, 0.0, 0.33)) == "white"


def test_heatmap_draws_values_and_marks(tmp_path):
    values = np.array([[2.6e4, np.nan], [1.4e5, 9e4]])
    plot_heatmap("adam: eval loss", [0.01, 0.001], [1, 2], values, {(0, 1): "diverged", (1, 1): "collapsed"},
                 tmp_path / "h.png")  # fmt: skip
    with Image.open(tmp_path / "h.png") as im:
        arr = np.asarray(im.convert("RGB")).astype(int)
    dark_red = (np.abs(arr - [139, 0, 0]).sum(axis=2) < 60).sum()
    assert dark_red > 20  # "diverged" written on its grey cell


def test_grid_labels_wrap_to_the_tile_and_the_grid_makes_room_for_them(tmp_path):
    labels = ["content", "lookahead-adamax\nη=0.0001, bs=8 [diverged]", "sgd η=2.89e+03 (auto) loss 9.97e+01 (step 60)"]
    tile = 160
    font, lines = label_lines(labels, tile, 16)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for text in lines:
        for line in text:
            assert draw.textlength(line, font=font) <= tile, line
    assert [w for text in lines for line in text for w in line.split()] == [w for label in labels for w in label.split()]
    items = [(label, Image.new("RGB", (200, 150), (30, 90, 200))) for label in labels]
    canvas, label_h = labelled_grid(items, tmp_path / "g.png", tile=tile)
    assert label_h == label_height(labels, tile) and label_h >= max(len(t) for t in lines) * 16
    arr = np.asarray(canvas.convert("L"))
    assert (arr[-4:] > 250).all() and (arr[:, -4:] > 250).all()  # nothing drawn into the margins


@pytest.mark.parametrize("long_title", [False, True])
def test_run_loss_plot_title_is_not_cut_off(tmp_path, long_title):
    from stylestream.train.run_pictures import plot_losses

    rows = [{"step": str(i), "total": str(100 / i), "content": str(40 / i), "style": str(60 / i), "tv": "0",
             "lr": "0.001"} for i in range(1, 6)]  # fmt: skip
    title = "johnson / adam / lr 0.001" + (" (random VGG-16: smoke test, not a trained style)" if long_title else "")
    plot_losses(rows, tmp_path / "l.png", title=title)
    with Image.open(tmp_path / "l.png") as im:
        top = np.asarray(im.convert("L"))[:60]
    assert (top[:, -3:] > 200).all()  # no title ink at the right edge
