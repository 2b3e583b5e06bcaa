"""The one device policy: names resolve or fail with a message that says what to use, the thread count
leaves the codecs their core, the cache folder follows the environment."""

from __future__ import annotations

import pytest
import torch

from stylestream import devices


def test_resolve_names_and_clear_errors():
    assert devices.resolve("cpu") == torch.device("cpu")
    assert devices.resolve_name("auto") in ("cpu", "cuda", "mps")
    for bad, words in [("gpu", "unknown device"), ("tpu:0", "unknown device")]:
        with pytest.raises(devices.DeviceError, match=words):
            devices.resolve(bad)
    if not torch.cuda.is_available():
        with pytest.raises(devices.DeviceError, match="--device cpu"):
            devices.resolve("cuda")
    else:
        with pytest.raises(devices.DeviceError, match="CUDA device"):
            devices.resolve(f"cuda:{torch.cuda.device_count()}")


def test_thread_policy_reserves_codec_cores(monkeypatch):
    monkeypatch.delenv("STYLESTREAM_THREADS", raising=False)
    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    assert devices.compute_threads(reserve=0) == 2
    assert devices.compute_threads(reserve=1) == 1
    assert devices.compute_threads(reserve=5) == 1  # never zero
    monkeypatch.setenv("STYLESTREAM_THREADS", "3")
    assert devices.compute_threads(reserve=1) == 3  # the user's number wins
    monkeypatch.setenv("STYLESTREAM_THREADS", "many")
    with pytest.raises(devices.DeviceError, match="whole number"):
        devices.compute_threads()


def test_reserve_cores_applies_to_torch(monkeypatch):
    monkeypatch.delenv("STYLESTREAM_THREADS", raising=False)
    monkeypatch.setattr(devices, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        devices.reserve_cores(1)
        assert torch.get_num_threads() == 1 and devices.compute_threads() == 1
    finally:
        devices.reserve_cores(0)
        torch.set_num_threads(before)


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STYLESTREAM_CACHE", str(tmp_path / "c"))
    assert devices.cache_dir("onnx", "x.onnx") == tmp_path / "c" / "onnx" / "x.onnx"
    monkeypatch.delenv("STYLESTREAM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert devices.cache_dir() == tmp_path / "xdg" / "stylestream"
