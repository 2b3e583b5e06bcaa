"""Core ML exports (coreml FP16, coreml-fp32): NAME.mlpackage folders with a flexible H x W input. Core ML
runs only on Apple systems, so off macOS an export is checked structurally (its spec read back: names,
dtypes, shape ranges, the size an odd --static input comes back at, weight and compute precision), its
card says verification was NOT run and carries no PSNR; on macOS it is verified against PyTorch like
every format. The converter's run-time pad (the nets' size-dependent reflect pad) is checked against
torch's padding by MIL's own op semantics. Tests that convert skip where coremltools is not installed."""

from __future__ import annotations

import importlib.util
import json
import platform
import re

import numpy as np
import pytest
import torch

from stylestream.export import FLOORS, FORMATS, ExportError, export, export_all
from stylestream.export.formats import format_of
from stylestream.runtime import BACKENDS, BackendUnavailable, open_model
from tests.conftest import run_cli as _cli

ON_MAC = platform.system() == "Darwin"
STATIC = (37, 53)  # H, W: odd, padded to 40x56 inside the net and cropped back
NOT_APPLE = f"Core ML runs only on Apple systems (macOS), not {platform.system()}"


def _files(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("fmt, precision", [("coreml", "fp16"), ("coreml-fp32", "fp32")])
def test_round_trip_with_a_flexible_size(fmt, precision, fitted_model, opts, tmp_path):
    ct = pytest.importorskip("coremltools")
    model_path = fitted_model[0]
    out = tmp_path / f"mosaic{FORMATS[fmt].tag}.mlpackage"
    res = export(model_path, fmt, out, opts)
    assert res.status == "ok" and (out / "Manifest.json").is_file() and format_of(out) is FORMATS["coreml"]
    card = json.loads(out.with_suffix(".json").read_text())  # beside the package, not inside it
    assert not (out / "card.json").exists()
    assert card["format"] == fmt and card["precision"] == precision and card["file"] == out.name
    assert card["file_size_bytes"] == _files(out) > 0

    # the spec as an app would read it: names, float32 I/O, a range of H and W that holds odd sizes
    spec = ct.utils.load_spec(str(out))
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (outp,) = spec.description.input, spec.description.output
    assert (inp.name, outp.name) == ("input", "output")
    assert inp.type.multiArrayType.dataType == outp.type.multiArrayType.dataType == 65568  # FLOAT32
    ranges = [(r.lowerBound, r.upperBound) for r in inp.type.multiArrayType.shapeRange.sizeRanges]
    assert ranges == [(1, 64), (3, 3), (16, 4096), (16, 4096)]
    assert all(lo <= s <= hi for s, (lo, hi) in zip(STATIC, ranges[2:]))
    info = card["coreml"]
    assert info["input"]["shape"] == ["1..64", 3, "16..4096", "16..4096"] and info["default_size"] == [480, 640]
    assert info["output"] == {"name": "output", "dtype": "float32", "shape": ["?", 3, "?", "?"]}
    assert info["weights"] == info["compute"] == precision and info["ops"]["conv"] == 16  # johnson: 16 convs
    assert info["ops"]["gather"] >= 2  # the size-dependent pad, H and W, as gathers (see the next test)

    v = res.verification
    if ON_MAC:  # Core ML runs: verified against PyTorch at both sizes, one odd
        assert v["passed"] and v["min_psnr_db"] >= FLOORS[precision]
        assert [s["size"] for s in v["sizes"]] == [[48, 64], [37, 53]] and v["runtime"].startswith("coreml (")
        return
    assert v == card["verification"] and v["skipped"] and v["run"] is False and v["sizes"] == []
    assert NOT_APPLE in v["reason"] and "no PSNR was measured" in v["reason"] and "macOS" in v["reason"]
    assert "min_psnr_db" not in v and "passed" not in v and res.message.startswith("NOT verified: not run here")
    assert card["comparison_image"] is None and card["thumbnail"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, out.with_suffix(".json").name])


def test_an_odd_static_size_comes_back_whole(capsys, fitted_model, opts, tmp_path):
    """--static 53x37 fixes H and W: the converter resolves the net's pad to 40x56 and the crop back, so
    the program's own output type is 37x53; the CLI says the export was not verified off macOS."""
    pytest.importorskip("coremltools")
    out = tmp_path / "m.mlpackage"
    code, stdout, err = _cli(capsys, "export", fitted_model[0], "--format", "coreml", "-o", out, "--static", "53x37",
                             "--batch", "1", "--verify-images", opts.verify_images)  # fmt: skip
    assert code == 0, err
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["coreml"]["input"]["shape"] == [1, 3, 37, 53]
    assert card["coreml"]["output"]["shape"] == [1, 3, 37, 53]
    assert card["sizes"]["height"] == 37 and card["sizes"]["width"] == 53
    assert f"OK   coreml       -> {out}" in stdout
    if not ON_MAC:
        assert "NOT verified: not run here: " + NOT_APPLE in stdout
        ops = card["coreml"]["ops"]
        assert ops["pad"] == ops["conv"] + 1 and "gather" not in ops  # the net's pad is constant at this size
    else:
        assert card["verification"]["passed"] and card["verification"]["sizes"][0]["size"] == [37, 53]


