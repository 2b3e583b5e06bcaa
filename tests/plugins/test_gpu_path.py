"""The engine's tensor frame path (stylestream.plugins.framepath.TensorPath), run on CPU tensors: the
same logic the GPU runs (resizes, rounding, per-frame blends, batching across callers), so it must give
the numpy path's frames within one level. The CUDA-only parts (pinned memory, streams) are in test_gpu."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import torch

from stylestream.plugins import Engine, NeuralPlugin, PluginSet, StylePlugin, discover_plugins
from stylestream.plugins.framepath import NumpyPath, TensorPath
from stylestream.runtime import Backend


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return int(np.abs(a.astype(int) - b).max())


@pytest.mark.parametrize(("src", "dst"), [
    ((96, 128), (48, 64)),  # area, integer ratio
    ((96, 128), (37, 53)),  # area, fractional ratio
    ((97, 131), (97, 60)),  # area along one axis only
    ((40, 57), (96, 128)),  # bilinear up
    ((9, 200), (16, 100)),  # one side up, the other down: bilinear, as OpenCV
])  # fmt: skip
def test_tensor_resize_matches_opencv_within_one_level(src, dst):
    frames = np.random.default_rng(sum(src)).integers(0, 256, (2, *src, 3), dtype=np.uint8)
    ref = NumpyPath.resize(frames, *dst)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    got = TensorPath("cpu").resize(x, *dst).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    assert _diff(got, ref) <= 1


@pytest.mark.parametrize("arch", ["lite", "johnson"])
def test_tensor_path_gives_the_numpy_paths_frames(model_dir, photo, arch):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    frames = np.concatenate([photo, photo[:, ::-1]])
    with Engine(plugins, backend="torch", frame_path="numpy") as ref, \
            Engine(plugins, backend="torch", frame_path="tensor") as tensor:  # fmt: skip
        assert (ref.frame_path_of(arch), tensor.frame_path_of(arch)) == ("numpy", "tensor")
        for params in [None, {"strength": 0.7}, {"scale": 0.5}, {"scale": 0.6, "strength": 0.3}]:
            assert _diff(tensor.process(arch, frames, params), ref.process(arch, frames, params)) <= 1, params
        assert np.array_equal(tensor.process(arch, frames, {"strength": 0}), frames)
        odd = np.ascontiguousarray(frames[:, :37, :53])
        assert _diff(tensor.process(arch, odd), ref.process(arch, odd)) <= 1


def test_tensor_path_with_max_side_and_tiny_frames(model_dir, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    with Engine(plugins, backend="torch", frame_path="numpy", max_side=64) as ref, \
            Engine(plugins, backend="torch", frame_path="tensor", max_side=64) as tensor:  # fmt: skip
        assert _diff(tensor.process("lite", photo), ref.process("lite", photo)) <= 1  # 96x128 -> 48x64 and back
        tiny = np.ascontiguousarray(photo[:, :9, :12])  # enlarged to the nets' 16 px minimum and back
        a, b = tensor.process("lite", tiny), ref.process("lite", tiny)
        assert a.shape == tiny.shape
        assert _diff(a, b) <= 1


def test_callers_with_their_own_strengths_share_a_tensor_batch(model_dir, photo):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    frame = photo[0]
    strengths = [1.0, 0.5, 0.0, 0.25]
    with Engine(plugins, backend="torch", frame_path="numpy") as ref, \
            Engine(plugins, backend="torch", frame_path="tensor", batch_window_ms=200) as tensor:  # fmt: skip
        expected = [ref.process("johnson", frame[None], {"strength": s})[0] for s in strengths]

        async def main():
            return await asyncio.gather(*(tensor.submit("johnson", frame, {"strength": s, "stabilize": 0.5})
                                          for s in strengths))  # fmt: skip

        got = asyncio.run(main())
        stats = tensor.stats()
    for s, g, e in zip(strengths, got, expected):
        assert _diff(g, e) <= 1, s
    assert stats["paths"] == {"johnson": "tensor"}
    assert stats["frames_by_path"] == {"tensor": 3}  # strength 0 never reaches a batch
    assert stats["batches"] < 3  # the callers shared a batch despite their strengths and stabilize
    for stage in ("queue", "stage", "upload", "prepare", "model", "finish"):
        assert stats["stages"][stage]["frames"] == 3 and stats["stages"][stage]["seconds"] >= 0, stage
    assert stats["stages"]["model"]["ms_per_frame"] > 0


class _CudaLike(Backend):
    """A backend on some device that goes through host memory for tensors (never run)."""

    name = "fake"

    def __init__(self, device: str) -> None:
        super().__init__(__file__, device)


class _Resident(_CudaLike):
    """One that runs tensors on its own device."""

    def run_tensor(self, x):
        return x


@pytest.mark.parametrize(("runner", "expected"), [
    (_Resident("cuda:0"), "tensor"),  # a CUDA backend that keeps tensors on its device
    (_CudaLike("cuda:0"), "numpy"),  # goes through host memory anyway (e.g. ONNX Runtime)
    (_Resident("cpu"), "numpy"),  # on CPU the numpy path is as fast and needs no torch
])  # fmt: skip
def test_auto_takes_the_tensor_path_only_for_device_resident_cuda_backends(model_dir, monkeypatch, runner,
                                                                          expected):  # fmt: skip
    monkeypatch.setattr(NeuralPlugin, "runner", lambda self: runner)
    with Engine(discover_plugins([model_dir], include_user_dir=False), backend="torch") as engine:
        assert engine.frame_path_of("lite") == expected
        assert engine.frame_path_of("sketch") == "numpy"  # filters always
    with Engine(discover_plugins([model_dir], include_user_dir=False), frame_path="numpy") as engine:
        assert engine.frame_path_of("lite") == "numpy"
    with pytest.raises(ValueError, match="unknown frame path 'gpu'"):
        Engine(PluginSet(), frame_path="gpu")


class _Slow:
    """A batch that is not done until result() is called (as a CUDA batch), recording the order."""

    done = False

    def __init__(self, log, n, frames, fail):
        self.log, self.n, self.frames, self.fail, self.times = log, n, frames, fail, {"model": 0.001}

    def result(self):
        self.log.append(("result", self.n))
        if self.fail:
            raise RuntimeError("device error")
        return 255 - np.stack(self.frames)


class _InFlightPath:
    name = "tensor"

    def __init__(self):
        self.log, self.n = [], 0
        self.gate = threading.Event()

    def start(self, plugin, frames, strengths, size, params):
        self.gate.wait(5)
        self.n += 1
        self.log.append(("start", self.n))
        return _Slow(self.log, self.n, frames, fail=any(f[0, 0, 0] == 13 for f in frames))


class _Inverter(StylePlugin):
    name = "inv"

    def apply(self, frames, params):
        return 255 - frames


def test_worker_starts_the_next_batch_before_waiting_for_the_one_in_flight():
    plugins = PluginSet()
    plugins.add(_Inverter(), "test")
    path = _InFlightPath()
    with Engine(plugins, max_batch=2, batch_window_ms=0) as engine:
        engine._paths["inv"] = path  # as if the style ran on a GPU
        frames = [np.full((8, 8, 3), v, np.uint8) for v in (1, 2, 3, 4, 13, 5)]
        futures = [engine.submit_threadsafe("inv", f) for f in frames]  # queued while the worker waits
        path.gate.set()
        results = [f.exception(10) or f.result() for f in futures]
    for f, r in zip(frames, results):
        if f[0, 0, 0] == 13:
            assert isinstance(r, RuntimeError) and "device error" in str(r)
        else:
            assert np.array_equal(r, 255 - f)
    first = path.log.index(("result", 1))
    assert path.log.index(("start", 2)) < first  # batch 2 was started while batch 1 was in flight
    assert sum(1 for e in path.log if e[0] == "start") == 5  # 3 batches of 2, the failed one retried frame by frame
