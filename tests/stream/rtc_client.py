"""Test helpers: an in-process server on a free port and an aiortc client that sends a real clip at
30 fps with recognisable pts and records what comes back."""

from __future__ import annotations

import asyncio
import fractions
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from aiohttp import ClientSession
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from stylestream.stream import listener
from stylestream.stream.config import ServerConfig
from stylestream.stream.server import create_app

TIME_BASE = fractions.Fraction(1, 90000)


def peer_connection() -> RTCPeerConnection:
    """A client peer with NO ICE servers: aiortc would otherwise add a third party's public STUN server
    and contact it from every test."""
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


def load_clip(path: Path, size: tuple[int, int] = (320, 240), limit: int = 90) -> list[np.ndarray]:
    """Decode a clip to RGB frames at `size` (small: the test machine has 2 cores)."""
    frames = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            frames.append(f.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
            if len(frames) >= limit:
                break
    return frames


def pts_of(i: int) -> int:
    """30 fps in 90 kHz with a per-frame wobble, so a received pts identifies exactly one sent frame."""
    return i * 3000 + (i * 37 % 11) * 100


class ClipTrack(MediaStreamTrack):
    """Plays `frames` in a loop at `fps`, remembering each sent frame by pts and when it was sent."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray], fps: float = 30.0) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.i = 0
        self.start: float | None = None
        self.sent: dict[int, tuple[float, np.ndarray]] = {}  # pts -> (monotonic send time, rgb)

    async def recv(self) -> av.VideoFrame:
        if self.start is None:
            self.start = time.monotonic()
        due = self.start + self.i / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        rgb = self.frames[self.i % len(self.frames)]
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts_of(self.i)
        frame.time_base = TIME_BASE
        self.sent[frame.pts] = (time.monotonic(), rgb)
        self.i += 1
        return frame


@dataclass
class Received:
    frames: list[tuple[float, int, np.ndarray]] = field(default_factory=list)  # (time, pts, rgb)

    async def consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                f = await track.recv()
                self.frames.append((time.monotonic(), f.pts, f.to_ndarray(format="rgb24")))
        except MediaStreamError:
            pass


# aiortc's encoders round a pts by up to a tick per hop; the wobble steps are 100 ticks apart.
PTS_TOLERANCE = 8


def nearest(sorted_pts: np.ndarray, value: int) -> int:
    i = int(np.clip(np.searchsorted(sorted_pts, value), 1, len(sorted_pts) - 1))
    return int(min(sorted_pts[i - 1], sorted_pts[i], key=lambda s: abs(s - value)))


def match_pts(sent_pts: list[int], received_pts: list[int]) -> list[int] | None:
    """The receiver's pts start at 0 on its first frame. Find the sent frame each received one was made
    from: the one offset under which every received pts lands on a sent pts (see pts_of)."""
    sent = np.array(sorted(sent_pts))
    for s in sent:
        mapped = [nearest(sent, r + int(s)) for r in received_pts]
        if all(abs(m - (r + int(s))) <= PTS_TOLERANCE for m, r in zip(mapped, received_pts)):
            return mapped
    return None


@asynccontextmanager
async def running_server(config: ServerConfig | None = None, **kw):
    """Yields (base_url, app) for an app served on a free port in this event loop."""
    config = config or ServerConfig(include_user_plugins=False)
    app = create_app(config, **kw)
    listening = await listener.start(app, config, port=0)  # the listener `stylestream serve` uses
    try:
        yield f"http://127.0.0.1:{listening.port}", app
    finally:
        await listening.close()


async def wait_gathered(pc: RTCPeerConnection) -> None:
    while pc.iceGatheringState != "complete":
        await asyncio.sleep(0.05)


class Peer:
    """A browser-like client: sends `track`, receives the stylized video on the same connection."""

    def __init__(self, track: MediaStreamTrack | None) -> None:
        self.pc = peer_connection()
        self.track = track
        self.received = Received()
        self.session: str | None = None
        self._tasks: list[asyncio.Task] = []

        @self.pc.on("track")
        def _on_track(t: MediaStreamTrack) -> None:
            if t.kind == "video":
                self._tasks.append(asyncio.create_task(self.received.consume(t)))

    async def connect(self, http: ClientSession, base: str, style: str, headers: dict | None = None) -> dict:
        self.pc.addTransceiver(self.track, direction="sendrecv")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await wait_gathered(self.pc)
        body = {"sdp": self.pc.localDescription.sdp, "type": "offer", "style": style}
        async with http.post(f"{base}/api/offer", json=body, headers=headers or {}) as r:
            data = await r.json()
            assert r.status == 200, data
        self.session = data["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(data["sdp"], "answer"))
        return data

    async def close(self) -> None:
        await self.pc.close()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())
