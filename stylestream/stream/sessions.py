"""A session is one stream being stylized: a peer connection that brings frames in (the page's
camera, or OBS over WHIP), its frame pipeline, its style/parameters, and the peers that watch the
output (the page itself, WHEP viewers). The manager enforces --max-sessions and closes everything
on ICE failure, disconnect, timeout and shutdown."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import secrets
import time
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from stylestream.plugins.base import TEMPORAL_PARAMS
from stylestream.stream.adaptive import ScaleController
from stylestream.stream.audio import AudioRelay
from stylestream.stream.config import ServerConfig
from stylestream.stream.frames import FramePipeline, OutputTrack, Published
from stylestream.stream.metrics import Metrics
from stylestream.stream.sdp import ice_server
from stylestream.temporal import Stabilizer

log = logging.getLogger(__name__)

MAX_ERRORS_KEPT = 10
TOMBSTONE_S = 60.0  # an ended session/viewer still answers DELETE with 200 for this long


class StyleEngine(Protocol):
    """What the server needs from stylestream.plugins.Engine."""

    async def submit(self, style: str, frame: np.ndarray, params: dict | None = None) -> np.ndarray: ...

    def backend_name(self, style: str) -> str: ...


class StyleCatalog(Protocol):
    """What the server needs from stylestream.plugins.PluginSet."""

    def names(self) -> list[str]: ...

    def get(self, name: str) -> Any: ...

    def infos(self) -> list[Any]: ...


class SessionLimitError(RuntimeError):
    """--max-sessions reached (HTTP 503)."""


def new_peer_connection(config: ServerConfig) -> RTCPeerConnection:
    """Exactly the ICE servers the user gave: none by default. (aiortc fills in a third party's public STUN
    server when given None, which would announce every session to it.)"""
    return RTCPeerConnection(RTCConfiguration(iceServers=[ice_server(u) for u in config.ice_servers]))


async def drain(track: MediaStreamTrack) -> None:
    """Read and discard a track nobody uses (e.g. OBS's audio): aiortc would queue it forever."""
    try:
        while True:
            await track.recv()
    except MediaStreamError:
        pass


class Session:
    def __init__(self, manager: SessionManager, kind: str, style: str, params: dict[str, float]) -> None:
        # 128 bits: the id is the session's capability (WHIP resource, WHEP, /view link), listed only to the admin
        self.id = secrets.token_urlsafe(16)
        self.manager = manager
        self.kind = kind  # "browser" | "whip"
        self.style = style
        self.params = params
        self.created = time.time()
        self.created_mono = time.monotonic()  # the offer's arrival, for time-to-first-frame
        self.label = f"s{next(manager.counter)}"  # names the session in /metrics without revealing its id
        self.pc = new_peer_connection(manager.config)
        self.pipeline: FramePipeline | None = None
        self.stabilizer = Stabilizer()
        self.audio: AudioRelay | None = None  # the publisher's sound, for viewers (OBS, FFmpeg send Opus)
        self.viewers: dict[str, RTCPeerConnection] = {}
        self.errors: list[str] = []  # distinct plugin error messages, each reported once
        self.channel: Any = None  # the page's data channel, if it opened one
        self.closed = False
        self._tasks: set[asyncio.Task] = set()
        self._watch(self.pc, self._on_main_state)

    def update(self, style: Any = None, params: Any = None) -> None:
        """Switch style and/or parameters live (no renegotiation). A new style starts from its
        defaults plus `params`; the same style merges `params` into the current ones."""
        if style is None and params is None:
            raise ValueError("give 'style' and/or 'params'")
        if params is not None and not isinstance(params, dict):
            raise ValueError("'params' must be an object of parameter name -> number")
        if style is not None and style != self.style:
            new = self.manager.check_style(style, params or {})
        else:
            new = self.manager.check_style(self.style, {**self.params, **(params or {})})
        switched = new[0] != self.style
        self.style, self.params = new
        if switched:
            self.stabilizer.reset()
            if self.pipeline is not None:
                self.pipeline.style_changed()
        log.info("session %s: style %s %s", self.id[:8], self.style, self.params)

    # ---------------------------------------------------------------- media

    def attach_source(self, track: MediaStreamTrack) -> None:
        """Start stylizing the peer's video track and relaying its audio track (first of each wins;
        others are drained)."""
        if track.kind == "audio" and self.audio is None:
            self.audio = AudioRelay(track, self.video_delay)
            return
        if track.kind != "video" or self.pipeline is not None:
            self._spawn(drain(track))
            return
        config = self.manager.config
        scale = ScaleController(target_fps=config.target_fps, max_side=config.max_side)
        self.pipeline = FramePipeline(track, self._process, self, scale)
        self.pipeline.start()
        self._spawn(self._end_when_source_ends(self.pipeline))

    def video_delay(self) -> float:
        """Seconds from a frame's arrival to its stylized version leaving (recent median): how late the
        audio must play to stay in sync."""
        lat = self.pipeline.stats.latency_s if self.pipeline else None
        if not lat:
            return 0.0
        recent = sorted(list(lat)[-9:])
        return recent[len(recent) // 2]

    def output_track(self) -> OutputTrack:
        if self.pipeline is None:
            raise RuntimeError("no video source attached yet")
        return OutputTrack(self.pipeline.output, self._on_sent)

    async def _process(self, rgb: np.ndarray) -> np.ndarray:
        style, params = self.style, self.params  # one consistent pair per frame
        per_frame = {k: v for k, v in params.items() if k not in TEMPORAL_PARAMS}
        out = await self.manager.engine.submit(style, rgb, per_frame or None)
        # Stabilizing needs this stream's previous frame: done here, at the processing size (cheap).
        return await asyncio.to_thread(self.stabilizer, rgb, out, params.get("stabilize", 0.0))

    def _on_sent(self, pub: Published) -> None:
        if pub.sent or self.pipeline is None:
            return
        pub.sent = True
        now = time.monotonic()
        st = self.pipeline.stats
        st.frames_out += 1
        st.fps_out.tick(now)
        st.latency_s.append(now - pub.received_at)
        self.manager.metrics.frames_out.labels(pub.style).inc()
        self.manager.metrics.latency.labels(pub.style).observe(now - pub.received_at)

    # ------------------------------------------------------------ FrameObserver: what the pipeline reports

    def on_frame_in(self) -> None:
        self.manager.metrics.frames_in.labels(self.style).inc()

    def on_dropped(self) -> None:
        self.manager.metrics.frames_dropped.labels(self.style).inc()

    def on_inference(self, seconds: float, scale: float) -> None:
        self.manager.metrics.inference.labels(self.style).observe(seconds)
        self.manager.metrics.processing_scale.labels(self.label).set(scale)

    def on_error(self, exc: BaseException) -> None:
        self.manager.metrics.plugin_errors.labels(self.style).inc()
        msg = f"style {self.style!r} failed: {exc.__class__.__name__}: {exc}"
        if msg in self.errors:
            return
        log.warning("session %s: %s (frames pass through unchanged)", self.id[:8], msg, exc_info=exc)
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(msg)
        self.send_event({"type": "error", "message": msg})

    def send_event(self, event: Mapping[str, Any]) -> None:
        ch = self.channel
        if ch is not None and ch.readyState == "open":
            try:
                ch.send(json.dumps(event))
            except Exception:  # a closing channel must not disturb the frame path
                log.debug("could not send event", exc_info=True)

    # ---------------------------------------------------------------- viewers (WHEP)

    def add_viewer(self) -> tuple[str, RTCPeerConnection]:
        if len(self.viewers) >= self.manager.config.max_viewers:
            raise SessionLimitError(f"session already has {len(self.viewers)} viewers (the limit)")
        vid = secrets.token_urlsafe(16)  # 128 bits: the viewer's resource URL is its capability
        pc = new_peer_connection(self.manager.config)
        self.viewers[vid] = pc
        self.manager.metrics.viewers.inc()

        async def on_state(state: str) -> None:
            if state in ("failed", "closed"):
                await self.remove_viewer(vid)

        self._watch(pc, on_state)
        return vid, pc

    async def remove_viewer(self, vid: str) -> bool:
        pc = self.viewers.pop(vid, None)
        if pc is None:
            return False
        self.manager.bury(vid)
        self.manager.metrics.viewers.dec()
        await pc.close()
        return True

    # ---------------------------------------------------------------- lifecycle

    def _watch(self, pc: RTCPeerConnection, handler) -> None:
        @pc.on("connectionstatechange")
        async def _changed() -> None:
            await handler(pc.connectionState)

    async def _on_main_state(self, state: str) -> None:
        log.info("session %s: connection %s", self.id[:8], state)
        if state in ("failed", "closed"):
            await self.manager.close(self.id)
        elif state == "disconnected":
            self._spawn(self._close_unless_recovered())

    async def _close_unless_recovered(self) -> None:
        await asyncio.sleep(self.manager.config.disconnect_grace_s)
        if self.pc.connectionState != "connected":
            await self.manager.close(self.id)

    async def _close_unless_connected(self) -> None:
        await asyncio.sleep(self.manager.config.connect_timeout_s)
        if self.pc.connectionState != "connected":
            log.info("session %s: peer never connected; closing", self.id[:8])
            await self.manager.close(self.id)

    async def _end_when_source_ends(self, pipeline: FramePipeline) -> None:
        await pipeline.finished.wait()
        await self.manager.close(self.id)

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        current = asyncio.current_task()
        for t in list(self._tasks):
            if t is not current:
                t.cancel()
        if self.pipeline is not None:
            await self.pipeline.stop()
        if self.audio is not None:
            self.audio.close()
        for vid in list(self.viewers):
            await self.remove_viewer(vid)
        await self.pc.close()

    # ---------------------------------------------------------------- view

    def to_json(self) -> dict[str, Any]:
        stats = self.pipeline.stats.to_json() if self.pipeline else {}
        try:
            backend = self.manager.engine.backend_name(self.style)
        except Exception:  # noqa: BLE001 - a listing must not fail on one bad style
            backend = None
        first = self.pipeline.stats.first_published_at if self.pipeline else None
        return {
            "first_frame_ms": round((first - self.created_mono) * 1000, 1) if first else None,
            "id": self.id, "label": self.label, "kind": self.kind, "style": self.style, "params": self.params,
            "state": self.pc.connectionState, "created": self.created, "backend": backend,
            "viewers": len(self.viewers), "errors": list(self.errors), **stats,
        }  # fmt: skip


class SessionManager:
    def __init__(self, config: ServerConfig, engine: StyleEngine, catalog: StyleCatalog, metrics: Metrics) -> None:
        self.config = config
        self.engine = engine
        self.catalog = catalog
        self.metrics = metrics
        self.sessions: dict[str, Session] = {}
        self._tombstones: dict[str, float] = {}  # ended session/viewer id -> when
        self.counter = itertools.count(1)

    def bury(self, rid: str) -> None:
        """Remember an ended resource: clients close their peer connection first and DELETE after, by
        which time the server has already ended it; that DELETE still deserves a 200."""
        now = time.monotonic()
        self._tombstones = {k: t for k, t in self._tombstones.items() if now - t < TOMBSTONE_S}
        self._tombstones[rid] = now

    def recently_ended(self, rid: str) -> bool:
        t = self._tombstones.get(rid)
        return t is not None and time.monotonic() - t < TOMBSTONE_S

    def check_style(self, style: Any, params: Any = None) -> tuple[str, dict[str, float]]:
        """Validate a style name and its parameters; raises ValueError/UnknownNameError (-> 400)."""
        if not isinstance(style, str) or not style:
            raise ValueError("'style' must be a style name (see GET /api/styles)")
        plugin = self.catalog.get(style)  # UnknownNameError lists the styles
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValueError("'params' must be an object of parameter name -> number")  # noqa: TRY004 (-> 400)
        plugin.resolve_params(params)  # raises ValueError on unknown names / non-numbers
        declared = {p.name: p for p in plugin.params}
        return style, {k: declared[k].clamp(v) for k, v in params.items()}

    def create(self, kind: str, style: str, params: dict[str, float]) -> Session:
        if len(self.sessions) >= self.config.max_sessions:
            raise SessionLimitError(f"the server is full ({self.config.max_sessions} sessions); try again later")
        s = Session(self, kind, style, params)
        self.sessions[s.id] = s
        self.metrics.sessions.labels(kind).inc()
        self.metrics.sessions_total.labels(kind).inc()
        s._spawn(s._close_unless_connected())
        log.info("session %s (%s) created with style %s", s.id[:8], kind, style)
        return s

    def get(self, sid: str) -> Session | None:
        return self.sessions.get(sid)

    async def close(self, sid: str) -> bool:
        s = self.sessions.pop(sid, None)
        if s is None:
            return False
        self.bury(sid)
        self.metrics.sessions.labels(s.kind).dec()
        self.metrics.forget_session(s.label)
        await s.close()
        log.info("session %s closed", sid[:8])
        return True

    async def close_all(self) -> None:
        await asyncio.gather(*(self.close(sid) for sid in list(self.sessions)), return_exceptions=True)
