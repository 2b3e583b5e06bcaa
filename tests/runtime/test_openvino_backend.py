"""The openvino backend: an IR (NAME.xml + NAME.bin) runs like the other file kinds, its device names map
to OpenVINO's, and what a plugin folder may hold is refused before OpenVINO parses it (DOCTYPE/entity
bombs, weights outside the folder or of the wrong size, graphs that are not styles)."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest
from openvino import opset13 as ops

from stylestream.export.openvino import INFERENCE_KEY
from stylestream.plugins.discovery import discover_plugins
from stylestream.plugins.modelfiles import ModelTooLarge, check_model_file
from stylestream.plugins.paths import OutsideFolder
from stylestream.runtime import BACKENDS, open_model, pick_backend
from stylestream.runtime.openvino_backend import ENV_DEVICE, OpenVINOBackend, openvino_device


def _frames(h: int = 37, w: int = 53) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (2, 3, h, w)).astype(np.float32)


def _save(model: ov.Model, path, precision: str | None = None):
    if precision:
        model.set_rt_info(precision, INFERENCE_KEY)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


@pytest.fixture
def ir(style_files, tmp_path):
    """The runtime fixtures' tiny lite style as an IR, from its ONNX (same weights as .pt/.onnx)."""
    return _save(ov.convert_model(str(style_files.onnx)), tmp_path / "lite.xml", "f32")


def _graph(out_fn, inputs=1, dtype=ov.Type.f32) -> ov.Model:
    params = [ops.parameter([-1, 3, -1, -1], dtype, name=f"x{i}") for i in range(inputs)]
    return ov.Model([ops.result(out_fn(params))], params, "hostile")


def test_an_ir_runs_like_the_onnx_of_the_same_weights(ir, style_files):
    x = _frames()
    backend = open_model(ir, device="cpu")
    try:
        assert type(backend) is BACKENDS["openvino"] and backend.describe() == "openvino (CPU, f32)"
        assert backend.version().startswith("OpenVINO 20")
        y = backend.run(x)
        y_odd = backend.run(_frames(31, 45)[:1])  # dynamic N, H, W: another batch and odd size, same model
    finally:
        backend.close()
    ref = open_model(style_files.onnx, "onnxruntime", "cpu")
    assert y.shape == x.shape and y.dtype == np.float32 and y_odd.shape == (1, 3, 31, 45)
    assert np.abs(y - ref.run(x)).max() < 0.01  # f32 compile: the same picture as ONNX Runtime
    assert np.abs(y - x).mean() > 5


def test_auto_prefers_the_ir_on_cpu_and_never_on_cuda(ir, style_files):
    models = {"onnx": style_files.onnx, "openvino": ir, "pytorch": style_files.pt}
    assert pick_backend(models, "cpu") == ("openvino", ir)
    assert pick_backend({"onnx": style_files.onnx, "pytorch": style_files.pt}, "cpu")[0] == "onnxruntime"
    assert "not cuda" in OpenVINOBackend.unavailable_reason("cuda")
    assert "not mps" in OpenVINOBackend.unavailable_reason("mps")


def test_device_names_map_to_openvinos(monkeypatch):
    monkeypatch.delenv(ENV_DEVICE, raising=False)
    assert [openvino_device(d) for d in ("cpu", "gpu", "gpu.1", "npu", "auto", "cuda", "cuda:0", "mps")] == [
        "CPU", "GPU", "GPU.1", "NPU", "AUTO", None, None, None]  # fmt: skip
    monkeypatch.setenv(ENV_DEVICE, "npu")  # an Intel NPU/iGPU has no torch name: chosen for the cpu device
    assert openvino_device("cpu") == "NPU" and openvino_device("gpu") == "GPU"
    monkeypatch.setenv(ENV_DEVICE, "AUTO:GPU,CPU")
    assert openvino_device("cpu") == "AUTO:GPU,CPU"
    monkeypatch.setenv(ENV_DEVICE, "tpu")
    assert "STYLESTREAM_OPENVINO_DEVICE='tpu' is not an OpenVINO device" in OpenVINOBackend.unavailable_reason("cpu")


def test_a_device_openvino_does_not_see_is_unavailable_with_the_reason(ir, monkeypatch):
    if "NPU" in ov.Core().available_devices:
        pytest.skip("this machine has an NPU")
    monkeypatch.setenv(ENV_DEVICE, "NPU")
    reason = OpenVINOBackend.unavailable_reason("cpu")
    assert reason is not None and reason.startswith("OpenVINO sees no NPU device here (it sees CPU")


def test_precision_follows_the_irs_key_and_defaults_to_f32(style_files, tmp_path):
    core_default = ov.Core().compile_model(ov.convert_model(str(style_files.onnx)), "CPU")
    default = core_default.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    fast = _save(ov.convert_model(str(style_files.onnx)), tmp_path / "fast.xml", "device")
    foreign = _save(ov.convert_model(str(style_files.onnx)), tmp_path / "foreign.xml")  # no key
    assert OpenVINOBackend(fast, "cpu").describe() == f"openvino (CPU, {default})"
    assert OpenVINOBackend(foreign, "cpu").describe() == "openvino (CPU, f32)"


