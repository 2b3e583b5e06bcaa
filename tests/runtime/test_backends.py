"""The one runtime: each file kind opens with the backend the formats table names, they agree on the same
weights, and what cannot run says why (and what to install)."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from stylestream.export.formats import FORMATS, TENSORRT, served_suffixes
from stylestream.runtime import BACKENDS, BackendUnavailable, open_model, pick_backend
from stylestream.runtime.onnxruntime_backend import OnnxRuntimeBackend, has_fp16, trt_ep_cache


def _frames() -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (2, 3, 37, 53)).astype(np.float32)


def test_every_file_kind_runs_on_the_backend_its_format_row_names(style_files):
    x = _frames()
    outputs = {}
    for path, describe in [(style_files.pt, "torch (cpu, fp32)"), (style_files.onnx, "onnxruntime (CPU)"),
                           (style_files.torchscript, "torchscript (cpu)")]:  # fmt: skip
        fmt = served_suffixes()[path.suffix]
        backend = open_model(path, device="cpu")
        try:
            assert type(backend) is BACKENDS[fmt.backend] and backend.describe() == describe
            y = backend.run(x)
            assert y.shape == x.shape and y.dtype == np.float32
            outputs[fmt.backend] = y
            assert torch.allclose(backend.run_tensor(torch.from_numpy(x)).cpu(), torch.from_numpy(y), atol=1e-3)
        finally:
            backend.close()
    assert set(outputs) == {"torch", "onnxruntime", "torchscript"}
    for name in ("onnxruntime", "torchscript"):  # the same weights: the same picture
        assert np.abs(outputs[name] - outputs["torch"]).max() < 0.5, name
    assert np.abs(outputs["torch"] - x).mean() > 5  # the (random) net does change the frames


def test_ts_suffix_is_torchscript_too(style_files, tmp_path):
    ts = tmp_path / "style.ts"
    shutil.copy(style_files.torchscript, ts)
    assert served_suffixes()[".ts"].name == "torchscript"
    assert open_model(ts, device="cpu").describe() == "torchscript (cpu)"


def test_auto_prefers_onnxruntime_on_cpu_and_explicit_backends_need_their_file(style_files):
    models = {"pytorch": style_files.pt, "onnx": style_files.onnx, "torchscript": style_files.torchscript}
    assert pick_backend(models, "cpu") == ("onnxruntime", style_files.onnx)
    assert pick_backend({"torchscript": style_files.torchscript, "pytorch": style_files.pt}, "cpu")[0] == "torch"
    assert pick_backend(models, "cpu", "torchscript") == ("torchscript", style_files.torchscript)
    with pytest.raises(ValueError, match=r"backend 'torchscript' needs a \.torchscript or \.ts model file"):
        pick_backend({"onnx": style_files.onnx}, "cpu", "torchscript")
    with pytest.raises(BackendUnavailable, match="TorchScript styles run on CPU or CUDA, not mps"):
        pick_backend({"torchscript": style_files.torchscript}, "mps", "torchscript")


def test_what_no_backend_serves_says_why(tmp_path):
    repo = tmp_path / "mosaic"
    (repo / "1").mkdir(parents=True)
    (repo / "config.pbtxt").write_text('name: "mosaic"\n')
    with pytest.raises(ValueError, match=r"mosaic: a Triton model repository is served by Triton Inference Server"):
        open_model(repo, device="cpu")
    with pytest.raises(ValueError, match=r"x\.h5: not a model file \(expected \.pt, \.onnx, .*\)"):
        open_model(tmp_path / "x.h5", device="cpu")  # a Keras file: no format row names .h5


def test_tensorrt_says_what_to_install(style_files):
    reason = BACKENDS["tensorrt"].unavailable_reason("cpu")
    assert reason is not None
    if TENSORRT.missing():
        assert "pip install stylestream[trt]" in reason
    else:
        assert "only on a CUDA GPU" in reason
    assert FORMATS["tensorrt"].requires is TENSORRT  # one requirement: export preflight and runtime agree


def test_an_onnxruntime_provider_asked_for_by_name_must_exist(style_files):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    # the device string is taken as given (no GPU here): the provider check is what is tested
    with pytest.raises(BackendUnavailable, match=r"no CUDAExecutionProvider here.*pip install stylestream\[gpu\]"):
        OnnxRuntimeBackend(style_files.onnx, "cuda", providers=("cuda",))
    with pytest.raises(BackendUnavailable, match="runs on a CUDA device, not cpu"):
        OnnxRuntimeBackend(style_files.onnx, "cpu", providers=("tensorrt",))
    with pytest.raises(ValueError, match="unknown onnxruntime provider 'rocm'"):
        OnnxRuntimeBackend(style_files.onnx, "cpu", providers=("rocm",))
    assert OnnxRuntimeBackend(style_files.onnx, "cpu", providers=("cpu",)).describe() == "onnxruntime (CPU)"


def test_trt_ep_cache_is_one_folder_keyed_on_gpu_ort_and_the_model_bytes(tmp_path, isolated_cache):
    a = tmp_path / "a" / "m.onnx"
    a.parent.mkdir()
    a.write_bytes(b"one")
    first = trt_ep_cache(a, 0)
    b = tmp_path / "b" / "elsewhere.onnx"
    b.parent.mkdir()
    b.write_bytes(b"one")
    assert trt_ep_cache(b, 0) == first  # keyed on content, not on where the file lies
    a.write_bytes(b"two")  # a re-export in place: ORT names engines by graph, not weights, so a new folder
    second = trt_ep_cache(a, 0)
    assert second != first and second.parent == first.parent
    assert first.parent.parent == isolated_cache / "trt-ep" and f"ort{ort.__version__}" in first.parent.name


def test_trt_ep_runs_fp16_only_where_the_file_is_fp16(style_files, tmp_path):
    from stylestream.export.onnx_export import convert_fp16

    fp16 = tmp_path / "m-fp16.onnx"
    convert_fp16(style_files.onnx, fp16)
    assert not has_fp16(style_files.onnx) and has_fp16(fp16)
