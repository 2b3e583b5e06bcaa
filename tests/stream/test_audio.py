"""Audio passthrough keeps pace with the stylized video: each sound frame leaves as long after it
arrived as the video's current delay, content and timestamps unchanged."""

from __future__ import annotations

import asyncio
import fractions
import time

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from stylestream.stream.audio import AudioRelay, DelayedAudioTrack


class Tone(MediaStreamTrack):
    """20 ms stereo s16 frames at 48 kHz, in real time, numbered in their samples."""

    kind = "audio"

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.n, self.frames, self.sent_at = 0, frames, {}

    async def recv(self) -> AudioFrame:
        if self.n >= self.frames:
            raise MediaStreamError
        await asyncio.sleep(0.02)
        samples = np.full((1, 960 * 2), self.n, dtype=np.int16)
        f = AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        f.sample_rate, f.pts, f.time_base = 48000, self.n * 960, fractions.Fraction(1, 48000)
        self.sent_at[f.pts] = time.monotonic()
        self.n += 1
        return f


def test_delayed_track_holds_each_frame_for_the_video_delay():
    async def main() -> list[tuple[float, int, int]]:
        src = Tone(25)
        track = DelayedAudioTrack(src, lambda: 0.15)
        out = []
        try:
            while True:
                f = await track.recv()
                out.append((time.monotonic() - src.sent_at[f.pts], f.pts, int(f.to_ndarray()[0, 0])))
        except MediaStreamError:
            return out

    out = asyncio.run(main())
    assert [p for _, p, _ in out] == [i * 960 for i in range(25)], "frames lost or reordered"
    assert [v for _, _, v in out] == list(range(25)), "content changed"
    waits = [w for w, _, _ in out]
    assert min(waits) >= 0.14 and np.median(waits) < 0.25, waits


def test_relay_feeds_several_listeners_and_drains_without_any():
    async def main() -> tuple[int, int, int]:
        src = Tone(20)
        relay = AudioRelay(src, lambda: 0.0)
        a, b = relay.track(), relay.track()

        async def count(t) -> int:
            n = 0
            try:
                while True:
                    await t.recv()
                    n += 1
            except MediaStreamError:
                return n

        na, nb = await asyncio.gather(count(a), count(b))
        relay.close()
        return na, nb, src.n

    na, nb, read = asyncio.run(main())
    assert read == 20 and na == nb == 20
