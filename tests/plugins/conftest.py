"""Fixtures: tiny real models (.pt and the matching .onnx exported here), isolated plugin folders."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from stylestream.models import build_model, save_model

# small enough for 2 CPU cores; both architectures so both export paths are covered
TINY = {"lite": {"width": 8, "res_blocks": 1}, "johnson": {"width": 8, "res_blocks": 1}}


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's spurious instance_norm warning
        torch.onnx.export(
            model, torch.rand(1, 3, 64, 64) * 255, str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}},
        )  # fmt: skip


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """NAME.pt + NAME.onnx for each tiny architecture, seeded random weights (not a trained style)."""
    d = tmp_path_factory.mktemp("models")
    for i, (arch, cfg) in enumerate(TINY.items()):
        torch.manual_seed(i)
        model = build_model(arch, **cfg).eval()
        save_model(model, d / f"{arch}.pt")
        export_onnx(model, d / f"{arch}.onnx")
    return d


@pytest.fixture(autouse=True)
def isolated_user_dir(tmp_path, monkeypatch) -> Path:
    """Point the default user plugin folder at an empty temp folder: tests never see ~/.local."""
    d = tmp_path / "user-plugins"
    monkeypatch.setenv("STYLESTREAM_PLUGINS", str(d))
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """The .pt -> ONNX conversion cache goes to a temp folder, never ~/.cache."""
    d = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(d))
    return d


@pytest.fixture
def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def photo(media) -> np.ndarray:
    """A real photo, small: (1, 96, 128, 3)."""
    import cv2

    img = cv2.imread(str(media / "content" / "chicago.jpg"))
    assert img is not None
    return cv2.resize(img, (128, 96), interpolation=cv2.INTER_AREA)[None, ..., ::-1].copy()
