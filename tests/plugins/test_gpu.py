"""GPU backends: run only where a CUDA GPU exists (skipped on CPU-only machines)."""

import numpy as np
import pytest
import torch

from stylestream.plugins import Engine, discover_plugins

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_torch_cuda_matches_cpu(model_dir, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    with Engine(plugins, backend="torch", device="cpu") as cpu, Engine(plugins, backend="torch", device="cuda") as gpu:
        a = cpu.process("lite", photo)
        b = gpu.process("lite", photo)
        assert gpu.describe("lite").startswith("torch (cuda")
        out = gpu.plugin("lite").process_tensor(torch.from_numpy(photo).cuda())
    assert out.is_cuda
    # reduced-precision autocast: small differences only
    assert np.abs(a.astype(int) - b).mean() < 3


def test_onnxruntime_gpu_provider_or_clear_fallback(model_dir, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    with Engine(plugins, backend="onnxruntime", device="cuda") as engine:
        out = engine.process("lite", photo)
        assert out.shape == photo.shape
        assert engine.describe("lite").startswith("onnxruntime (")
