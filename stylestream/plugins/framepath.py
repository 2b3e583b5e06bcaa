"""The two ways a batch of frames goes through a style, behind the engine's one frame contract
(stylestream.plugins.engine decides the processing size and the strengths; a path only carries them out):
run the style at the processing size, bring the result back to the frame size, blend each frame with
its original by its own strength.

- `NumpyPath`: host memory and OpenCV; every style (filters, every backend).
- `TensorPath`: torch tensors on the style backend's device, for neural styles whose backend runs
  tensors where they live (`run_tensor`). On CUDA the batch is staged once in pinned host memory,
  uploaded as uint8 (a quarter of float32's bytes) on an upload stream; converted, resized, run,
  blended and turned back into uint8 on a compute stream; downloaded once on a download stream. The
  engine keeps one batch in flight while it stages the next, so uploads, compute and downloads of
  consecutive batches overlap. On CPU the same code runs without streams (that is how it is tested).

Both paths resize alike (OpenCV's INTER_AREA to shrink, its bit-exact INTER_LINEAR_EXACT otherwise, which
the tensor path reproduces exactly) and round at the same points, so their frames agree within one level."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import cv2
import numpy as np

# Stages of a batch, in order. queue: submit -> batch taken (per frame); stage: frames gathered into one
# host buffer; upload / download: host <-> device copies (tensor path); prepare: to float and resized;
# model: the style itself; finish: back to the frame size, blended, to uint8.
STAGES = ("queue", "stage", "upload", "prepare", "model", "finish", "download")


class EngineStats:
    """Frames, batches and seconds per stage (framepath.STAGES), thread-safe; `snapshot` for /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames = 0
        self.batches = 0
        self.frames_by_path: dict[str, int] = {}
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.stage_frames = dict.fromkeys(STAGES, 0)

    def record(self, path: str, n: int, times: Mapping[str, float], queue_s: float | None = None) -> None:
        """One batch of n frames; `queue_s` is the sum of its frames' waits (submit path only)."""
        with self._lock:
            self.frames += n
            self.batches += 1
            self.frames_by_path[path] = self.frames_by_path.get(path, 0) + n
            for stage, secs in {**times, **({"queue": queue_s} if queue_s is not None else {})}.items():
                self.seconds[stage] += secs
                self.stage_frames[stage] += n

    def snapshot(self) -> dict[str, Any]:
        """{"frames", "batches", "mean_batch", "frames_by_path", "stages": {stage: {"seconds",
        "frames", "ms_per_frame"}}}: totals since the engine started. A batch stage's ms_per_frame is its
        cost shared by a batch's frames; queue's is the mean wait of a frame. GPU stages are GPU time."""
        with self._lock:
            stages = {s: {"seconds": round(self.seconds[s], 6), "frames": self.stage_frames[s],
                          "ms_per_frame": round(1000 * self.seconds[s] / self.stage_frames[s], 4)}
                      for s in STAGES if self.stage_frames[s]}  # fmt: skip
            return {"frames": self.frames, "batches": self.batches,
                    "mean_batch": round(self.frames / self.batches, 3) if self.batches else 0.0,
                    "frames_by_path": dict(self.frames_by_path), "stages": stages}  # fmt: skip


class Batch(Protocol):
    """A batch started by a path: `result()` waits for it; `times` (seconds per stage) is complete after."""

    done: bool  # result() returns without waiting on a device
    times: dict[str, float]

    def result(self) -> np.ndarray: ...


class FramePath(Protocol):
    name: str

    def start(self, plugin: Any, frames: np.ndarray | Sequence[np.ndarray], strengths: Sequence[float],
              size: tuple[int, int], params: dict[str, float]) -> Batch: ...  # fmt: skip


def shrinks(src: tuple[int, int], dst: tuple[int, int]) -> bool:
    """Whether a resize from src to dst (H, W) averages areas (neither side grows: OpenCV's INTER_AREA);
    otherwise it interpolates bilinearly (INTER_LINEAR_EXACT)."""
    return dst[0] <= src[0] and dst[1] <= src[1]


def blend(stylized: np.ndarray, original: np.ndarray, strength: float) -> np.ndarray:
    """strength * stylized + (1 - strength) * original, in uint8 (the numpy path's rounding)."""
    if strength >= 1.0:
        return stylized
    out = stylized.astype(np.float32) * strength + original.astype(np.float32) * (1.0 - strength) + 0.5
    return out.astype(np.uint8)


class _Done:
    done = True

    def __init__(self, out: np.ndarray, times: dict[str, float]) -> None:
        self._out, self.times = out, times

    def result(self) -> np.ndarray:
        return self._out


