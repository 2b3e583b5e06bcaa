"""The cam pipeline: source -> capture thread -> latest-frame-wins slot -> engine -> sinks.

Capture runs in its own thread and hands frames to inference through a one-slot buffer where the
newest frame replaces an unprocessed one, so a style slower than the camera drops frames instead of
building up delay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from stylestream.cam import CamError
from stylestream.cam.frames import FrameMeta
from stylestream.cam.sinks import NEXT, PREV, QUIT, Sink
from stylestream.cam.sources import Source

log = logging.getLogger(__name__)


class StyleEngine(Protocol):
    """What the pipeline needs of `stylestream.plugins.Engine`."""

    def process(self, style: str, frames: np.ndarray, params: dict | None = None) -> np.ndarray: ...


class LatestFrameSlot:
    """A one-item hand-over between threads. `put` replaces an item not yet taken (counted in
    `dropped`), unless `lossless`, where it waits for the taker instead."""

    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self.dropped = 0
        self._item: Any = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Any) -> bool:
        """False if the slot was closed (the taker is gone)."""
        with self._cond:
            if self.lossless:
                self._cond.wait_for(lambda: self._item is None or self._closed)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def get(self) -> Any:
        """The newest item; None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class CamStats:
    source: str = ""
    frames_in: int = 0  # delivered by the source
    frames_out: int = 0  # stylized and sent to the sinks
    dropped: int = 0  # replaced by a newer frame before inference took them
    failed: int = 0  # frames a style raised on
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    styles_used: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else 0.0

    def summary(self) -> str:
        return (f"{self.frames_out} frames out of {self.frames_in} in {self.wall_s:.1f} s: {self.fps:.1f} fps, "
                f"latency p50 {self.latency_ms(50):.0f} ms / p95 {self.latency_ms(95):.0f} ms, "
                f"{self.dropped} dropped (latest-frame-wins), styles: {', '.join(self.styles_used)}")  # fmt: skip


class CamPipeline:
    """Source -> (capture thread, latest-frame-wins) -> engine -> sinks.

    `styles` is the list n/p/1-9 step through; `every_frame` stylizes every source frame instead
    (for files, benchmarks and tests). `run` starts and closes the sinks and closes the source."""

    def __init__(self, source: Source, engine: StyleEngine, style: str, sinks: Sequence[Sink],
                 styles: Sequence[str] | None = None, params: dict[str, Any] | None = None,
                 every_frame: bool = False, max_frames: int | None = None, warmup: bool = True):  # fmt: skip
        self.source = source
        self.engine = engine
        self.styles = list(styles or [style])
        if style not in self.styles:
            self.styles.insert(0, style)
        self.style = style
        self.sinks = list(sinks)
        self.params = params
        self.every_frame = every_frame
        self.max_frames = max_frames
        self.warmup = warmup
        self._stop = threading.Event()
        self._capture_error: BaseException | None = None

    def set_style(self, name: str) -> None:
        if name not in self.styles:
            raise CamError(f"unknown style {name!r}; choose one of: {', '.join(self.styles)}")
        if name != self.style:
            log.info("style: %s", name)
        self.style = name

    def stop(self) -> None:
        """Ask `run` to finish (thread-safe)."""
        self._stop.set()

    def _command(self, cmd: str) -> None:
        i = self.styles.index(self.style)
        if cmd == NEXT:
            self.set_style(self.styles[(i + 1) % len(self.styles)])
        elif cmd == PREV:
            self.set_style(self.styles[(i - 1) % len(self.styles)])
        elif cmd.startswith("select:"):
            n = int(cmd.split(":", 1)[1])
            if n < len(self.styles):
                self.set_style(self.styles[n])

    def _capture(self, slot: LatestFrameSlot, stats: CamStats) -> None:
        try:
            index = 0
            while not self._stop.is_set():
                img = self.source.read()
                if img is None:
                    break
                stats.frames_in += 1
                if not slot.put((index, time.monotonic(), img)):
                    break
                index += 1
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it in the caller's thread
            self._capture_error = exc
        finally:
            slot.close()

    def _stylize(self, img: np.ndarray, stats: CamStats) -> np.ndarray | None:
        try:
            return self.engine.process(self.style, img[None], self.params)[0]
        except Exception as exc:
            stats.failed += 1
            fallback = stats.styles_used[-1] if stats.styles_used else None
            if fallback is None or fallback == self.style:
                raise CamError(f"style {self.style!r} failed: {exc}") from exc
            # A broken style chosen live must not end the session: go back to the last one that worked.
            log.error("style %r failed (%s); back to %r", self.style, exc, fallback)
            self.style = fallback
            return None

    def run(self) -> CamStats:
        src = self.source
        stats = CamStats(source=src.description)
        slot = LatestFrameSlot(lossless=self.every_frame)
        started: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.start(src.width, src.height, src.fps)
                started.append(sink)
            if self.warmup:  # model load / engine build before the first real frame, not during it
                self.engine.process(self.style, np.zeros((1, src.height, src.width, 3), np.uint8), self.params)
            capture = threading.Thread(target=self._capture, args=(slot, stats), name="cam-capture", daemon=True)
            t0 = time.monotonic()
            capture.start()
            fps = 0.0
            last = t0
            while not self._stop.is_set():
                item = slot.get()
                if item is None:
                    break
                index, captured, img = item
                out = self._stylize(img, stats)
                if out is None:
                    continue
                now = time.monotonic()
                fps = 1.0 / max(now - last, 1e-6) if fps == 0.0 else 0.9 * fps + 0.1 / max(now - last, 1e-6)
                last = now
                meta = FrameMeta(index, captured, self.style, now - captured, fps)
                stats.frames_out += 1
                stats.latencies.append(meta.latency)
                if not stats.styles_used or stats.styles_used[-1] != self.style:
                    stats.styles_used.append(self.style)
                for sink in self.sinks:
                    cmd = sink.send(out, meta)
                    if cmd == QUIT:
                        self._stop.set()
                    elif cmd:
                        self._command(cmd)
                if self.max_frames is not None and stats.frames_out >= self.max_frames:
                    break
            stats.wall_s = time.monotonic() - t0
        finally:
            self._stop.set()
            slot.close()
            if "capture" in locals():
                capture.join(timeout=5.0)
            stats.dropped = slot.dropped
            src.close()
            for sink in started:
                try:
                    sink.close()
                except Exception:  # closing one sink must not keep the others (a file) from closing
                    log.exception("closing %s failed", type(sink).__name__)
        if self._capture_error is not None:
            err = self._capture_error
            if isinstance(err, CamError):
                raise err
            raise CamError(f"reading {src.description} failed: {err}") from err
        return stats

