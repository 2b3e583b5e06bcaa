"""The inference engine: every stylized frame (server, CLI, virtual camera) goes through here, and this
module is the one place that enforces the frame contract along a frame's path:

- frames are checked once (`check_frames`: uint8 RGB, the right rank);
- parameters are resolved once (`resolve`: defaults, clamping, unknown names refused); `stabilize` is
  validated here but applied across frames by stylestream.temporal, so it never changes a batch;
- the processing size is decided once (`processing_size`: the engine's max_side, a style's `scale`
  parameter, its minimum side), and a frame path resizes to it and back;
- `strength` is blended once, per frame, after the batch, so callers with different strengths still
  share a batch.

Styles' `apply` only stylize; `StylePlugin.process` calls `stylize` below. Frame paths
(stylestream.plugins.framepath): numpy for every style, and the GPU-resident tensor path (pinned uploads,
CUDA streams, one download), chosen automatically for a neural style whose backend runs tensors on a
CUDA device. `Engine.stats()` reports frames, batches and per-stage times (for /metrics and benchmarks).

`process` is the synchronous batch path. `submit` is the asynchronous per-frame path used by the
server: frames from many callers queue up, and a worker thread runs all queued frames that share a
style, shape and parameters as one batch, then hands each caller back its own frame."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stylestream.plugins.base import ENGINE_PARAMS, StylePlugin
from stylestream.plugins.discovery import PluginSet
from stylestream.plugins.framepath import NUMPY_PATH, Batch, EngineStats, FramePath, TensorPath, blend
from stylestream.plugins.neural import NeuralPlugin, device_resident
from stylestream.plugins.options import MIN_SIDE

log = logging.getLogger(__name__)

FRAME_PATHS = ("auto", "numpy", "tensor")

__all__ = ["FRAME_PATHS", "Engine", "EngineClosed", "Resolved", "blend", "check_frames", "processing_size",
           "resolve", "stylize"]  # fmt: skip


class EngineClosed(RuntimeError):
    pass


# ------------------------------------------------------------------------------ the frame contract


def check_frames(frames: Any, ndim: int) -> None:
    """uint8 RGB: (N, H, W, 3) for ndim 4, (H, W, 3) for ndim 3; ValueError says what came instead."""
    shape = "(N, H, W, 3)" if ndim == 4 else "(H, W, 3)"
    if not isinstance(frames, np.ndarray) or frames.ndim != ndim or frames.shape[-1] != 3 \
            or frames.dtype != np.uint8:  # fmt: skip
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"expected uint8 RGB frames of shape {shape}, got {got}")


@dataclass(frozen=True)
class Resolved:
    """A style's parameters, resolved once: what the engine applies and what `apply` gets."""

    strength: float
    scale: float
    style: tuple[tuple[str, float], ...]  # the style's own parameters, sorted: part of a batch's key

    @property
    def group(self) -> tuple[float, tuple[tuple[str, float], ...]]:
        """What frames must share to be stylized in one batch (strength is blended per frame)."""
        return self.scale, self.style


def resolve(plugin: StylePlugin, params: Mapping[str, Any] | None) -> Resolved:
    """Defaults filled, values clamped, unknown names refused (ValueError). Temporal parameters
    (`stabilize`) pass validation and are dropped: they act across frames, never on one batch."""
    p = plugin.resolve_params(params)
    own = tuple(sorted((k, v) for k, v in p.items() if k not in ENGINE_PARAMS))
    return Resolved(p["strength"], p.get("scale", 1.0), own)


def processing_size(plugin: StylePlugin, h: int, w: int, max_side: int | None,
                    scale: float = 1.0) -> tuple[int, int]:  # fmt: skip
    """(H, W) the style runs at: the frame scaled by the style's `scale` and down to `max_side` on the
    longer side (aspect ratio kept, >= 16 px; styles that are not `scalable` keep the frame size),
    then enlarged to the style's `min_side`."""
    s = min(1.0, scale)
    if plugin.scalable and max_side and max(h, w) > max_side:
        s *= max_side / max(h, w)
    sh, sw = (max(MIN_SIDE, round(h * s)), max(MIN_SIDE, round(w * s))) if s < 1.0 else (h, w)
    return max(plugin.min_side, sh), max(plugin.min_side, sw)