class NumpyPath:
    name = "numpy"

    @staticmethod
    def resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
        # LINEAR_EXACT: bit-exact, so the tensor path can give the same levels (INTER_LINEAR's fixed point
        # differs by one level on ~12% of pixels, which a net in front of the resize amplifies)
        interp = cv2.INTER_AREA if shrinks(frames.shape[1:3], (h, w)) else cv2.INTER_LINEAR_EXACT
        return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])

    def start(self, plugin: Any, frames: np.ndarray | Sequence[np.ndarray], strengths: Sequence[float],
              size: tuple[int, int], params: dict[str, float]) -> Batch:  # fmt: skip
        t0 = time.perf_counter()
        x = frames if isinstance(frames, np.ndarray) else np.stack(frames)
        h, w = x.shape[1:3]
        t1 = time.perf_counter()
        src = x if size == (h, w) else self.resize(x, *size)
        t2 = time.perf_counter()
        out = plugin.apply(src, params)
        if not isinstance(out, np.ndarray) or out.shape != src.shape or out.dtype != np.uint8:
            got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise RuntimeError(f"style {plugin.name!r} returned {got} for a uint8 {src.shape} input")
        t3 = time.perf_counter()
        if size != (h, w):
            out = self.resize(out, h, w)
        if any(s < 1.0 for s in strengths):
            if np.may_share_memory(out, x) or not out.flags.writeable:  # never write into the caller's frames
                out = out.copy()
            for i, s in enumerate(strengths):
                out[i] = blend(out[i], x[i], s)
        t4 = time.perf_counter()
        return _Done(out, {"stage": t1 - t0, "prepare": t2 - t1, "model": t3 - t2, "finish": t4 - t3})


NUMPY_PATH = NumpyPath()


@functools.lru_cache(maxsize=32)
def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of an area-averaging shrink along one axis (OpenCV INTER_AREA): each output
    pixel is the mean of the input span it covers, partial pixels weighted by their overlap."""
    scale = n_in / n_out
    lo = (np.arange(n_out) * scale)[:, None]
    j = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(lo + scale, j + 1) - np.maximum(lo, j), 0.0, None)
    return (overlap / scale).astype(np.float32)


@functools.lru_cache(maxsize=32)
def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis as OpenCV's INTER_LINEAR_EXACT computes them: half-pixel centres,
    edges clamped, weights rounded to 1/256. Returns (i0, i1, w0, w1): out[d] = w0 x[i0] + w1 x[i1]."""
    f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i0 = np.floor(f).astype(np.int64)
    frac = f - i0
    frac[i0 < 0], i0[i0 < 0] = 0.0, 0
    last = i0 >= n_in - 1
    frac[last], i0[last] = 0.0, n_in - 1
    w1 = np.round(frac * 256) / 256
    w0 = np.round((1 - frac) * 256) / 256
    return i0, np.minimum(i0 + 1, n_in - 1), w0.astype(np.float32), w1.astype(np.float32)


