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

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

log = logging.getLogger(__name__)

ProcessFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


class RateMeter:
    """Events per second over the last `window` seconds."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._t: deque[float] = deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._t.append(now)
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()

    def rate(self) -> float:
        now = time.monotonic()
        while self._t and now - self._t[0] > self.window:
            self._t.popleft()
        return len(self._t) / self.window


@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_processed: int = 0
    frames_out: int = 0
    dropped: int = 0  # input frames never stylized because a newer one arrived
    plugin_errors: int = 0
    in_size: tuple[int, int] | None = None  # (width, height) as received
    out_size: tuple[int, int] | None = None  # as sent
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
        }  # fmt: skip


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


def fit_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """Scale down to `max_side` keeping the aspect ratio, with even sides (4:2:0 encoders need them)."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    w = max(2, round(width * scale / 2) * 2)
    h = max(2, round(height * scale / 2) * 2)
    return w, h


def to_rgb(frame: VideoFrame, max_side: int | None) -> np.ndarray:
    w, h = fit_size(frame.width, frame.height, max_side)
    if (w, h) != (frame.width, frame.height):
        return frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    return frame.to_ndarray(format="rgb24")


def from_rgb(array: np.ndarray, like: VideoFrame) -> VideoFrame:
    # One frame goes to every viewer's encoder, each in its own executor thread. Converting to the
    # encoders' yuv420p here makes their reformat() a no-op: concurrent reformat() of one shared
    # frame (one SwsContext) hangs in libswscale with two viewers (OBS Browser Source + WHEP).
    out = VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24").reformat(format="yuv420p")
    out.pts = like.pts
    out.time_base = like.time_base
    return out


class FramePipeline:
    """Per session: incoming track -> newest frame -> `process` -> FrameBroadcast.

    `process(rgb)` is awaited for one frame at a time; it must not block the loop (the engine's
    `submit` runs inference in a worker thread). If it raises, the frame passes through unchanged and
    `on_error(exc)` is called; the session lives on."""

    def __init__(
        self,
        source: MediaStreamTrack,
        process: ProcessFn,
        *,
        max_side: int | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_frame_in: Callable[[], None] | None = None,
        on_dropped: Callable[[], None] | None = None,
        on_inference: Callable[[float], None] | None = None,
        style_of: Callable[[], str] = lambda: "",
    ) -> None:
        self.source = source
        self.process = process
        self.max_side = max_side
        self.on_error = on_error
        self.on_frame_in = on_frame_in
        self.on_dropped = on_dropped
        self.on_inference = on_inference
        self.style_of = style_of
        self.stats = PipelineStats()
        self.output = FrameBroadcast()
        self._pending: tuple[VideoFrame, float] | None = None
        self._wake = asyncio.Event()
        self._ended = False
        self._tasks: list[asyncio.Task] = []
        self.finished = asyncio.Event()  # set when the incoming track ended

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
                if self.on_frame_in:
                    self.on_frame_in()
                if self._pending is not None:
                    st.dropped += 1
                    if self.on_dropped:
                        self.on_dropped()
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
            style = self.style_of()
            try:
                await self._stylize(frame, received_at, style)
            except asyncio.CancelledError:
                raise
            except Exception:  # a conversion bug must not end the session; log and go on
                log.exception("frame path error")

    async def _stylize(self, frame: VideoFrame, received_at: float, style: str) -> None:
        rgb = await asyncio.to_thread(to_rgb, frame, self.max_side)
        t0 = time.monotonic()
        try:
            out = await self.process(rgb)
            if not isinstance(out, np.ndarray) or out.shape != rgb.shape or out.dtype != np.uint8:
                raise ValueError(
                    f"style {style!r} returned {getattr(out, 'dtype', type(out))} "
                    f"{getattr(out, 'shape', '')}, expected uint8 {rgb.shape}"
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any plugin failure passes the frame through
            self.stats.plugin_errors += 1
            if self.on_error:
                self.on_error(exc)
            out = rgb
        else:
            dt = time.monotonic() - t0
            self.stats.inference_s.append(dt)
            if self.on_inference:
                self.on_inference(dt)
        self.stats.frames_processed += 1
        vf = await asyncio.to_thread(from_rgb, out, frame)
        self.stats.out_size = (vf.width, vf.height)
        await self.output.publish(vf, received_at, style)
        if self.stats.first_published_at is None:
            self.stats.first_published_at = time.monotonic()