def stylize(plugin: StylePlugin, frames: np.ndarray, params: Mapping[str, Any] | None = None, *,
            max_side: int | None = None, path_for: Callable[[StylePlugin], FramePath] | None = None,
            stats: EngineStats | None = None) -> np.ndarray:  # fmt: skip
    """The frame contract for one synchronous batch: uint8 RGB (N, H, W, 3) -> same shape. `Engine.process`
    and `StylePlugin.process` (numpy path, no max_side) both come here."""
    check_frames(frames, 4)
    r = resolve(plugin, params)
    if r.strength <= 0.0 or len(frames) == 0:
        return frames.copy()
    path = path_for(plugin) if path_for is not None else NUMPY_PATH
    size = processing_size(plugin, frames.shape[1], frames.shape[2], max_side, r.scale)
    batch = path.start(plugin, frames, [r.strength] * len(frames), size, dict(r.style))
    out = batch.result()
    if stats is not None:
        stats.record(path.name, len(frames), batch.times)
    return out


@dataclass
class _Job:
    frame: np.ndarray
    strength: float
    submitted: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)


@dataclass
class _Flight:
    """A started batch: its jobs, and where they were (the key) for a retry frame by frame."""

    key: tuple
    jobs: list[_Job]
    batch: Batch
    path: str
    queue_s: float


_CLOSED = object()


