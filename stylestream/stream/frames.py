"""The frame path: latest frame wins.

aiortc's receiver queues every decoded frame, so a style slower than the camera makes latency grow
without bound. Here a reader task drains the incoming track and keeps only the newest frame, a worker
stylizes the newest one (inference runs off the event loop) and publishes it; each outgoing track sends
the newest published frame. Output frames carry the pts/time_base of the input they were made from."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from stylestream.stream.adaptive import ScaleController

log = logging.getLogger(__name__)

ProcessFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


class RateMeter:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._t: deque[float] = deque()
        self._start: float | None = None

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self._start is None:
            self._start = now
        self._t.append(now)
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()

    def rate(self) -> float:
        """Over the window, or over the time since the first event while that is shorter (so the first
        second does not read as half the real rate)."""
        now = time.monotonic()
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()
        if len(self._t) < 2 or self._start is None:
            return 0.0
        span = min(self.window, now - self._start)
        return (len(self._t) - 1) / span if span > 0 else 0.0

    def reset(self) -> None:
        self._t.clear()
        self._start = None


@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_processed: int = 0
    frames_out: int = 0
    dropped: int = 0  # input frames never stylized because a newer one arrived
    plugin_errors: int = 0
    in_size: tuple[int, int] | None = None  # (width, height) as received
    out_size: tuple[int, int] | None = None  # as sent
    proc_size: tuple[int, int] | None = None  # what the style ran at (the adaptive controller's choice)
    adapting: bool = False  # proc_size is below the input size to hold the frame rate
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_out: RateMeter = field(default_factory=RateMeter)
    first_published_at: float | None = None  # time.monotonic() of the first stylized frame
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=60))
    inference_s: deque[float] = field(default_factory=lambda: deque(maxlen=60))

    def to_json(self) -> dict:
        def ms(d: deque[float]) -> float | None:
            return round(float(np.median(d)) * 1000, 1) if d else None

        return {
            "frames_in": self.frames_in, "frames_out": self.frames_out, "dropped": self.dropped,
            "plugin_errors": self.plugin_errors,
            "fps_in": round(self.fps_in.rate(), 1), "fps_out": round(self.fps_out.rate(), 1),
            "latency_ms": ms(self.latency_s), "inference_ms": ms(self.inference_s),
            "in_size": list(self.in_size) if self.in_size else None,
            "out_size": list(self.out_size) if self.out_size else None,
            "proc_size": list(self.proc_size) if self.proc_size else None, "adapting": self.adapting,
        }  # fmt: skip

    def reset_style_figures(self) -> None:
        """A style switch: timings and rates describe the new style from its first frame."""
        self.latency_s.clear()
        self.inference_s.clear()
        self.fps_out.reset()


@dataclass
class Published:
    seq: int
    frame: VideoFrame
    received_at: float  # time.monotonic() when its input frame arrived
    style: str
    sent: bool = False  # handed to at least one outgoing track


class FrameBroadcast:
    """Holds the newest stylized frame for any number of outgoing tracks (the peer, WHEP viewers)."""

    def __init__(self) -> None:
        self._latest: Published | None = None
        self._cond = asyncio.Condition()
        self.closed = False

    async def publish(self, frame: VideoFrame, received_at: float, style: str) -> None:
        async with self._cond:
            seq = self._latest.seq + 1 if self._latest else 1
            self._latest = Published(seq, frame, received_at, style)
            self._cond.notify_all()

    async def next_after(self, seq: int) -> Published:
        async with self._cond:
            await self._cond.wait_for(lambda: self.closed or (self._latest is not None and self._latest.seq > seq))
            if self.closed or self._latest is None:
                raise MediaStreamError
            return self._latest

    async def close(self) -> None:
        async with self._cond:
            self.closed = True
            self._cond.notify_all()


class OutputTrack(MediaStreamTrack):
    """An outgoing video track that sends each new stylized frame once; if its encoder is slower than
    the stylizer it skips to the newest. `on_sent(published)` is called for every frame handed out."""

    kind = "video"

    def __init__(self, source: FrameBroadcast, on_sent: Callable[[Published], None] | None = None) -> None:
        super().__init__()
        self._source = source
        self._seen = 0
        self._on_sent = on_sent

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            pub = await self._source.next_after(self._seen)
        except MediaStreamError:
            self.stop()
            raise
        self._seen = pub.seq
        if self._on_sent is not None:
            self._on_sent(pub)
        return pub.frame


def to_rgb(frame: VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame as RGB at (width, height): one libswscale pass converts and scales."""
    if (width, height) != (frame.width, frame.height):
        return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
    return frame.to_ndarray(format="rgb24")


