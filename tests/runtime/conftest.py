"""Fixtures: one tiny style saved in every file kind the runtime serves (.pt, .onnx, .torchscript), all
from the same weights, and a private cache folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch


@dataclass(frozen=True)
class StyleFiles:
    pt: Path
    onnx: Path
    torchscript: Path


@pytest.fixture(scope="session")
def style_files(tmp_path_factory) -> StyleFiles:
    from stylestream.export.onnx_export import export_onnx
    from stylestream.export.options import ExportOptions
    from stylestream.export.torchscript import save_torchscript
    from stylestream.models import build_model, save_model

    d = tmp_path_factory.mktemp("style")
    torch.manual_seed(0)
    model = build_model("lite", width=8, res_blocks=1).eval()
    files = StyleFiles(d / "lite.pt", d / "lite.onnx", d / "lite.torchscript")
    save_model(model, files.pt)
    export_onnx(model, files.onnx, ExportOptions())
    save_torchscript(model, files.torchscript)
    return files


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Conversion and engine caches go to a temp folder, never ~/.cache."""
    d = tmp_path / "cache"
    monkeypatch.setenv("STYLESTREAM_CACHE", str(d))
    return d
