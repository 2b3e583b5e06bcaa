"""`stylestream optimize`: per-image optimization with L-BFGS and Adam on a real photo, random VGG."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from PIL import Image

from stylestream.cli import main

TINY = ["--vgg-weights", "random", "--image-size", "48", "--no-progress"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_lbfgs_adam_lowers_the_loss_and_keeps_the_aspect(media, tmp_path, capsys):
    content = media / "content" / "chicago.jpg"  # 712 x 474
    out = tmp_path / "cmp.png"
    code = main(["optimize", str(content), str(media / "styles" / "mosaic.jpg"), "-o", str(out),
                 "--compare", "lbfgs,adam", "--steps", "8", *TINY])  # fmt: skip
    assert code == 0
    with Image.open(content) as im:
        aspect = im.width / im.height
    for name in ("lbfgs", "adam"):
        with Image.open(tmp_path / f"cmp_{name}.png") as im:
            assert max(im.size) == 48 and im.width / im.height == pytest.approx(aspect, rel=0.03)
        hist = rows(tmp_path / f"cmp_{name}.csv")
        assert [int(float(r["step"])) for r in hist] == list(range(1, 9))  # a step = one evaluation
        totals = [float(r["total"]) for r in hist]
        assert totals[-1] < 0.8 * totals[0], name
    with Image.open(out) as grid:  # content, style, lbfgs, adam
        assert grid.size[0] > grid.size[1] and grid.format == "PNG"
    with Image.open(tmp_path / "cmp.loss.png") as plot:
        assert plot.format == "PNG"
    printed = capsys.readouterr().out
    assert "lbfgs" in printed and "adam" in printed and "random" in printed


def test_save_every_writes_intermediate_images(media, tmp_path):
    out = tmp_path / "o.png"
    assert main(["optimize", str(media / "content" / "tubingen.jpg"), str(media / "styles" / "candy.jpg"),
                 "-o", str(out), "--optimizer", "adam", "--lr", "5", "--steps", "4", "--save-every", "2",
                 *TINY]) == 0  # fmt: skip
    for f in ("o.png", "o_00002.png", "o_00004.png", "o.loss.png", "o.csv"):
        assert (tmp_path / f).is_file(), f
    assert len(rows(tmp_path / "o.csv")) == 4


def test_bad_inputs_are_clear_errors(media, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(bad), str(media / "styles" / "candy.jpg"), "-o", str(tmp_path / "x.png"), *TINY])
    assert exc.value.code == 2 and "broken.jpg: not a readable image" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["optimize", str(media / "content" / "tubingen.jpg"), str(media / "styles" / "candy.jpg"),
              "-o", str(tmp_path / "x.png"), "--compare", "adam,lbfgz", *TINY])  # fmt: skip
    assert exc.value.code == 2 and "unknown optimizer 'lbfgz'" in capsys.readouterr().err
