"""The inference engine: every stylized frame (server, CLI, virtual camera) goes through here.

`process` is the synchronous batch path. `submit` is the asynchronous per-frame path used by the
server: frames from many callers queue up, and a worker thread runs all queued frames that share a
style, shape and parameters as one batch, then hands each caller back its own frame. `strength` is
applied per frame after the batch, so callers with different strengths still share a batch."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from stylestream.plugins.base import StylePlugin
from stylestream.plugins.discovery import PluginSet
from stylestream.plugins.neural import NeuralPlugin

log = logging.getLogger(__name__)


class EngineClosed(RuntimeError):
    pass


def blend(stylized: np.ndarray, original: np.ndarray, strength: float) -> np.ndarray:
    """strength * stylized + (1 - strength) * original, in uint8."""
    if strength >= 1.0:
        return stylized
    out = stylized.astype(np.float32) * strength + original.astype(np.float32) * (1.0 - strength) + 0.5
    return out.astype(np.uint8)


def fit_max_side(h: int, w: int, max_side: int | None) -> tuple[int, int]:
    """(h, w) scaled down so the longer side is at most max_side, aspect ratio kept (>= 16 px)."""
    if not max_side or max(h, w) <= max_side:
        return h, w
    s = max_side / max(h, w)
    return max(16, round(h * s)), max(16, round(w * s))


def _resize_batch(frames: np.ndarray, h: int, w: int, interp: int) -> np.ndarray:
    return np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])


@dataclass
class _Job:
    frame: np.ndarray
    strength: float
    future: Future = field(default_factory=Future)


class Engine:
    """Runs styles from a PluginSet on one backend/device choice.

    backend: "auto" or a name in stylestream.plugins.backends.BACKENDS (neural styles only).
    max_side: downscale frames whose longer side exceeds this before the style, upscale after.
    max_batch: most frames per batch; workers: threads running batches (1 suits one GPU or 2 cores).
    batch_window_ms: how long a batch may wait for the frames of other callers (asyncio tasks or threads)
      that recently submitted to the same group. Callers that await each result would otherwise fall
      into lock-step and alternate instead of sharing batches. A lone caller never waits.
    """

    def __init__(self, plugins: PluginSet, backend: str = "auto", device: str = "auto",
                 max_side: int | None = None, max_batch: int = 8, workers: int = 1,
                 batch_window_ms: float = 5.0) -> None:  # fmt: skip
        from stylestream.devices import resolve_name
        from stylestream.plugins.backends import BACKENDS

        if backend != "auto":
            BACKENDS.entry(backend)  # an unknown backend fails here, listing the choices
        if max_side is not None and max_side < 16:
            raise ValueError(f"max_side must be at least 16 pixels, got {max_side}")
        self.plugins = plugins
        self.backend = backend
        self.device = resolve_name(device)
        self.max_side = max_side
        self.max_batch = max(1, max_batch)
        self._bound: dict[str, StylePlugin] = {}
        self._bound_lock = threading.Lock()
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
                    p = p.bind(self.backend, self.device)
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

    # --------------------------------------------------------------------------------- sync path

    def _run(self, plugin: StylePlugin, frames: np.ndarray, params: dict[str, float]) -> np.ndarray:
        """Style at strength 1, within max_side; returns the full-size stylized frames."""
        _, h, w, _ = frames.shape
        sh, sw = fit_max_side(h, w, self.max_side) if getattr(plugin, "scalable", True) else (h, w)
        src = frames if (sh, sw) == (h, w) else _resize_batch(frames, sh, sw, cv2.INTER_AREA)
        out = plugin.process(src, {**params, "strength": 1.0})
        if out.shape != src.shape or out.dtype != np.uint8:
            raise RuntimeError(f"style {plugin.name!r} returned {out.dtype} {out.shape} for {src.shape} input")
        return out if (sh, sw) == (h, w) else _resize_batch(out, h, w, cv2.INTER_LINEAR)

    def process(self, style: str, frames: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) -> same shape, in the calling thread (thread-safe)."""
        _check_frames(frames, 4)
        plugin = self.plugin(style)
        p = plugin.resolve_params(params)
        strength = p.pop("strength")
        if strength <= 0.0 or len(frames) == 0:
            return frames.copy()
        return blend(self._run(plugin, frames, p), frames, strength)

    # -------------------------------------------------------------------------------- async path

    async def submit(self, style: str, frame: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
        """One uint8 RGB frame (H, W, 3) -> stylized frame, batched with other callers' frames in a worker
        thread. Never blocks the event loop; a failure is raised to the callers of that batch only."""
        return await asyncio.wrap_future(self.submit_threadsafe(style, frame, params))

    def submit_threadsafe(self, style: str, frame: np.ndarray,
                          params: Mapping[str, Any] | None = None) -> Future:  # fmt: skip
        """Like `submit`, for callers without an event loop: returns a concurrent.futures.Future."""
        _check_frames(frame, 3)
        plugin = self.plugins.get(style)  # cheap: validates name and params without loading a model
        p = plugin.resolve_params(params)
        strength = p.pop("strength")
        job = _Job(frame, strength)
        if strength <= 0.0:
            job.future.set_result(frame.copy())
            return job.future
        key = (style, frame.shape, tuple(sorted(p.items())))
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

    def _take(self) -> tuple[tuple, list[_Job]] | None:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            key = next(iter(self._queue))
            want = min(self.max_batch, self._active_callers(key, time.monotonic()))
            deadline = time.monotonic() + self.batch_window
            while len(self._queue.get(key, ())) < want and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cv.wait(left)
            if self._closed or key not in self._queue:
                return None if self._closed else (key, [])
            jobs = self._queue[key]
            batch, rest = jobs[: self.max_batch], jobs[self.max_batch :]
            if rest:
                del self._queue[key]
                self._queue[key] = rest  # to the back: other groups get their turn
            else:
                del self._queue[key]
            return key, batch

    def _work(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            (style, _, params), jobs = taken
            if not jobs:
                continue
            jobs = [j for j in jobs if j.future.set_running_or_notify_cancel()]
            if not jobs:
                continue
            try:
                self._run_jobs(style, dict(params), jobs)
            except BaseException as exc:  # noqa: BLE001 -- the worker must survive anything a plugin does
                if len(jobs) == 1:
                    jobs[0].future.set_exception(exc)
                    continue
                log.debug("batch of %d failed (%s); retrying frames one by one", len(jobs), exc)
                for job in jobs:  # so one bad frame fails only its own caller
                    try:
                        self._run_jobs(style, dict(params), [job])
                    except BaseException as exc1:  # noqa: BLE001 -- delivered to that caller
                        job.future.set_exception(exc1)

    def _run_jobs(self, style: str, params: dict[str, float], jobs: list[_Job]) -> None:
        frames = np.stack([j.frame for j in jobs])
        out = self._run(self.plugin(style), frames, params)
        for i, job in enumerate(jobs):
            job.future.set_result(blend(out[i].copy(), job.frame, job.strength))

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


def _check_frames(frames: Any, ndim: int) -> None:
    shape = "(N, H, W, 3)" if ndim == 4 else "(H, W, 3)"
    if not isinstance(frames, np.ndarray) or frames.ndim != ndim or frames.shape[-1] != 3 \
            or frames.dtype != np.uint8:  # fmt: skip
        got = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"expected uint8 RGB frames of shape {shape}, got {got}")