def from_rgb(array: np.ndarray, like: VideoFrame) -> VideoFrame:
    """RGB back to a frame of `like`'s size, pts and time base, in the encoders' yuv420p.

    One frame goes to every viewer's encoder, each in its own executor thread. Converting to yuv420p
    here makes their reformat() a no-op: concurrent reformat() of one shared frame (one SwsContext)
    hangs in libswscale with two viewers (OBS Browser Source + WHEP)."""
    src = VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
    out = src.reformat(width=like.width, height=like.height, format="yuv420p")
    out.pts = like.pts
    out.time_base = like.time_base
    return out


class FrameObserver(Protocol):
    """What the pipeline reports to (the session): one object instead of a callback per event."""

    @property
    def style(self) -> str: ...

    def on_frame_in(self) -> None: ...

    def on_dropped(self) -> None: ...

    def on_inference(self, seconds: float, scale: float) -> None: ...  # scale: processing / input size

    def on_error(self, exc: BaseException) -> None: ...


class FramePipeline:
    """Per session: incoming track -> newest frame -> processing size -> `process` -> input size ->
    FrameBroadcast.

    `process(rgb)` is awaited for one frame at a time; it must not block the loop (the engine's
    `submit` runs inference in a worker thread). If it raises, the frame passes through unchanged and
    the observer's `on_error(exc)` is called; the session lives on. `scale` picks the processing size
    to hold the frame rate (adaptive.ScaleController)."""

    def __init__(self, source: MediaStreamTrack, process: ProcessFn, observer: FrameObserver,
                 scale: ScaleController | None = None) -> None:  # fmt: skip
        self.source = source
        self.process = process
        self.observer = observer
        self.scale = scale or ScaleController(target_fps=0)
        self.stats = PipelineStats()
        self.output = FrameBroadcast()
        self._pending: tuple[VideoFrame, float] | None = None
        self._wake = asyncio.Event()
        self._ended = False
        self._tasks: list[asyncio.Task] = []
        self.finished = asyncio.Event()  # set when the incoming track ended

    def style_changed(self) -> None:
        """Figures and the size controller's measurements start afresh for the new style."""
        self.stats.reset_style_figures()
        self.scale.reset()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._work())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.output.close()

    async def _read(self) -> None:
        try:
            while True:
                frame = await self.source.recv()
                now = time.monotonic()
                st = self.stats
                st.frames_in += 1
                st.fps_in.tick(now)
                st.in_size = (frame.width, frame.height)
                self.observer.on_frame_in()
                if self._pending is not None:
                    st.dropped += 1
                    self.observer.on_dropped()
                self._pending = (frame, now)
                self._wake.set()
        except MediaStreamError:
            log.debug("incoming track ended")
        finally:
            self._ended = True
            self._wake.set()

    async def _work(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending is None:
                if self._ended:
                    self.finished.set()
                    await self.output.close()
                    return
                continue
            frame, received_at = self._pending
            self._pending = None
            style = self.observer.style
            try:
                await self._stylize(frame, received_at, style)
            except asyncio.CancelledError:
                raise
            except Exception:  # a conversion bug must not end the session; log and go on
                log.exception("frame path error")

    async def _stylize(self, frame: VideoFrame, received_at: float, style: str) -> None:
        """Convert at the processing size, stylize, convert back at the input size. The engine owns the
        frame contract (uint8 RGB in, same shape out), so nothing is re-checked here."""
        t0 = time.monotonic()
        w, h = self.scale.size_for(frame.width, frame.height)
        rgb = await asyncio.to_thread(to_rgb, frame, w, h)
        t1 = time.monotonic()
        try:
            out = await self.process(rgb)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any plugin failure passes the frame through
            self.stats.plugin_errors += 1
            self.observer.on_error(exc)
            out = rgb
        else:
            dt = time.monotonic() - t1
            self.stats.inference_s.append(dt)
            self.observer.on_inference(dt, max(w, h) / max(frame.width, frame.height))
        self.stats.frames_processed += 1
        vf = await asyncio.to_thread(from_rgb, out, frame)
        st = self.stats
        st.out_size, st.proc_size = (vf.width, vf.height), (w, h)
        await self.output.publish(vf, received_at, style)
        if st.first_published_at is None:
            st.first_published_at = time.monotonic()
        self.scale.observe(time.monotonic() - t0, max(w, h))
        st.adapting = self.scale.state().adapting
