import shutil

import numpy as np
import pytest

from stylestream.plugins import BackendUnavailable, Engine, discover_plugins, pick_backend, plugin_from_model
from stylestream.registry import UnknownNameError


@pytest.mark.parametrize("arch", ["lite", "johnson"])
def test_pt_and_onnx_give_the_same_output(model_dir, arch, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    frames = np.concatenate([photo, photo[:, ::-1]])
    with Engine(plugins, backend="torch") as et, Engine(plugins, backend="onnxruntime") as eo:
        a = et.process(arch, frames)
        b = eo.process(arch, frames)
        assert et.describe(arch) == "torch (cpu, fp32)"
        assert eo.describe(arch) == "onnxruntime (CPU)"
    assert a.shape == frames.shape and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b).max() <= 2  # float rounding at the uint8 boundary
    assert np.abs(a.astype(int) - frames).mean() > 5  # the (random) net does change the frame


def test_auto_backend_choice_and_errors(model_dir, tmp_path):
    both = {"pytorch": model_dir / "lite.pt", "onnx": model_dir / "lite.onnx"}
    assert pick_backend(both, "cpu") == ("onnxruntime", model_dir / "lite.onnx")
    assert pick_backend({"pytorch": both["pytorch"]}, "cpu") == ("torch", both["pytorch"])
    with pytest.raises(ValueError, match=r"backend 'torch' needs a \.pt model file.*lite\.onnx"):
        pick_backend({"onnx": both["onnx"]}, "cpu", "torch")
    with pytest.raises(BackendUnavailable, match="tensorrt"):
        pick_backend({"tensorrt": tmp_path / "x.engine"}, "cpu")
    with pytest.raises(ValueError, match="unknown model format 'pt'"):
        pick_backend({"pt": both["pytorch"]}, "cpu")
    with pytest.raises(UnknownNameError, match="unknown backend 'tflite'; choose one of: torch, onnxruntime"):
        Engine(discover_plugins(), backend="tflite")


def test_torchscript_style_in_a_plugin_folder(model_dir, tmp_path, photo):
    from stylestream.export.torchscript import save_torchscript
    from stylestream.models import load_model

    folder = tmp_path / "styles"
    folder.mkdir()
    save_torchscript(load_model(model_dir / "lite.pt"), folder / "lite.ts")
    plugins = discover_plugins([folder], include_user_dir=False)
    assert plugins.get("lite").backend == "torchscript"
    with Engine(plugins) as ts, Engine(discover_plugins([model_dir], include_user_dir=False), backend="torch") as pt:
        a = ts.process("lite", photo)
        assert ts.describe("lite") == "torchscript (cpu)"
        b = pt.process("lite", photo)
    with Engine(plugins, frame_path="tensor") as tensor:  # TorchScript runs tensors where they live
        out = tensor.process("lite", photo)
        assert tensor.frame_path_of("lite") == "tensor"
    assert np.abs(a.astype(int) - b).max() <= 2
    assert np.abs(out.astype(int) - a).max() <= 1


def test_odd_and_tiny_frames_and_scale_param(model_dir):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    with Engine(plugins) as engine:
        for shape in [(1, 37, 53, 3), (1, 9, 12, 3)]:
            f = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
            assert engine.process("lite", f).shape == shape
        f = np.random.default_rng(2).integers(0, 256, (1, 64, 96, 3), dtype=np.uint8)
        full = engine.process("lite", f)
        half = engine.process("lite", f, {"scale": 0.5})
        assert half.shape == f.shape and not np.array_equal(full, half)


def test_model_file_style_and_broken_model_errors(model_dir, tmp_path):
    plugin = plugin_from_model(model_dir / "lite.onnx")
    assert plugin.name == "lite" and plugin.backend == "onnxruntime"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="bad.onnx: broken model file"):
        plugin_from_model(bad)
    # a model that breaks after discovery fails that style's frames with the reason, not the engine
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(model_dir / "lite.onnx", folder / "late.onnx")
    plugins = discover_plugins([folder], include_user_dir=False)
    (folder / "late.onnx").write_bytes(b"\x08\x07" + b"x" * 100)
    f = np.zeros((1, 32, 32, 3), np.uint8)
    with Engine(plugins) as engine:
        with pytest.raises(ValueError, match="late.onnx: not a loadable ONNX model"):
            engine.process("late", f)
        assert engine.process("sketch", f).shape == f.shape


def test_pt_only_style_runs_on_onnxruntime_via_cached_conversion(model_dir, tmp_path, photo, isolated_cache):
    folder = tmp_path / "styles"
    folder.mkdir()
    shutil.copy(model_dir / "lite.pt", folder / "lite.pt")
    plugins = discover_plugins([folder], include_user_dir=False)
    with Engine(plugins) as auto, Engine(plugins, backend="torch") as torch_engine:
        a = auto.process("lite", photo)
        assert auto.describe("lite") == "onnxruntime (CPU)"
        b = torch_engine.process("lite", photo)
    assert np.abs(a.astype(int) - b).max() <= 2
    cached = list((isolated_cache / "stylestream" / "onnx").glob("lite-*.onnx"))
    assert len(cached) == 1  # converted once, keyed on the file's content
    # a second engine reuses the cached file instead of converting again
    mtime = cached[0].stat().st_mtime_ns
    with Engine(discover_plugins([folder], include_user_dir=False)) as again:
        again.process("lite", photo)
    assert cached[0].stat().st_mtime_ns == mtime
