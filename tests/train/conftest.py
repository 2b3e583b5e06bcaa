"""Fixtures for the training tests: tiny copies of the real content photos, a real style image and a
seeded random-weight VGG-16 (ImageNet weights cannot be downloaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from stylestream.train.config import TrainConfig
from stylestream.train.vgg import load_vgg


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and on a shared CPU two spinning threads per
    process made these tests 10-20x slower; restored afterwards for the other test folders."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_data(media: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six real photos shrunk to ~40 px, two of them in a nested folder: the shipped content photos,
    plus the left halves of the first ones to make six (the tests count 3 batches of 2 per epoch)."""
    root = tmp_path_factory.mktemp("data")
    photos = sorted((media / "content").glob("*.jpg"))
    sources = [(p, p.stem, False) for p in photos] + [(p, f"{p.stem}_left", True) for p in photos]
    for i, (src, name, left_half) in enumerate(sources[:6]):
        dest = root / ("nested/deeper" if i % 3 == 0 else "") / f"{name}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as img:
            img = img.convert("RGB")
            if left_half:
                img = img.crop((0, 0, img.width // 2, img.height))
            img.resize((48, 40)).save(dest, quality=90)
    (root / "nested" / "notes.txt").write_text("not an image: ignored")
    return root


@pytest.fixture(scope="session")
def style_path(media: Path) -> Path:
    return media / "styles" / "mosaic.jpg"


@pytest.fixture(scope="session")
def vgg():
    return load_vgg("random", seed=0)


@pytest.fixture
def make_cfg(tiny_data: Path, style_path: Path, tmp_path: Path):
    def make(**kw) -> TrainConfig:
        base = {"style": str(style_path), "data": str(tiny_data), "out": str(tmp_path / "run"),
                "image_size": 32, "batch_size": 2, "steps": 4, "vgg_weights": "random", "amp": False,
                "progress": False, "checkpoint_every": 100, "log_every": 1}  # fmt: skip
        base.update(kw)
        return TrainConfig(**base)

    return make
