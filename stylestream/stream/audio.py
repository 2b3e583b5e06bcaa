"""Audio passthrough: a publisher's sound (OBS and FFmpeg send Opus with the video) goes to everyone who
watches the session, held back by the stylized video's current delay so the two stay in sync.

aiortc has no encoded-frame forwarding, so the audio is decoded and re-encoded (Opus to Opus, same rate
and channels); its content and timestamps pass through unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from aiortc import MediaStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

log = logging.getLogger(__name__)

MAX_DELAY_S = 1.0  # never hold sound longer than this, whatever the video does
MAX_QUEUED = 200  # 20 ms frames: 4 s; beyond it the oldest go (a stalled consumer must not grow memory)


class DelayedAudioTrack(MediaStreamTrack):
    """Plays `source` `delay()` seconds late. A reader task stamps each frame on arrival, so the delay is
    measured from when the frame reached the server, like the video's."""

    kind = "audio"

    def __init__(self, source: MediaStreamTrack, delay: Callable[[], float]) -> None:
        super().__init__()
        self._source = source
        self._delay = delay
        self._queue: deque[tuple[float, AudioFrame]] = deque(maxlen=MAX_QUEUED)
        self._ready = asyncio.Event()
        self._ended = False
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._source.recv()
                self._queue.append((time.monotonic(), frame))
                self._ready.set()
        except MediaStreamError:
            pass
        finally:
            self._ended = True
            self._ready.set()

    async def recv(self) -> AudioFrame:
        while not self._queue:
            if self._ended or self.readyState != "live":
                self.stop()
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        arrived, frame = self._queue[0]
        hold = min(max(self._delay(), 0.0), MAX_DELAY_S) - (time.monotonic() - arrived)
        if hold > 0:
            await asyncio.sleep(hold)
        self._queue.popleft()
        return frame

    def stop(self) -> None:
        super().stop()
        self._reader.cancel()
        self._source.stop()


class AudioRelay:
    """One publisher audio track, fanned out to any number of delayed copies. The source is always
    read (aiortc would otherwise queue it for ever), whether or not anybody listens."""

    def __init__(self, source: MediaStreamTrack, delay: Callable[[], float]) -> None:
        self.source = source
        self.delay = delay
        self._relay = MediaRelay()
        self._keepalive = self._relay.subscribe(source, buffered=False)
        self._drain = asyncio.ensure_future(self._consume(self._keepalive))
        self._tracks: list[DelayedAudioTrack] = []

    @staticmethod
    async def _consume(track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                await track.recv()

    def track(self) -> DelayedAudioTrack:
        t = DelayedAudioTrack(self._relay.subscribe(self.source), self.delay)
        self._tracks.append(t)
        return t

    def close(self) -> None:
        self._drain.cancel()
        for t in self._tracks:
            t.stop()
        self._keepalive.stop()