class Engine:
    """Runs styles from a PluginSet on one backend/device choice.

    backend: "auto" or a name in stylestream.runtime.BACKENDS (neural styles only).
    max_side: downscale frames whose longer side exceeds this before the style, upscale after.
    max_batch: most frames per batch; workers: threads running batches (1 suits one GPU or 2 cores).
    batch_window_ms: how long a batch may wait for the frames of other callers (asyncio tasks or threads)
      that recently submitted to the same group. Callers that await each result would otherwise fall
      into lock-step and alternate instead of sharing batches. A lone caller never waits.
    frame_path: "auto" (the tensor path for a neural style whose backend runs tensors on a CUDA device,
      else numpy), "numpy", or "tensor" (every neural style, on its backend's device, CPU included).
    backend_options: backend name -> keyword arguments for it beyond the model file ({"triton": {"url": ...}}).
    """

    def __init__(self, plugins: PluginSet, backend: str = "auto", device: str = "auto",
                 max_side: int | None = None, max_batch: int = 8, workers: int = 1,
                 batch_window_ms: float = 5.0, frame_path: str = "auto",
                 backend_options: Mapping[str, Mapping[str, Any]] | None = None) -> None:  # fmt: skip
        from stylestream.devices import resolve_name
        from stylestream.runtime import BACKENDS

        if backend != "auto":
            BACKENDS.entry(backend)  # an unknown backend fails here, listing the choices
        if max_side is not None and max_side < MIN_SIDE:
            raise ValueError(f"max_side must be at least {MIN_SIDE} pixels, got {max_side}")
        if frame_path not in FRAME_PATHS:
            raise ValueError(f"unknown frame path {frame_path!r}; choose one of: {', '.join(FRAME_PATHS)}")
        self.plugins = plugins
        self.backend = backend
        self.device = resolve_name(device)
        self.max_side = max_side
        self.backend_options = dict(backend_options or {})
        self.max_batch = max(1, max_batch)
        self.frame_path = frame_path
        self._bound: dict[str, StylePlugin] = {}
        self._paths: dict[str, FramePath] = {}
        self._tensor_paths: dict[str, TensorPath] = {}
        self._bound_lock = threading.Lock()
        self._stats = EngineStats()
        self._cv = threading.Condition()
        self._queue: dict[tuple, list[_Job]] = {}  # insertion order = arrival order of each group
        self._callers: dict[tuple, dict[int, float]] = {}  # group -> caller id -> last submit time
        self.batch_window = max(0.0, batch_window_ms) / 1000.0
        self._closed = False
        self._workers = [threading.Thread(target=self._work, name=f"stylestream-engine-{i}", daemon=True)
                         for i in range(max(1, workers))]  # fmt: skip
        for t in self._workers:
            t.start()

    # ------------------------------------------------------------------------------------ styles

    def plugin(self, style: str) -> StylePlugin:
        """The engine's own copy of a style (neural styles bound to this backend/device; not loaded yet)."""
        with self._bound_lock:
            p = self._bound.get(style)
            if p is None:
                p = self.plugins.get(style)  # UnknownNameError lists the styles
                if isinstance(p, NeuralPlugin):
                    p = p.bind(self.backend, self.device, self.backend_options)
                self._bound[style] = p
            return p

    def backend_name(self, style: str) -> str:
        """'opencv' for filters; for neural styles the backend that runs it ('onnxruntime', 'torch', ...)."""
        return self.plugin(style).backend

    def describe(self, style: str) -> str:
        """Backend with details (providers, device, precision); loads a neural style's model."""
        p = self.plugin(style)
        return p.describe() if isinstance(p, NeuralPlugin) else p.backend

    def load(self, style: str) -> None:
        """Load a neural style's model now (e.g. before a stream starts) instead of on its first frame."""
        p = self.plugin(style)
        if isinstance(p, NeuralPlugin):
            p.runner()

    def frame_path_of(self, style: str) -> str:
        """'numpy' or 'tensor': the path this style's frames take (loads a neural style's model)."""
        return self._path_for(style, self.plugin(style)).name

    def _path_for(self, style: str, plugin: StylePlugin) -> FramePath:
        with self._bound_lock:
            path = self._paths.get(style)
        if path is None:
            path = self._choose_path(plugin)
            log.info("style %r takes the %s frame path", style, path.name)
            with self._bound_lock:
                path = self._paths.setdefault(style, path)
        return path

    def _choose_path(self, plugin: StylePlugin) -> FramePath:
        if self.frame_path == "numpy" or not callable(getattr(plugin, "apply_tensor", None)):
            return NUMPY_PATH
        runner = plugin.runner() if isinstance(plugin, NeuralPlugin) else None
        device = str(runner.device) if runner is not None else self.device
        on_gpu = runner is not None and device.startswith("cuda") and device_resident(runner)
        if self.frame_path == "tensor" or on_gpu:
            with self._bound_lock:
                if device not in self._tensor_paths:
                    self._tensor_paths[device] = TensorPath(device)
                return self._tensor_paths[device]
        return NUMPY_PATH

    def stats(self) -> dict[str, Any]:
        """Frames, batches and time per stage since the engine started (EngineStats.snapshot), and the
        frame path of each style used so far: what the server's /metrics and the benchmarks read."""
        snap = self._stats.snapshot()
        with self._bound_lock:
            snap["paths"] = {style: path.name for style, path in self._paths.items()}
        return snap

    # --------------------------------------------------------------------------------- sync path

    def process(self, style: str, frames: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> same shape, in the calling thread (thread-safe)."""
        return stylize(self.plugin(style), frames, params, max_side=self.max_side,
                       path_for=functools.partial(self._path_for, style), stats=self._stats)  # fmt: skip

    # -------------------------------------------------------------------------------- async path

    async def submit(self, style: str, frame: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """One uint8 RGB frame (H, W, 3) -> stylized frame, batched with other callers' frames in a worker
        thread. Never blocks the event loop; a failure is raised to the callers of that batch only."""
        return await asyncio.wrap_future(self.submit_threadsafe(style, frame, params))

    def submit_threadsafe(self, style: str, frame: np.ndarray,
                          params: Mapping[str, Any] | None = None) -> Future:  # fmt: skip
        """Like `submit`, for callers without an event loop: returns a concurrent.futures.Future."""
        check_frames(frame, 3)
        r = resolve(self.plugins.get(style), params)  # cheap: no model is loaded to validate
        job = _Job(frame, r.strength)
        if r.strength <= 0.0:
            job.future.set_result(frame.copy())
            return job.future
        key = (style, frame.shape, r.group)
        with self._cv:
            if self._closed:
                raise EngineClosed("the engine is closed")
            self._queue.setdefault(key, []).append(job)
            self._callers.setdefault(key, {})[_caller_id()] = time.monotonic()
            self._cv.notify_all()
        return job.future

    def _active_callers(self, key: tuple, now: float) -> int:
        """Callers that submitted to this group within the last second (stale ones are forgotten)."""
        seen = self._callers.get(key, {})
        for cid in [c for c, t in seen.items() if now - t > 1.0]:
            del seen[cid]
        return len(seen)

    def _take(self, wait: bool = True) -> Any:
        """(key, jobs) of the next batch; None when nothing is queued and not `wait`; _CLOSED at the end."""
        with self._cv:
            if not wait and not self._queue and not self._closed:
                return None
            while not self._queue and not self._closed:
                self._cv.wait()
            if self._closed:
                return _CLOSED
            key = next(iter(self._queue))
            want = min(self.max_batch, self._active_callers(key, time.monotonic()))
            deadline = time.monotonic() + self.batch_window
            while len(self._queue.get(key, ())) < want and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            if self._closed:
                return _CLOSED
            if key not in self._queue:
                return key, []
            jobs = self._queue[key]
            batch, rest = jobs[: self.max_batch], jobs[self.max_batch :]
            del self._queue[key]
            if rest:
                self._queue[key] = rest  # to the back: other groups get their turn
            return key, batch

    def _work(self) -> None:
        """Take a batch, start it, and only then finish the batch before it: on the tensor path the GPU
        uploads one batch while it computes and downloads the previous (framepath.TensorPath)."""
        flight: _Flight | None = None
        while True:
            taken = self._take(wait=flight is None)
            if taken is _CLOSED or taken is None:
                if flight is not None:
                    self._deliver(flight)
                    flight = None
                if taken is _CLOSED:
                    return
                continue
            key, jobs = taken
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            started = self._start(key, jobs) if jobs else None
            if flight is not None:
                self._deliver(flight)
                flight = None
            if started is not None:
                if started.batch.done:
                    self._deliver(started)
                else:
                    flight = started

    def _start(self, key: tuple, jobs: list[_Job]) -> _Flight | None:
        """Start one batch; on failure the jobs are retried one by one (None is returned)."""
        style, shape, (scale, own) = key
        try:
            plugin = self.plugin(style)
            path = self._path_for(style, plugin)
            size = processing_size(plugin, shape[0], shape[1], self.max_side, scale)
            now = time.monotonic()
            queue_s = sum(now - j.submitted for j in jobs)
            batch = path.start(plugin, [j.frame for j in jobs], [j.strength for j in jobs], size, dict(own))
        except BaseException as exc:  # noqa: BLE001 -- the worker must survive anything a plugin does
            self._fail(key, jobs, exc)
            return None
        return _Flight(key, jobs, batch, path.name, queue_s)

    def _deliver(self, flight: _Flight) -> None:
        try:
            out = flight.batch.result()
        except BaseException as exc:  # noqa: BLE001 -- delivered to the callers
            self._fail(flight.key, flight.jobs, exc)
            return
        self._stats.record(flight.path, len(flight.jobs), flight.batch.times, flight.queue_s)
        for i, job in enumerate(flight.jobs):
            job.future.set_result(out[i])

    def _fail(self, key: tuple, jobs: list[_Job], exc: BaseException) -> None:
        """A failed batch: one frame gets the error; several are retried one by one, so one bad frame
        fails only its own caller."""
        if len(jobs) == 1:
            jobs[0].future.set_exception(exc)
            return
        log.debug("batch of %d failed (%s); retrying frames one by one", len(jobs), exc)
        for job in jobs:
            started = self._start(key, [job])
            if started is not None:
                self._deliver(started)

    # ----------------------------------------------------------------------------------- closing

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            pending = [j for jobs in self._queue.values() for j in jobs]
            self._queue.clear()
            self._cv.notify_all()
        for j in pending:
            if j.future.set_running_or_notify_cancel():
                j.future.set_exception(EngineClosed("the engine was closed before this frame ran"))
        for t in self._workers:
            if t is not threading.current_thread():
                t.join(timeout=10)
        with self._bound_lock:
            for p in self._bound.values():
                if isinstance(p, NeuralPlugin):
                    p.close()
            self._bound.clear()
            self._paths.clear()

    def __enter__(self) -> Engine:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _caller_id() -> int:
    """The submitting asyncio task (one per stream in the server), else the submitting thread."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        task = None
    return id(task) if task is not None else threading.get_ident()
