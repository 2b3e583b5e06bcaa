"""Each format round-trips against PyTorch within its floor, at odd sizes, on real images."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from stylestream.export import FLOORS, FORMATS, export
from stylestream.export.verify import psnr
from stylestream.media import fit, load_frames, to_nchw

CARD_KEYS = {"name", "title", "description", "thumbnail", "format", "source", "verification", "sizes"}


def _independent_psnr(path, model, media, sizes=((53, 71), (37, 45))):
    """Re-run the exported file here (not through the exporter) against PyTorch on real photos."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    frames = load_frames(media / "content", 3)
    worst = np.inf
    for h, w in sizes:
        x = to_nchw([fit(f, h, w) for f in frames])
        y = sess.run(None, {"input": x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == x.shape and y.dtype == np.float32
        worst = min(worst, psnr(y, ref))
    return worst


@pytest.mark.parametrize("fmt", ["onnx", "onnx-fp16", "onnx-int8"])
def test_onnx_formats_round_trip_within_floor(fmt, fitted_model, opts, media, tmp_path):
    model_path, model = fitted_model
    out = tmp_path / f"mosaic{FORMATS[fmt].tag}.onnx"
    res = export(model_path, fmt, out, opts)
    assert res.status == "ok" and out.is_file()
    floor = FLOORS[FORMATS[fmt].precision]
    assert res.verification["passed"] and res.verification["min_psnr_db"] >= floor
    assert [s["size"] for s in res.verification["sizes"]] == [[48, 64], [37, 53]]
    assert _independent_psnr(out, model, media) >= floor

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (outp,) = proto.graph.input, proto.graph.output
    assert (inp.name, outp.name) == ("input", "output")
    assert inp.type.tensor_type.elem_type == outp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[1] == 3 and all(isinstance(d, str) for d in (dims[0], dims[2], dims[3]))

    card = json.loads((tmp_path / f"{out.stem}.json").read_text())
    assert CARD_KEYS <= set(card)
    assert card["format"] == fmt and card["name"] == out.stem
    assert card["source"]["card"]["name"] == "proxy-johnson"
    assert (tmp_path / card["thumbnail"]).is_file()
    assert (tmp_path / card["comparison_image"]).is_file()


def test_fp16_keeps_instance_norm_in_fp32(fitted_model, opts, tmp_path):
    out = tmp_path / "m.onnx"
    export(fitted_model[0], "onnx-fp16", out, opts)
    g = onnx.load(str(out)).graph
    fp16_inits = [i for i in g.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    conv_weights = {n.input[1] for n in g.node if n.op_type == "Conv"}
    assert conv_weights and conv_weights <= {i.name for i in fp16_inits}
    by_name = {i.name: i for i in g.initializer}
    norms = [n for n in g.node if n.op_type == "InstanceNormalization"]
    assert norms and all(by_name[n.input[1]].data_type == onnx.TensorProto.FLOAT for n in norms)


def test_int8_scheme_quantizes_convs_but_not_the_last(fitted_model, opts, media, tmp_path):
    opts.calibration = media / "video" / "webcam_walk.mkv"  # more frames than the 4 photos: all 6 are used
    out = tmp_path / "m.onnx"
    res = export(fitted_model[0], "onnx-int8", out, opts)
    g = onnx.load(str(out)).graph
    convs = [n for n in g.node if n.op_type == "Conv"]
    produced_by = {o: n for n in g.node for o in n.output}
    quantized = [produced_by.get(c.input[1]) is not None and produced_by[c.input[1]].op_type == "DequantizeLinear"
                 for c in convs]
    assert sum(quantized) == len(convs) - 1 and not quantized[-1]
    q = json.loads(out.with_suffix(".json").read_text())["quantization"]
    assert q["psnr_vs_fp32_calibration_db"]["min"] >= FLOORS["int8"]
    assert q["calibration_frames"] == 6 and res.verification["passed"]


def test_int8_needs_calibration(fitted_model, opts, tmp_path):
    from stylestream.export import ExportError

    opts.calibration = None
    with pytest.raises(ExportError, match="--calibration"):
        export(fitted_model[0], "onnx-int8", tmp_path / "m.onnx", opts)
    assert not any(tmp_path.iterdir())


def test_dynamic_shapes_three_sizes_and_batch_two(fitted_model, opts, tmp_path):
    model_path, model = fitted_model
    out = tmp_path / "m.onnx"
    export(model_path, "onnx", out, opts)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for n, h, w in [(2, 33, 47), (1, 64, 80), (2, 71, 29)]:
        x = np.random.default_rng(0).uniform(0, 255, (n, 3, h, w)).astype(np.float32)
        y = sess.run(None, {"input": x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert y.shape == (n, 3, h, w)
        assert psnr(y, ref) >= FLOORS["fp32"]


def test_static_size_and_fixed_batch(fitted_model, opts, tmp_path):
    opts.static, opts.batch = (40, 56), 2
    out = tmp_path / "m.onnx"
    res = export(fitted_model[0], "onnx", out, opts)
    dims = [d.dim_value for d in onnx.load(str(out)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 40, 56]
    assert [s["size"] for s in res.verification["sizes"]] == [[40, 56]]


def test_torchscript_round_trip(fitted_model, opts, tmp_path):
    model_path, model = fitted_model
    out = tmp_path / "m.torchscript"
    res = export(model_path, "torchscript", out, opts)
    assert res.verification["passed"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation: LibTorch still reads it
        loaded = torch.jit.load(str(out))
    x = torch.rand(2, 3, 37, 51) * 255
    with torch.no_grad():
        assert psnr(loaded(x).numpy(), model(x).numpy()) >= FLOORS["fp32"]
