"""What export writes is what serving runs: verification goes through the runtime backend that serves
the file, a TorchScript export is a style for `plugins` and `stylize`, and a Triton repository says who
serves it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylestream.export import VerificationError, export
from stylestream.plugins import plugin_from_model
from stylestream.runtime.onnxruntime_backend import OnnxRuntimeBackend
from tests.conftest import run_cli as _cli


def test_verification_runs_the_backend_class_that_serves(fitted_model, opts, tmp_path, monkeypatch):
    calls = []
    real_run = OnnxRuntimeBackend.run

    def counting_run(self, x):
        calls.append(x.shape)
        return real_run(self, x)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", counting_run)
    out = tmp_path / "mosaic.onnx"
    res = export(fitted_model[0], "onnx", out, opts)
    assert calls == [(2, 3, 48, 64), (2, 3, 37, 53)]  # every verification frame went through it
    assert res.verification["runtime"] == "onnxruntime (CPU)"
    assert res.verification["runtime_version"].startswith("onnxruntime ")
    assert type(plugin_from_model(out).runner()) is OnnxRuntimeBackend  # and serving runs the same class

    # what that class returns decides the verdict: a serving bug fails the export
    monkeypatch.setattr(OnnxRuntimeBackend, "run", lambda self, x: np.zeros_like(x))
    with pytest.raises(VerificationError, match="below the 45 dB floor"):
        export(fitted_model[0], "onnx", tmp_path / "broken.onnx", opts)
    assert not (tmp_path / "broken.onnx").exists()


def test_torchscript_export_is_listed_and_stylizes(capsys, fitted_model, opts, media, tmp_path):
    styles = tmp_path / "styles"
    res = export(fitted_model[0], "torchscript", styles / "candy.ts", opts)
    assert res.status == "ok" and res.verification["runtime"] == "torchscript (cpu)"

    code, out, _ = _cli(capsys, "plugins", "--plugins", styles, "--no-user-plugins", "--json")
    listing = json.loads(out)
    assert code == 0 and not listing["errors"]
    candy = next(s for s in listing["styles"] if s["name"] == "candy")
    assert candy["backend"] == "torchscript" and candy["kind"] == "neural"
    code, out, _ = _cli(capsys, "plugins", "--plugins", styles, "--no-user-plugins")
    assert code == 0 and any(line.split()[:3] == ["candy", "neural", "torchscript"] for line in out.splitlines())

    photo = media / "content" / "chicago.jpg"
    ts_out, pt_out = tmp_path / "ts.png", tmp_path / "pt.png"
    code, out, err = _cli(capsys, "stylize", "--style", styles / "candy.ts", photo, "-o", ts_out,
                          "--max-side", "96", "--no-user-plugins")  # fmt: skip
    assert code == 0, err
    assert "runs on torchscript (cpu)" in out and ts_out.is_file()
    code, _, err = _cli(capsys, "stylize", "--style", fitted_model[0], photo, "-o", pt_out, "--max-side", "96",
                        "--backend", "torch", "--no-user-plugins")  # fmt: skip
    assert code == 0, err
    import cv2

    a, b, src = (cv2.imread(str(p)).astype(int) for p in (ts_out, pt_out, photo))
    assert a.shape == b.shape == src.shape
    assert np.abs(a - b).mean() < 1.0  # TorchScript serves the same style as the model.pt
    assert np.abs(a - src).mean() > 5


def test_a_triton_repository_says_it_is_served_by_triton(capsys, fitted_model, opts, media, tmp_path):
    opts.verify = False
    repo = tmp_path / "repo"
    model_dir = export(fitted_model[0], "triton", repo, opts).path
    code, _, err = _cli(capsys, "stylize", "--style", model_dir, media / "content" / "chicago.jpg",
                        "-o", tmp_path / "o.png", "--no-user-plugins")  # fmt: skip
    assert code == 2 and "Traceback" not in err
    assert "a Triton model repository is served by Triton Inference Server" in err and "--format onnx" in err
    assert not (tmp_path / "o.png").exists()
    code, out, _ = _cli(capsys, "plugins", "--plugins", repo, "--no-user-plugins", "--json")
    (error,) = json.loads(out)["errors"]
    assert error.startswith(str(model_dir)) and "served by Triton Inference Server" in error
