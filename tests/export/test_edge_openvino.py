"""OpenVINO IR exports (openvino, openvino-fp16, openvino-int8): NAME.xml + NAME.bin round-trip within their
floors at odd sizes with dynamic N/H/W, fail verification as one, are listed by `plugins` and run by
`stylize`, and a machine without the extra says what to install."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import openvino as ov
import pytest
import torch

from stylestream.export import FLOORS, FORMATS, VerificationError, export, export_all
from stylestream.export.openvino import INFERENCE_KEY
from stylestream.export.verify import psnr
from stylestream.media import fit, load_frames, to_nchw
from stylestream.runtime.openvino_backend import OpenVINOBackend
from tests.conftest import run_cli as _cli


def _independent_psnr(xml, model, media, sizes=((53, 71), (37, 45))) -> float:
    """Run the IR here with OpenVINO itself (not the backend), f32, batch 3, against PyTorch."""
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    frames = load_frames(media / "content", 3)
    worst = np.inf
    for h, w in sizes:
        x = to_nchw([fit(f, h, w) for f in frames])
        y = compiled(x)[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == x.shape and y.dtype == np.float32
        worst = min(worst, psnr(y, ref))
    return worst


@pytest.mark.parametrize("fmt, weights, inference", [
    ("openvino", "fp32", "f32"), ("openvino-fp16", "fp16", "device"), ("openvino-int8", "int8", "device"),
])  # fmt: skip
def test_openvino_rows_round_trip_within_floor(fmt, weights, inference, fitted_model, opts, media, tmp_path):
    model_path, model = fitted_model
    out = tmp_path / f"mosaic{FORMATS[fmt].tag}.xml"
    res = export(model_path, fmt, out, opts)
    floor = FLOORS[FORMATS[fmt].precision]
    assert res.status == "ok" and out.is_file() and out.with_suffix(".bin").is_file()
    assert res.verification["passed"] and res.verification["min_psnr_db"] >= floor
    assert [s["size"] for s in res.verification["sizes"]] == [[48, 64], [37, 53]]
    assert res.verification["runtime"].startswith("openvino (CPU, ")
    assert _independent_psnr(out, model, media) >= floor

    ir = ov.Core().read_model(str(out))
    assert str(ir.inputs[0].get_partial_shape()) == "[?,3,?,?]"  # dynamic N, H, W
    assert ir.get_rt_info(INFERENCE_KEY).astype(str) == inference
    kinds = {op.get_type_name() for op in ir.get_ordered_ops()}
    consts = {op.get_element_type().get_type_name() for op in ir.get_ordered_ops() if op.get_type_name() == "Constant"}
    assert ("FakeQuantize" in kinds or "i8" in consts) == (weights == "int8")
    assert ("f16" in consts) == (weights == "fp16")

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["format"] == fmt and card["file"] == out.name
    assert card["file_size_bytes"] == out.stat().st_size + out.with_suffix(".bin").stat().st_size
    assert card["openvino"]["weights"] == weights
    if weights == "int8":
        assert card["quantization"]["tool"].startswith("nncf ")
        assert card["quantization"]["psnr_vs_fp32_calibration_db"]["min"] >= floor


def test_a_failed_verification_keeps_neither_xml_nor_bin(fitted_model, opts, tmp_path, monkeypatch):
    monkeypatch.setattr(OpenVINOBackend, "run", lambda self, x: np.zeros_like(x))
    out = tmp_path / "broken.xml"
    with pytest.raises(VerificationError, match="openvino export failed verification.*below the 45 dB floor"):
        export(fitted_model[0], "openvino", out, opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.rejected.png"]


def test_exported_style_is_listed_and_stylizes(capsys, fitted_model, opts, media, tmp_path):
    styles = tmp_path / "styles"
    export(fitted_model[0], "openvino", styles / "candy.xml", opts)
    code, out, _ = _cli(capsys, "plugins", "--plugins", styles, "--no-user-plugins", "--json")
    listing = json.loads(out)
    assert code == 0 and not listing["errors"]
    candy = next(s for s in listing["styles"] if s["name"] == "candy")
    assert candy["backend"] == "openvino" and candy["kind"] == "neural"

    photo = media / "content" / "chicago.jpg"
    ov_out, pt_out = tmp_path / "ov.png", tmp_path / "pt.png"
    code, out, err = _cli(capsys, "stylize", "--plugins", styles, "--style", "candy", photo, "-o", ov_out,
                          "--max-side", "96", "--no-user-plugins")  # fmt: skip
    assert code == 0, err
    assert "runs on openvino (CPU, f32)" in out and ov_out.is_file()
    code, _, err = _cli(capsys, "stylize", "--style", fitted_model[0], photo, "-o", pt_out, "--max-side", "96",
                        "--backend", "torch", "--no-user-plugins")  # fmt: skip
    assert code == 0, err
    import cv2

    a, b, src = (cv2.imread(str(p)).astype(int) for p in (ov_out, pt_out, photo))
    assert a.shape == b.shape == src.shape
    assert np.abs(a - b).mean() < 1.0  # OpenVINO serves the same style as the model.pt
    assert np.abs(a - src).mean() > 5


def test_a_corrupt_model_is_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a torch archive")
    code, _, err = _cli(capsys, "export", bad, "--format", "openvino", "-o", tmp_path / "m.xml")
    assert code == 2 and "Traceback" not in err and "model.pt" in err
    assert not (tmp_path / "m.xml").exists() and not (tmp_path / "m.bin").exists()


def test_without_the_extra_export_and_serving_say_what_to_install(capsys, fitted_model, opts, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("openvino", "nncf")
                        else real(name, *a))  # fmt: skip
    code, _, err = _cli(capsys, "export", fitted_model[0], "--format", "openvino", "-o", tmp_path / "m.xml")
    assert code == 2 and "Traceback" not in err
    assert ("openvino export is not possible here: missing the openvino Python package; it needs "
            "`pip install stylestream[openvino]`") in err  # fmt: skip
    code, _, err = _cli(capsys, "export", fitted_model[0], "--format", "openvino-int8", "-o", tmp_path / "m.xml",
                        "--calibration", opts.calibration)  # fmt: skip
    assert code == 2 and "missing the openvino Python package and the nncf Python package" in err
    assert not any(tmp_path.iterdir())
    reason = OpenVINOBackend.unavailable_reason("cpu")
    assert reason == "missing the openvino Python package; it needs `pip install stylestream[openvino]`"

    results = {r.format: r for r in export_all(fitted_model[0], tmp_path, opts, formats=["onnx", "openvino"])}
    assert results["onnx"].status == "ok"
    assert results["openvino"].status == "skipped" and "pip install stylestream[openvino]" in results["openvino"].message


def test_bench_export_times_the_openvino_rows(capsys, fitted_model, media, tmp_path):
    prefix = tmp_path / "bench"
    code, out, _ = _cli(capsys, "bench", "export", fitted_model[0], "--formats", "onnx,openvino,openvino-int8",
                        "--sizes", "48x32,53x37", "--reps", "20", "--warmup", "1", "--torch", "none",
                        "--calibration", media / "content", "-o", prefix)  # fmt: skip
    assert code == 0
    rows = {r["format"]: r for r in json.loads(prefix.with_suffix(".json").read_text())["rows"]}
    for name, floor in (("openvino", 45), ("openvino-int8", 28)):
        assert set(rows[name]["latency"]) == {"48x32", "53x37"} and rows[name]["psnr_db"] >= floor
        assert rows[name]["runtime"].startswith("openvino (CPU, ") and rows[name]["runtime_version"].startswith("OpenVINO")
    # the IR's size is its .xml and its .bin: about the ONNX file's for FP32, a third of it or less for INT8
    assert abs(rows["openvino"]["size_mb"] - rows["onnx"]["size_mb"]) < 0.1 * rows["onnx"]["size_mb"]
    assert 0 < rows["openvino-int8"]["size_mb"] < rows["onnx"]["size_mb"] / 3
    assert "| openvino-int8 | openvino (CPU, " in out