def test_the_bin_is_checked_before_openvino_reads_it(ir, tmp_path):
    bin_ = ir.with_suffix(".bin")
    check_model_file(ir, tmp_path)
    data = bin_.read_bytes()
    bin_.write_bytes(data[:-4])
    with pytest.raises(ValueError, match=rf"lite\.bin is {len(data) - 4} bytes but lite\.xml addresses {len(data)}"):
        check_model_file(ir, tmp_path)
    with pytest.raises(ValueError, match="lite.bin is"):
        open_model(ir, device="cpu")
    bin_.unlink()
    with pytest.raises(ValueError, match=r"its weights lite\.bin are missing"):
        check_model_file(ir, tmp_path)
    bin_.write_bytes(data)
    with pytest.raises(ModelTooLarge, match=r"lite\.xml and its weights are .* over --max-model-mb"):
        check_model_file(ir, tmp_path, max_model_mb=(ir.stat().st_size + len(data) // 2) / 2**20)


def test_weights_outside_the_plugin_folder_refuse_the_plugin(ir, tmp_path):
    plugins, elsewhere = tmp_path / "plugins", tmp_path / "elsewhere"
    plugins.mkdir()
    elsewhere.mkdir()
    (plugins / "evil.xml").write_bytes(ir.read_text().encode())
    ir.with_suffix(".bin").rename(elsewhere / "weights.bin")
    (plugins / "evil.bin").symlink_to(elsewhere / "weights.bin")
    with pytest.raises(OutsideFolder, match="OpenVINO weights 'evil.bin' is outside the plugin folder"):
        check_model_file(plugins / "evil.xml", plugins)
    found = discover_plugins([plugins], include_user_dir=False, include_entry_points=False)
    assert "evil" not in found and any("evil.xml" in e and "outside the plugin folder" in e for e in found.errors)
    with pytest.raises(OutsideFolder):
        OpenVINOBackend(plugins / "evil.xml", "cpu")


BOMB = """<?xml version="1.0"?>
<!DOCTYPE net [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<net name="&d;" version="11"><layers/></net>
"""


@pytest.mark.parametrize("text, why", [
    (BOMB, r"a DOCTYPE refused"),
    ('<?xml version="1.0"?><net version="11"><layers>', r"XML error: no element found"),
    ('<?xml version="1.0"?><model version="11"/>', r"root <model> version '11'; expected <net> version 10 or 11"),
    ("\x00\x01garbage", r"XML error"),
])  # fmt: skip
def test_hostile_xml_is_refused_before_openvino_parses_it(tmp_path, text, why):
    path = tmp_path / "m.xml"
    path.write_bytes(text.encode())
    with pytest.raises(ValueError, match=why):
        check_model_file(path, tmp_path)
    with pytest.raises(ValueError, match=why):
        open_model(path, device="cpu")


@pytest.mark.parametrize("model, stage, why", [
    (lambda: _graph(lambda p: ops.add(p[0], p[1]), inputs=2), "header", r"2 input\(s\) and 1 output\(s\)"),
    (lambda: _graph(lambda p: ops.convert(p[0], "f32"), dtype=ov.Type.i32), "header",
     r"input i32 \[\?,3,\?,\?\]; expected float32"),
    (lambda: _graph(lambda p: ops.reduce_mean(p[0], [1], True)), "load",
     r"the output is \[1,1,64,48\] for a 1x3x64x48 input"),
    (lambda: _graph(lambda p: ops.tile(p[0], [1, 1, 40, 40])), "load", r"the output is \[1,3,2560,1920\]"),
])  # fmt: skip
def test_graphs_that_are_not_styles_are_refused(tmp_path, model, stage, why):
    """The header check refuses what the XML shows; shape inference (before compiling) the rest."""
    path = _save(model(), tmp_path / "m.xml")
    if stage == "load":
        check_model_file(path, tmp_path)
    with pytest.raises(ValueError, match=why):
        check_model_file(path, tmp_path)
        OpenVINOBackend(path, "cpu")


def test_a_tensor_far_larger_than_the_frame_is_refused_before_compiling(tmp_path):
    """Same output shape as the input, but a x40x40 tile in between (1600 values per input pixel)."""
    blow_up = _graph(lambda p: ops.slice(ops.tile(p[0], [1, 1, 40, 40]), [0, 0, 0, 0], ops.shape_of(p[0]),
                                         [1, 1, 1, 1]))  # fmt: skip
    path = _save(blow_up, tmp_path / "m.xml")
    check_model_file(path, tmp_path)  # the header is fine: shape inference decides
    with pytest.raises(ValueError, match=r"not a style model: a tensor holds 4800 values per input pixel"):
        OpenVINOBackend(path, "cpu")
