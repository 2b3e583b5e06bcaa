"""The fixed-size edge formats (ExecuTorch .pte, LiteRT .tflite, ncnn .param + .bin): each round-trips
within its floor at an odd --static size, runs in the device library itself as well as through the
runtime backend, refuses other sizes and broken files with one line, and says what to install where
its extra is missing. Rows whose packages are not installed here are skipped with the reason (their
extras are too large for CI: see pyproject.toml)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from stylestream.cli import main
from stylestream.export import FLOORS, FORMATS, ExportError, VerificationError, export
from stylestream.export.verify import psnr
from stylestream.media import fit, load_frames, to_nchw
from stylestream.plugins.discovery import discover_plugins
from stylestream.plugins.modelfiles import check_model_file
from stylestream.plugins.paths import OutsideFolder
from stylestream.runtime import BACKENDS, open_model

STATIC = (37, 53)  # H, W: odd, so nothing rounds it
ROWS = ["executorch", "executorch-int8", "litert", "litert-fp16", "litert-int8", "ncnn"]


def _needs(fmt: str) -> None:
    missing = FORMATS[fmt].requires.missing()
    if missing:
        pytest.skip(f"{fmt}: missing {' and '.join(missing)} ({FORMATS[fmt].requires.hint()})")


@pytest.fixture(scope="module")
def tiny_fitted(media, tmp_path_factory):
    """(path, model): a narrow johnson fitted a few steps (so INT8 sees real activation ranges)."""
    from stylestream.export.proxy import fit_proxy_model
    from stylestream.models import inference_model, save_model

    model = fit_proxy_model(media / "content", steps=20, size=48, batch=2, width=8, res_blocks=1)
    path = tmp_path_factory.mktemp("tiny") / "model.pt"
    save_model(model, path, card=model.stylestream_card)
    return path, inference_model(model)


@pytest.fixture
def edge_opts(opts):
    opts.static, opts.verify_frames = STATIC, 3
    return opts


def _in_library(fmt: str, path, x: np.ndarray) -> np.ndarray:
    """Run one NCHW frame with the format's own library, as an app would (not through the backend)."""
    backend = FORMATS[fmt].backend
    if backend == "executorch":
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(path).load_method("forward")
        return method.execute([torch.from_numpy(x)])[0].numpy()
    if backend == "litert":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        (inp,), (out,) = it.get_input_details(), it.get_output_details()
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC
        if inp["dtype"] != np.float32:  # an INT8 file may take the input quantized, as the card says
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out["index"]).astype(np.float32).transpose(0, 3, 1, 2)
    import ncnn

    net = ncnn.Net()
    assert net.load_param(str(path)) == 0 and net.load_model(str(path.with_suffix(".bin"))) == 0
    ex = net.create_extractor()
    ex.input("in0", ncnn.Mat(x, batch_index=0).clone())
    return np.asarray(ex.extract("out0")[1].numpy(batch_index=0)).reshape(x.shape)


@pytest.mark.parametrize("fmt", ROWS)
def test_round_trip_at_an_odd_static_size(fmt, tiny_fitted, edge_opts, media, tmp_path):
    _needs(fmt)
    model_path, model = tiny_fitted
    row = FORMATS[fmt]
    out = tmp_path / f"mosaic{row.tag}{row.suffix}"
    res = export(model_path, fmt, out, edge_opts)
    floor = FLOORS[row.precision]
    assert res.status == "ok" and all(p.is_file() for p in row.files(out))
    assert res.verification["passed"] and res.verification["min_psnr_db"] >= floor
    assert [s["size"] for s in res.verification["sizes"]] == [list(STATIC)]

    frames = to_nchw([fit(f, *STATIC) for f in load_frames(media / "content", 3)])
    with torch.no_grad():
        ref = model(torch.from_numpy(frames)).numpy()
    own = np.concatenate([_in_library(fmt, out, frames[i : i + 1]) for i in range(3)])
    assert own.shape == frames.shape and psnr(own, ref) >= floor
    backend = open_model(out, device="cpu")
    try:
        assert type(backend) is BACKENDS[row.backend]
        assert np.abs(backend.run(frames) - own).max() < 1e-3  # batch 3 on a batch-1 file: run in chunks
        with pytest.raises(ValueError, match=r"takes 53x37 frames \(exported with --static 53x37\); got 53x38"):
            backend.run(to_nchw([fit(f, 38, 53) for f in load_frames(media / "content", 1)]))
    finally:
        backend.close()

    card = json.loads(out.with_suffix(".json").read_text())
    assert card["format"] == fmt and card["sizes"]["height"] == 37 and card["sizes"]["width"] == 53
    assert card["file_size_bytes"] == sum(p.stat().st_size for p in row.files(out))
    assert card["interface"]["layout"] == ("NHWC" if row.backend == "litert" else "NCHW")
    if row.backend == "litert":  # what the file itself takes, as the device app must feed it
        assert card["interface"]["input"]["shape"] == [1, 37, 53, 3]
        assert card["interface"]["input"]["dtype"] in (("int8", "float32") if row.precision == "int8" else ("float32",))
    if row.precision == "int8":
        assert card["quantization"]["psnr_vs_fp32_calibration_db"]["min"] >= floor


