"""`stylestream export` as a user runs it: bad input, missing TensorRT, failed verification."""

from __future__ import annotations

import json

import pytest

from stylestream.export import FLOORS
from tests.conftest import run_cli


def _cli(capsys, *argv):
    return run_cli(capsys, "export", *argv)


def test_corrupt_and_missing_model_files_are_clear_errors(capsys, tmp_path):
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"\x89PNG not a model" * 50)
    code, _, err = _cli(capsys, corrupt, "--format", "onnx", "-o", tmp_path / "o.onnx")
    assert code == 2 and "broken.pt: not a readable stylestream model" in err and "Traceback" not in err
    code, _, err = _cli(capsys, tmp_path / "nope.pt", "--format", "onnx", "-o", tmp_path / "o.onnx")
    assert code == 2 and "nope.pt: model file not found" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pt"]


def test_unknown_format_lists_choices(capsys, tmp_path):
    code, _, err = _cli(capsys, tmp_path / "m.pt", "--format", "no-such-format", "-o", tmp_path / "o")
    assert code == 2 and "onnx-int8" in err and "triton" in err


def test_tensorrt_without_gpu_is_a_clear_error(capsys, fitted_model, tmp_path):
    torch = pytest.importorskip("torch")
    try:
        import tensorrt  # noqa: F401

        has_trt = True
    except ImportError:
        has_trt = False
    if has_trt and torch.cuda.is_available():
        pytest.skip("TensorRT and a GPU are present: the missing-TensorRT error cannot happen here")
    code, _, err = _cli(capsys, fitted_model[0], "--format", "tensorrt", "-o", tmp_path / "m.engine")
    assert code == 2 and "Traceback" not in err
    if not torch.cuda.is_available():
        assert "NVIDIA GPU" in err
    if not has_trt:
        assert "pip install stylestream[trt]" in err
    assert not any(tmp_path.iterdir())


def test_failed_verification_exits_nonzero_and_keeps_nothing(capsys, fitted_model, media, tmp_path, monkeypatch):
    # An impossible floor stands in for a broken export: the exporter must refuse to keep it.
    monkeypatch.setitem(FLOORS, "fp32", 1000.0)
    out = tmp_path / "style.onnx"
    code, stdout, err = _cli(capsys, fitted_model[0], "--format", "onnx", "-o", out, "--verify-sizes",
                             "64x48,53x37", "--verify-images", media / "content" / "chicago.jpg")
    assert code == 1
    assert "failed verification" in err and "below the 1000 dB floor" in err and "53x37" in err
    assert "FAIL" in stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["style.rejected.png"]


def test_cli_export_writes_file_and_card(capsys, fitted_model, media, tmp_path):
    out = tmp_path / "styles" / "candy.onnx"
    code, stdout, _ = _cli(capsys, fitted_model[0], "--format", "onnx", "-o", out, "--verify-sizes", "48x40,41x33",
                           "--verify-images", media / "video" / "webcam_walk.mkv", "--title", "Candy")
    assert code == 0 and "OK" in stdout and "41x33: PSNR" in stdout
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["title"] == "Candy" and card["name"] == "candy" and card["verification"]["passed"]
    assert card["verification"]["images"].endswith("webcam_walk.mkv")