class TensorPath:
    """The tensor path on one torch device (see the module's docstring)."""

    name = "tensor"

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._local = threading.local()  # CUDA streams are per thread: each engine worker gets its own
        self._weights: dict[tuple[str, int, int], list[Any]] = {}
        self._lock = threading.Lock()

    def _streams(self) -> tuple[Any, Any, Any] | None:
        if not self.cuda:
            return None
        streams = getattr(self._local, "streams", None)
        if streams is None:
            streams = self._local.streams = tuple(self.torch.cuda.Stream(self.device) for _ in range(3))
        return streams

    def _cached(self, kind: str, n_in: int, n_out: int) -> Any:
        """Resize weights on this device, made once per (kind, sizes)."""
        with self._lock:
            t = self._weights.get((kind, n_in, n_out))
            if t is None:
                make = _area_weights if kind == "area" else _linear_taps
                made = make(n_in, n_out)
                arrays = made if isinstance(made, tuple) else (made,)
                t = self._weights[(kind, n_in, n_out)] = [self.torch.from_numpy(a).to(self.device) for a in arrays]
            return t

    def _linear(self, x: Any, dim: int, n_out: int) -> Any:
        n_in = x.shape[dim]
        if n_in == n_out:
            return x
        i0, i1, w0, w1 = self._cached("linear", n_in, n_out)
        shape = (-1, 1) if dim == -2 else (-1,)
        return x.index_select(dim, i0) * w0.view(shape) + x.index_select(dim, i1) * w1.view(shape)

    def resize(self, x: Any, h: int, w: int) -> Any:
        """Float (N, C, H, W) on the uint8 grid -> (N, C, h, w), rounded like OpenCV's uint8 resizes."""
        H, W = x.shape[-2:]
        if (h, w) == (H, W):
            return x
        if not shrinks((H, W), (h, w)):
            x = self._linear(self._linear(x, -2, h), -1, w)  # exact: weights on a 1/256 grid fit float32
        elif H % h == 0 and W % w == 0:
            x = self.torch.nn.functional.avg_pool2d(x, (H // h, W // w))  # the area mean, cheaply
        else:  # separable area weights: two matrix products
            if h != H:
                x = self._cached("area", H, h)[0] @ x
            if w != W:
                x = x @ self._cached("area", W, w)[0].T
        return x.add_(0.5).floor_().clamp_(0, 255)

    def _host(self, frames: np.ndarray | Sequence[np.ndarray]) -> Any:
        """The batch as one uint8 host tensor: pinned on CUDA (so the upload is a DMA that can overlap),
        from torch's caching host allocator, which reuses a block once its copies have finished."""
        torch = self.torch
        if not self.cuda:
            return torch.from_numpy(frames if isinstance(frames, np.ndarray) else np.stack(frames))
        shape = (len(frames), *frames[0].shape)
        host = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        view = host.numpy()
        for i, f in enumerate(frames):
            view[i] = f
        return host

    def start(self, plugin: Any, frames: np.ndarray | Sequence[np.ndarray], strengths: Sequence[float],
              size: tuple[int, int], params: dict[str, float]) -> Batch:  # fmt: skip
        torch = self.torch
        t0 = time.perf_counter()
        host = self._host(frames)
        stage = time.perf_counter() - t0
        h, w = host.shape[1:3]
        streams = self._streams()
        up, comp, down = streams if streams else (None, None, None)
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(7)] if self.cuda else None

        def on(stream: Any) -> contextlib.AbstractContextManager:
            return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

        def mark(i: int) -> None:
            if ev is not None:
                ev[i].record()

        clock = [time.perf_counter()]
        cpu_times: dict[str, float] = {}

        def lap(stage_name: str) -> None:  # CPU: host time per stage (CUDA: the events time the stages)
            if ev is None:
                now = time.perf_counter()
                cpu_times[stage_name] = now - clock[0]
                clock[0] = now

        with torch.inference_mode():
            with on(up):
                mark(0)
                x8 = host.to(self.device, non_blocking=True)
                mark(1)
            lap("upload")
            with on(comp):
                if comp is not None:
                    comp.wait_event(ev[1])
                    x8.record_stream(comp)  # allocated on the upload stream, read here
                mark(2)
                x = x8.permute(0, 3, 1, 2).float()
                src = self.resize(x, *size)
                lap("prepare")
                mark(3)
                y = plugin.apply_tensor(src).to(self.device, torch.float32)
                mark(4)
                lap("model")
                y = (y + 0.5).floor_().clamp_(0, 255)  # what the numpy path's uint8 output holds
                y = self.resize(y, h, w)
                if any(s < 1.0 for s in strengths):
                    s = torch.tensor(list(strengths), dtype=torch.float32, device=self.device).view(-1, 1, 1, 1)
                    y = torch.where(s < 1.0, (y * s + x * (1.0 - s) + 0.5).floor_(), y)
                out8 = y.to(torch.uint8).permute(0, 2, 3, 1).contiguous()
                mark(5)
                lap("finish")
            if down is None:
                return _Done(out8.cpu().numpy(), {"stage": stage, **cpu_times})
            with on(down):
                down.wait_event(ev[5])
                out8.record_stream(down)
                result = torch.empty(tuple(out8.shape), dtype=torch.uint8, pin_memory=True)
                result.copy_(out8, non_blocking=True)
                mark(6)
        return _CudaBatch(result, ev, stage)


class _CudaBatch:
    """A batch in flight on the GPU; `result()` waits for its download (the only host synchronization)."""

    done = False

    def __init__(self, result: Any, events: list[Any], stage_s: float) -> None:
        self._result, self._ev = result, events
        self.times = {"stage": stage_s}

    def result(self) -> np.ndarray:
        ev = self._ev
        ev[6].synchronize()
        ms = [ev[0].elapsed_time(ev[1]), ev[2].elapsed_time(ev[3]), ev[3].elapsed_time(ev[4]),
              ev[4].elapsed_time(ev[5]), ev[5].elapsed_time(ev[6])]  # fmt: skip
        self.times.update({k: v / 1000.0 for k, v in zip(("upload", "prepare", "model", "finish", "download"), ms)})
        # The callers' frames are views of this pinned tensor; it returns to torch's host cache once
        # the last of them is dropped.
        return self._result.numpy()
