"""A Python WebRTC client streams the real webcam clip through the server, like the page does."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiohttp import ClientSession

from stylestream.plugins import Engine, discover_plugins
from stylestream.stream.appkeys import SESSIONS
from stylestream.stream.config import ServerConfig
from tests.stream.rtc_client import ClipTrack, Peer, match_pts, mean_abs, running_server


def closest_style(received: np.ndarray, sent: np.ndarray, outputs: dict[str, np.ndarray]) -> str:
    return min(outputs, key=lambda k: mean_abs(received, outputs[k]))


def test_clip_is_stylized_with_sent_pts_and_style_switches_live(clip):
    """Frames come back as the chosen style's output of the very frame sent with that pts; a PATCH
    switches the style mid-stream without renegotiating; closing the peer ends the session."""
    plugins = discover_plugins(include_user_dir=False)
    ref = Engine(plugins)  # what the styles make of the frames we sent, computed here

    async def main() -> None:
        async with running_server() as (base, app), ClientSession() as http:
            peer = Peer(ClipTrack(clip))
            answer = await peer.connect(http, base, "edges")
            assert answer["type"] == "answer" and answer["session"]
            await asyncio.sleep(2.5)
            t_switch = time.monotonic()
            async with http.patch(f"{base}/api/sessions/{peer.session}", json={"style": "sketch"}) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["style"] == "sketch"
            await asyncio.sleep(2.0)
            async with http.get(f"{base}/api/sessions/{peer.session}") as r:
                info = await r.json()
            async with http.get(f"{base}/metrics") as r:
                metrics = await r.text()
            received = list(peer.received.frames)
            sent = peer.track.sent
            await peer.close()
            for _ in range(50):  # the server notices the peer left (DTLS close) and ends the session
                if not app[SESSIONS].sessions:
                    break
                await asyncio.sleep(0.1)
            assert not app[SESSIONS].sessions, "session left open after its peer closed"

        assert len(received) >= 90, f"only {len(received)} frames came back in 4.5 s at 30 fps"
        mapped = match_pts(list(sent), [p for _, p, _ in received])
        assert mapped is not None, "received pts do not correspond to the pts that were sent"
        assert len(set(mapped)) == len(mapped), "a sent frame came back twice"

        before = after = 0
        for (t, _, rgb), pts in zip(received, mapped):
            src = sent[pts][1]
            outs = {s: ref.process(s, src[None])[0] for s in ("edges", "sketch", "original")}
            got = closest_style(rgb, src, outs)
            if t < t_switch - 0.05:
                before += got == "edges"
                assert got == "edges", f"frame before the switch looks like {got}"
            elif t > t_switch + 0.5:
                after += got == "sketch"
                assert got == "sketch", f"frame after the switch looks like {got}"
        assert before > 30 and after > 30, (before, after)

        assert info["style"] == "sketch" and info["backend"] == "opencv"
        assert info["in_size"] == [320, 240] and info["out_size"] == [320, 240]
        assert info["fps_in"] > 20 and info["latency_ms"] is not None
        assert 'stylestream_frames_out_total{style="edges"}' in metrics
        assert 'stylestream_frames_out_total{style="sketch"}' in metrics
        assert "stylestream_inference_seconds_bucket" in metrics and "stylestream_latency_seconds" in metrics
        assert 'stylestream_engine_stage_seconds_total{stage="model"}' in metrics  # where a frame's time goes
        assert 'stylestream_engine_path_frames_total{path="numpy"}' in metrics

    try:
        asyncio.run(main())
    finally:
        ref.close()


def test_max_side_caps_the_processing_size_and_output_keeps_the_input_size(clip):
    async def main() -> None:
        cfg = ServerConfig(include_user_plugins=False, max_side=160, target_fps=0)
        async with running_server(cfg) as (base, _app), ClientSession() as http:
            peer = Peer(ClipTrack(clip))
            await peer.connect(http, base, "cartoon")
            await asyncio.sleep(1.5)
            async with http.get(f"{base}/api/sessions/{peer.session}") as r:
                info = await r.json()
            got = [f.shape for _, _, f in peer.received.frames]
            await peer.close()
        assert info["in_size"] == [320, 240] and info["proc_size"] == [160, 120]
        assert info["out_size"] == [320, 240] and info["adapting"] is False
        assert got and set(got) == {(240, 320, 3)}

    asyncio.run(main())