@pytest.mark.parametrize("mode", ["reflect", "replicate"])
@pytest.mark.parametrize("size, pads", [((37, 53), (0, 3, 0, 3)), ((40, 57), (2, 3, 0, 0)), ((16, 17), (0, 0, 1, 2))])
def test_the_run_time_pad_is_torchs(mode, size, pads):
    """coreml.pad_axis with amounts only known at run time (int32 Vars), evaluated by MIL's own value
    inference of each op (what Core ML computes), equals torch's padding."""
    pytest.importorskip("coremltools")
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function

    from stylestream.export.coreml import pad_axis

    x = np.random.default_rng(0).uniform(0, 255, (2, 3, *size)).astype(np.float32)
    with Function({}):
        y = mb.const(val=x)
        for k in range(2):  # torch order: W (axis 3), then H (axis 2)
            before, after = (mb.const(val=np.int32(p)) for p in pads[2 * k : 2 * k + 2])
            y = pad_axis(y, 3 - k, before, after, mode)
        got = y.val
    want = torch.nn.functional.pad(torch.from_numpy(x), pads, mode=mode).numpy()
    assert got is not None and got.shape == want.shape and np.array_equal(got, want)


def test_a_package_folder_is_replaced_whole_and_a_file_in_the_way_refused(fitted_model, opts, tmp_path):
    pytest.importorskip("coremltools")
    out = tmp_path / "m.mlpackage"
    opts.verify = False
    export(fitted_model[0], "coreml-fp32", out, opts)
    (out / "stale.txt").write_text("from an older export")
    export(fitted_model[0], "coreml-fp32", out, opts)
    assert (out / "Manifest.json").is_file() and not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.mlpackage"]  # no scratch, no .old
    assert json.loads((tmp_path / "m.json").read_text())["verification"] == {"skipped": True, "reason": "--no-verify"}

    blocked = tmp_path / "file.mlpackage"
    blocked.write_text("not a folder")
    with pytest.raises(ExportError, match=r"file\.mlpackage is a file; this format writes a folder there"):
        export(fitted_model[0], "coreml-fp32", blocked, opts)
    assert blocked.read_text() == "not a folder" and not (tmp_path / "file.json").exists()


@pytest.mark.skipif(ON_MAC, reason="Core ML runs here: nothing to refuse")
def test_off_macos_serving_and_the_benchmark_say_core_ml_does_not_run_here(fitted_model, tmp_path):
    from stylestream.export.benchmark import run_benchmark

    assert BACKENDS["coreml"].unavailable_reason("cpu") == NOT_APPLE
    package = tmp_path / "m.mlpackage"
    package.mkdir()
    (package / "Manifest.json").write_text("{}")
    with pytest.raises(BackendUnavailable, match=rf"^backend 'coreml' cannot run on cpu: {re.escape(NOT_APPLE)}$"):
        open_model(package, "coreml", device="cpu")
    with pytest.raises(BackendUnavailable, match=re.escape(f"no backend can run m.mlpackage on cpu (coreml: {NOT_APPLE})")):
        open_model(package, device="cpu")
    if importlib.util.find_spec("coremltools") is not None:
        result = run_benchmark(fitted_model[0], ["coreml"], sizes=[(32, 48)], reps=1, warmup=0, torch_baselines=())
        assert result["rows"] == [{"format": "coreml", "skipped": f"coreml does not run here: {NOT_APPLE}"}]


def test_without_the_extra_export_says_what_to_install(capsys, fitted_model, opts, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "coremltools" else real(name, *a))
    for fmt in ("coreml", "coreml-fp32"):
        code, _, err = _cli(capsys, "export", fitted_model[0], "--format", fmt, "-o", tmp_path / "m.mlpackage")
        assert code == 2 and "Traceback" not in err
        assert (f"{fmt} export is not possible here: missing the coremltools Python package; it needs "
                "`pip install stylestream[coreml]`") in err  # fmt: skip
    assert not any(tmp_path.iterdir())
    serving = BACKENDS["coreml"].unavailable_reason("cpu")  # off macOS, installing would not help
    assert serving == (NOT_APPLE if not ON_MAC else
                       "missing the coremltools Python package; it needs `pip install stylestream[coreml]`")  # fmt: skip

    results = {r.format: r for r in export_all(fitted_model[0], tmp_path, opts, formats=["torchscript", "coreml"])}
    assert results["torchscript"].status == "ok"
    assert results["coreml"].status == "skipped" and "pip install stylestream[coreml]" in results["coreml"].message