@pytest.mark.parametrize("fmt", ["executorch", "litert", "ncnn"])
def test_a_failed_verification_keeps_nothing(fmt, tiny_fitted, edge_opts, tmp_path, monkeypatch):
    _needs(fmt)
    row = FORMATS[fmt]
    monkeypatch.setattr(BACKENDS[row.backend], "run", lambda self, x: np.zeros_like(x))
    with pytest.raises(VerificationError, match=f"{fmt} export failed verification.*below the"):
        export(tiny_fitted[0], fmt, tmp_path / f"m{row.suffix}", edge_opts)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.rejected.png"]


@pytest.mark.parametrize("fmt", ["executorch", "litert", "ncnn"])
def test_a_fixed_size_format_needs_static(fmt, tiny_fitted, opts, tmp_path):
    _needs(fmt)
    with pytest.raises(ExportError, match=rf"{fmt} has a fixed input size: pass --static WxH"):
        export(tiny_fitted[0], fmt, tmp_path / f"m{FORMATS[fmt].suffix}", opts)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("fmt, extra, package", [
    ("executorch", "executorch", "executorch"), ("litert", "litert", "ai_edge_litert"), ("ncnn", "ncnn", "ncnn"),
    ("litert", "litert", "litert_torch"), ("ncnn", "ncnn", "pnnx"),  # the converters: export only
])  # fmt: skip
def test_without_the_extra_export_and_serving_say_what_to_install(capsys, fmt, extra, package, tiny_fitted,
                                                                  tmp_path, monkeypatch):  # fmt: skip
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    try:
        code = main(["export", str(tiny_fitted[0]), "--format", fmt, "-o", str(tmp_path / "m"), "--static", "64x48"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    # (where the extra is wholly absent, as in CI, the line names its other packages too)
    assert f"{fmt} export is not possible here: missing the " in err and f"the {package} Python package" in err
    assert f"`pip install stylestream[{extra}]`" in err
    serving = BACKENDS[FORMATS[fmt].backend].unavailable_reason("cpu")  # needs the runtime, not the converter
    if package in ("litert_torch", "pnnx"):
        runtime = {"litert": "ai_edge_litert", "ncnn": "ncnn"}[fmt]
        assert serving is None if real(runtime) else f"missing the {runtime} Python package" in serving
    else:
        assert serving == f"missing the {package} Python package; it needs `pip install stylestream[{extra}]`"


@pytest.mark.parametrize("name, data, why", [
    ("m.pte", b"\x00" * 64, r"not an ExecuTorch program \(.pte\) \(file identifier b'\\x00\\x00\\x00\\x00'\)"),
    ("m.pte", b"\x3c\x00\x00\x00ET12eh00" + b"\x20\x00\x00\x00" + (10**9).to_bytes(8, "little") + b"\x00" * 36,
     r"truncated ExecuTorch program \(its header says 1000000000 bytes, the file has 60\)"),
    ("m.tflite", b"\x1c\x00\x00\x00TFL2" + b"\x00" * 56, r"not a LiteRT model \(.tflite\)"),
    ("m.param", b"7767518\n1 1\nInput in0 0 1 in0\n", r"not an ncnn .param \(first line '7767518'"),
    ("m.param", b"7767517\n2 2\nInput in0 0 1 in0\n", r"1 layer lines, its header says 2"),
    ("m.param", b"7767517\n1 1\nInput in0 0 1\n", r"line 3 names fewer blobs than it counts"),
    ("m.param", b"7767517\n1 1\nReLU r 1 1 a b\n", r"0 Input layers; expected one"),
])  # fmt: skip
def test_broken_files_are_refused_by_their_header(tmp_path, name, data, why):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ValueError, match=why):
        check_model_file(path, tmp_path)
    found = discover_plugins([tmp_path], include_user_dir=False, include_entry_points=False)
    assert "m" not in found and any(name in e and "broken model file" in e for e in found.errors)


def test_ncnn_weights_must_stay_in_the_plugin_folder(tmp_path):
    plugins, elsewhere = tmp_path / "plugins", tmp_path / "elsewhere"
    plugins.mkdir()
    elsewhere.mkdir()
    (plugins / "evil.param").write_text("7767517\n1 1\nInput in0 0 1 in0\n")
    (elsewhere / "w.bin").write_bytes(b"\x00" * 16)
    (plugins / "evil.bin").symlink_to(elsewhere / "w.bin")
    with pytest.raises(OutsideFolder, match="ncnn weights 'evil.bin' is outside the plugin folder"):
        check_model_file(plugins / "evil.param", plugins)
    (plugins / "evil.bin").unlink()
    with pytest.raises(ValueError, match=r"its weights evil\.bin are missing"):
        check_model_file(plugins / "evil.param", plugins)


def test_bench_exports_a_fixed_size_format_once_per_size(capsys, tiny_fitted, tmp_path):
    _needs("executorch")
    prefix = tmp_path / "bench"
    code = main(["bench", "export", str(tiny_fitted[0]), "--formats", "executorch", "--sizes", "48x32,53x37",
                 "--reps", "20", "--warmup", "1", "--torch", "none", "-o", str(prefix)])  # fmt: skip
    assert code == 0
    (row,) = json.loads(prefix.with_suffix(".json").read_text())["rows"]
    assert row["format"] == "executorch" and set(row["latency"]) == {"48x32", "53x37"}
    assert row["psnr_db"] >= 45 and row["size_mb"] > 0 and row["runtime"] == "executorch (XNNPACK, cpu)"
    assert "| executorch | executorch (XNNPACK, cpu) |" in capsys.readouterr().out
