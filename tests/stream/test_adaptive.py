"""Holding the frame rate by adapting the processing size: the controller alone on a simulated cost
model, then a real session with a style whose cost grows with the pixels it is given."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from aiohttp import ClientSession

from stylestream.plugins import discover_plugins
from stylestream.plugins.base import StylePlugin
from stylestream.stream.adaptive import ScaleController
from stylestream.stream.config import ServerConfig
from tests.conftest import MEDIA
from tests.stream.rtc_client import ClipTrack, Peer, load_clip, running_server


def simulate(ctrl: ScaleController, seconds_per_pixel: float, t0: float, duration: float) -> tuple[float, list]:
    """Frames back to back on a virtual clock, each costing seconds_per_pixel * processed pixels."""
    t, trace = t0, []
    while t < t0 + duration:
        w, h = ctrl.size_for(640, 480)
        cost = seconds_per_pixel * w * h
        t += cost
        ctrl.observe(cost, max(w, h), now=t)
        trace.append((t, w, h, cost))
    return t, trace


def test_controller_settles_within_budget_and_recovers():
    ctrl = ScaleController(target_fps=24)
    slow = 0.100 / (640 * 480)  # 100 ms a frame at full size: 10 fps
    t, trace = simulate(ctrl, slow, 0.0, 3.0)
    settled = [c for tt, _, _, c in trace if tt > 2.0]
    assert settled and max(settled) <= 1.1 / 24, f"still {max(settled) * 1000:.0f} ms per frame after 2 s"
    w = trace[-1][1]
    assert 300 <= w <= 420, f"settled at {w} px wide: the largest size within budget is ~380"
    assert ctrl.state().adapting
    sizes = [w for tt, w, _, _ in trace if tt > 2.0]
    assert len(set(sizes)) <= 2, f"oscillates: {sorted(set(sizes))}"  # hysteresis
    # The load falls (another session ended): back to the input size within a few seconds.
    t, trace = simulate(ctrl, slow / 10, t, 4.0)
    assert trace[-1][1:3] == (640, 480) and not ctrl.state().adapting


def test_controller_off_and_capped():
    ctrl = ScaleController(target_fps=0, max_side=320)
    ctrl.observe(1.0, 320, now=10.0)
    assert ctrl.size_for(640, 480) == (320, 240) and not ctrl.state().adapting
    floor = ScaleController(target_fps=24)
    simulate(floor, 1.0 / (128 * 96), 0.0, 30.0)  # even the floor is too slow: stays at the floor
    assert floor.size_for(640, 480) == (128, 96)


class PixelCostStyle(StylePlugin):
    """Inverts colours; sleeps `seconds_per_pixel` per pixel (a model that is slow on this machine)."""

    name = "pixel-cost"
    seconds_per_pixel = 0.12 / (640 * 480)

    def apply(self, frames: np.ndarray, params: dict) -> np.ndarray:
        time.sleep(self.seconds_per_pixel * frames.shape[1] * frames.shape[2] * len(frames))
        return 255 - frames


def test_session_holds_the_frame_rate_and_stats_follow_the_style():
    clip = load_clip(MEDIA / "video" / "webcam_walk.mkv", (640, 480), limit=30)
    plugins = discover_plugins(include_user_dir=False)
    style = PixelCostStyle()
    plugins.add(style, "test")

    async def info(http, base, sid) -> dict:
        async with http.get(f"{base}/api/sessions/{sid}") as r:
            return await r.json()

    async def main() -> dict:
        cfg = ServerConfig(include_user_plugins=False, target_fps=20)
        async with running_server(cfg, plugins=plugins) as (base, _app), ClientSession() as http:
            peer = Peer(ClipTrack(clip))
            await peer.connect(http, base, "pixel-cost")
            t0 = time.monotonic()
            while True:  # settles at a size that holds the frame rate, within 3 s of the first frame
                await asyncio.sleep(0.25)
                s = await info(http, base, peer.session)
                if s["adapting"] and s["inference_ms"] and s["inference_ms"] < 1000 / 20:
                    break
                assert time.monotonic() - t0 < 6, f"never adapted: {s}"
            await asyncio.sleep(1.5)  # fps_out over a window spent at the adapted size
            adapted = await info(http, base, peer.session)
            style.seconds_per_pixel = 0.0  # the slowdown goes away
            t1 = time.monotonic()
            while (await info(http, base, peer.session))["proc_size"] != [640, 480]:
                assert time.monotonic() - t1 < 8, "did not grow back to the input size"
                await asyncio.sleep(0.25)
            # A switch: figures describe the new style from its first frames.
            async with http.patch(f"{base}/api/sessions/{peer.session}", json={"style": "edges"}) as r:
                assert r.status == 200
            await asyncio.sleep(0.3)
            switched = await info(http, base, peer.session)
            await peer.close()
            return {"adapted": adapted, "switched": switched, "frames": [f.shape for _, _, f in peer.received.frames]}

    out = asyncio.run(main())
    a = out["adapted"]
    assert a["in_size"] == [640, 480] and a["out_size"] == [640, 480], a  # the viewer keeps the camera's size
    assert a["proc_size"][0] < 640 and a["adapting"], a
    assert a["fps_out"] >= 14, f"fps out {a['fps_out']} while adapting to hold 20"
    assert set(out["frames"]) == {(480, 640, 3)}
    sw = out["switched"]
    assert sw["style"] == "edges" and (sw["inference_ms"] is None or sw["inference_ms"] < 40), sw