def test_the_macos_backend_checks_the_package_before_core_ml_loads_it(fitted_model, opts, tmp_path, monkeypatch):
    """The coreml backend's own code off macOS: platform.system() reads "Darwin" and Core ML's MLModel is
    replaced by a recorder whose predict hands the frames back (plumbing only: nothing is measured).
    A link out of the package is refused before loading; frames outside the H x W range are one line; a
    batch over the package's largest runs in chunks, in order."""
    ct = pytest.importorskip("coremltools")
    from stylestream.plugins.paths import OutsideFolder
    from stylestream.runtime import coreml_backend

    out = tmp_path / "styles" / "m.mlpackage"
    opts.verify = False
    export(fitted_model[0], "coreml", out, opts, model=fitted_model[1])
    chunks = []

    class Recorder:
        def __init__(self, path, compute_units):
            self.path, self.units = path, compute_units

        def predict(self, feeds):
            chunks.append(len(feeds["input"]))
            return {"output": feeds["input"].copy()}

    monkeypatch.setattr(coreml_backend.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(ct.models, "MLModel", Recorder)
    backend = open_model(out, device="cpu")
    assert type(backend) is coreml_backend.CoreMLBackend and backend.model.units == ct.ComputeUnit.CPU_ONLY
    assert backend.describe() == "coreml (CPU_ONLY, fp16)" and backend.version() == f"coremltools {ct.__version__}"
    x = np.random.default_rng(0).uniform(0, 255, (70, 3, *STATIC)).astype(np.float32)
    assert np.array_equal(backend.run(x), x) and chunks == [64, 6]
    with pytest.raises(ValueError, match=r"^m\.mlpackage takes frames of 16\.\.4096 x 16\.\.4096 \(H x W\); got 15x53$"):
        backend.run(x[:1, :, :15])
    assert coreml_backend.CoreMLBackend.unavailable_reason("cuda") == (
        "Core ML runs on the Mac's CPU (cpu) or on CPU/GPU/Neural Engine (mps), not cuda")

    (tmp_path / "secret").write_text("outside")
    (out / "Data" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(OutsideFolder, match="Core ML package file .*link' is outside the plugin folder"):
        open_model(out, device="cpu")


def test_an_exported_package_in_a_styles_folder_is_a_style(capsys, fitted_model, opts, tmp_path):
    """Export into a styles folder: `plugins` lists the package beside the ONNX of the same style (one style,
    two formats); off macOS `stylize` runs the ONNX and `--backend coreml` says in one line why it cannot."""
    pytest.importorskip("coremltools")
    styles = tmp_path / "styles"
    assert export(fitted_model[0], "coreml", styles / "mosaic.mlpackage", opts).status == "ok"
    assert export(fitted_model[0], "onnx", styles / "mosaic.onnx", opts).status == "ok"
    code, out, err = _cli(capsys, "plugins", "--plugins", styles, "--no-user-plugins", "--json")
    assert code == 0, err
    (mosaic,) = [p for p in json.loads(out)["styles"] if p["name"] == "mosaic"]
    assert "mlpackage" in json.dumps(mosaic) and "onnx" in json.dumps(mosaic)
    photo = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    code, _, err = _cli(capsys, "stylize", "--plugins", styles, "--no-user-plugins", "--style", "mosaic",
                        photo, "-o", tmp_path / "out.png")  # fmt: skip
    assert code == 0 and (tmp_path / "out.png").is_file(), err
    if not ON_MAC:
        code, _, err = _cli(capsys, "stylize", "--plugins", styles, "--no-user-plugins", "--style", "mosaic",
                            "--backend", "coreml", photo, "-o", tmp_path / "out2.png")  # fmt: skip
        assert code == 2 and NOT_APPLE in err and "Traceback" not in err


def test_a_package_that_links_out_of_its_folder_refuses_the_style(capsys, tmp_path):
    """A NAME.mlpackage is a folder: a symlink inside it to a file elsewhere refuses the style, with the
    reason, before anything reads it; a package without valid JSON in its manifest is reported broken."""
    styles = tmp_path / "styles"
    (styles / "evil.mlpackage" / "Data").mkdir(parents=True)
    (styles / "evil.mlpackage" / "Manifest.json").write_text("{}")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"x" * 100)
    (styles / "evil.mlpackage" / "Data" / "weight.bin").symlink_to(secret)
    (styles / "broken.mlpackage").mkdir()
    (styles / "broken.mlpackage" / "Manifest.json").write_text("not json")
    code, out, _ = _cli(capsys, "plugins", "--plugins", styles, "--no-user-plugins", "--json")
    listing = json.loads(out)
    assert code == 0 and not {"evil", "broken"} & {p["name"] for p in listing["styles"]}
    errors = json.dumps(listing["errors"])
    assert "outside the plugin folder" in errors and "weight.bin" in errors
    assert "Manifest.json is not JSON" in errors
