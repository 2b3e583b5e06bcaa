"""GPU backends and the GPU-resident frame path: run only where a CUDA GPU exists (skipped on CPU-only
machines; `stylestream bench gpu` measures the same path)."""

import asyncio

import numpy as np
import pytest
import torch

from stylestream.plugins import Engine, discover_plugins

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_torch_cuda_takes_the_tensor_path_and_matches_cpu(model_dir, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    with Engine(plugins, backend="torch", device="cpu") as cpu, \
            Engine(plugins, backend="torch", device="cuda") as gpu, \
            Engine(plugins, backend="torch", device="cuda", frame_path="numpy") as host:  # fmt: skip
        a = cpu.process("lite", photo)
        b = gpu.process("lite", photo)
        c = host.process("lite", photo)
        assert gpu.describe("lite").startswith("torch (cuda")
        assert (cpu.frame_path_of("lite"), gpu.frame_path_of("lite"), host.frame_path_of("lite")) == \
            ("numpy", "tensor", "numpy")  # fmt: skip
        stats = gpu.stats()
    # reduced-precision autocast: small differences only
    assert np.abs(a.astype(int) - b).mean() < 3
    assert np.abs(c.astype(int) - b).mean() < 0.5  # the same model on the same GPU, two frame paths
    assert {"upload", "prepare", "model", "finish", "download"} <= set(stats["stages"])


def test_torchscript_cuda_matches_cpu(model_dir, photo, tmp_path):
    from stylestream.export.torchscript import save_torchscript
    from stylestream.models import load_model

    save_torchscript(load_model(model_dir / "lite.pt"), tmp_path / "lite.torchscript")
    plugins = discover_plugins([tmp_path], include_user_dir=False)
    with Engine(plugins, device="cpu") as cpu, Engine(plugins, backend="torchscript", device="cuda") as gpu:
        a = cpu.process("lite", photo)
        b = gpu.process("lite", photo, {"strength": 0.5, "scale": 0.5})
        c = cpu.process("lite", photo, {"strength": 0.5, "scale": 0.5})
        assert gpu.describe("lite").startswith("torchscript (cuda")
        assert gpu.frame_path_of("lite") == "tensor"
        d = gpu.process("lite", photo)
    assert np.abs(a.astype(int) - d).max() <= 2  # fp32 on both
    assert np.abs(c.astype(int) - b).max() <= 2


def test_many_callers_share_gpu_batches_at_720p(model_dir):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    frames = [np.random.default_rng(i).integers(0, 256, (720, 1280, 3), dtype=np.uint8) for i in range(8)]
    with Engine(plugins, backend="torch", device="cuda", batch_window_ms=50) as engine:
        ref = [engine.process("lite", f[None])[0] for f in frames]

        async def main():
            return await asyncio.gather(*(engine.submit("lite", f) for f in frames))

        got = asyncio.run(main())
        stats = engine.stats()
    for g, r in zip(got, ref):
        assert np.abs(g.astype(int) - r).mean() < 0.5
    assert stats["batches"] < 8 + 8  # the 8 callers shared batches


def test_onnxruntime_gpu_provider_or_clear_fallback(model_dir, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    with Engine(plugins, backend="onnxruntime", device="cuda") as engine:
        out = engine.process("lite", photo)
        assert out.shape == photo.shape
        assert engine.describe("lite").startswith("onnxruntime (")
        assert engine.frame_path_of("lite") == "numpy"  # ONNX Runtime takes host arrays
