"""Where images leave the model they are clamped to [0, 255], in one place (inference_model) that the
ONNX export (a Clip node), the .pt -> ONNX cache and the torch runtime all use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylestream.cli import main
from stylestream.models import build_model, inference_model, save_model


@pytest.fixture
def unbounded_model(tmp_path):
    """A tiny linear-head johnson whose raw output runs far outside [0, 255] (its last conv scaled up)."""
    torch.manual_seed(0)
    model = build_model("johnson", width=8, res_blocks=1).eval()
    with torch.no_grad():
        last = model.decoder[-1][-1]
        last.weight.mul_(400.0)
        last.bias.copy_(torch.tensor([-300.0, 128.0, 600.0]))
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1)) * 255
    with torch.no_grad():
        raw = model(x)
    assert raw.min() < -50 and raw.max() > 300  # the test means something only if the raw output leaves the range
    save_model(model, tmp_path / "unbounded.pt")
    return model, tmp_path / "unbounded.pt", x


def test_inference_model_clamps_and_keeps_what_export_reads(unbounded_model):
    model, _, x = unbounded_model
    model.stylestream_card = {"title": "t"}
    wrapped = inference_model(model)
    assert inference_model(wrapped) is wrapped
    assert wrapped.stylestream_config["arch"] == "johnson" and wrapped.stylestream_card == {"title": "t"}
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(x).clamp(0, 255))


def test_onnx_export_has_a_clip_and_stays_in_range(unbounded_model, tmp_path):
    import onnx
    import onnxruntime as ort

    model, pt, x = unbounded_model
    out = tmp_path / "m.onnx"
    assert main(["export", str(pt), "-f", "onnx", "-o", str(out), "--no-verify"]) == 0
    assert "Clip" in {n.op_type for n in onnx.load(str(out)).graph.node}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        ref = model(x).clamp(0, 255).numpy()
    assert y.min() >= 0 and y.max() <= 255
    assert np.abs(y - ref).max() < 0.5


def test_torch_runtime_and_onnx_cache_clamp(unbounded_model, tmp_path, monkeypatch):
    import onnxruntime as ort

    from stylestream.export.onnx_cache import cached_onnx
    from stylestream.runtime import open_model

    model, pt, x = unbounded_model
    with torch.no_grad():
        ref = model(x).clamp(0, 255).numpy()
    backend = open_model(pt, backend="torch", device="cpu")
    try:
        y = backend.run(x.numpy())
    finally:
        backend.close()
    np.testing.assert_allclose(y, ref, atol=1e-3)

    monkeypatch.delenv("STYLESTREAM_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    onnx_path = cached_onnx(pt)
    assert onnx_path is not None
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(y - ref).max() < 0.5
