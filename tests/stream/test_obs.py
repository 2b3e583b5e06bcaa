"""OBS Studio's WHIP output, stood in for by an aiortc client that behaves like OBS 30.2+: H.264-only
video plus Opus audio, an offer with NO ICE candidates, bearer token. The stylized result is played by
a WHEP viewer and by the /view/SESSION page (OBS's Browser Source) in headless Chromium."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
from aiohttp import ClientSession
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from stylestream.plugins import Engine, discover_plugins
from stylestream.stream.config import ServerConfig
from tests.stream.rtc_client import (
    ClipTrack,
    Received,
    mean_abs,
    peer_connection,
    running_server,
    wait_gathered,
)

TOKEN = "obs-secret-token"
ADMIN = "obs-admin-token-0123456789"  # the operator's: lists sessions to find the one OBS started
STYLE = "sketch"  # grey pencil strokes: easy to tell from the colour frames OBS sends
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


class OBSPublisher:
    """What OBS 30.2+ sends to a WHIP server."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.pc = peer_connection()
        self.video = ClipTrack(frames)
        vt = self.pc.addTransceiver(self.video, direction="sendonly")
        vt.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                if c.mimeType == "video/H264"])  # fmt: skip
        at = self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        at.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("audio").codecs
                                if c.mimeType == "audio/opus"])  # fmt: skip

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await wait_gathered(self.pc)
        # OBS does not trickle and puts no candidates in its offer: the server must learn ours
        # from our connectivity checks (peer-reflexive candidates).
        lines = self.pc.localDescription.sdp.splitlines()
        return "\r\n".join(ln for ln in lines if not ln.startswith(("a=candidate", "a=end-of-candidates"))) + "\r\n"


async def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def video_codecs(sdp: str) -> set[str]:
    video = sdp.split("m=video", 1)[1].split("\r\nm=", 1)[0]
    return {m.upper() for m in re.findall(r"a=rtpmap:\d+ ([\w-]+)/", video)}


async def whep_viewer(http: ClientSession, base: str, sid: str) -> tuple[RTCPeerConnection, Received, str]:
    pc = peer_connection()
    received = Received()
    tasks = []
    pc.on("track", lambda t: tasks.append(asyncio.ensure_future(received.consume(t))))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    await wait_gathered(pc)
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"}
    async with http.post(f"{base}/whep/{sid}", data=pc.localDescription.sdp, headers=headers) as r:
        assert r.status == 201, await r.text()
        location = r.headers["Location"]
        await pc.setRemoteDescription(RTCSessionDescription(await r.text(), "answer"))
    return pc, received, location


async def play_view_page(url: str) -> dict:
    """Load the WHEP page in headless Chromium; return the <video>'s state once it plays."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(url)
            await page.wait_for_function(
                "() => { const v = document.querySelector('video');"
                " return v && v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0.5; }",
                timeout=25_000,
            )
            t0 = await page.evaluate("document.querySelector('video').currentTime")
            await page.wait_for_timeout(700)
            return await page.evaluate(
                """(t0) => { const v = document.querySelector('video');
                   return {width: v.videoWidth, height: v.videoHeight, paused: v.paused, advanced: v.currentTime - t0,
                           message: document.getElementById('message').hidden ? null
                                    : document.getElementById('message').textContent}; }""",
                t0,
            )
        finally:
            await browser.close()


@pytest.mark.browser
def test_obs_whip_publish_whep_view_and_delete(clip):
    ref = Engine(discover_plugins(include_user_dir=False))
    stylized = [ref.process(STYLE, f[None])[0] for f in clip]
    config = ServerConfig(include_user_plugins=False, token=TOKEN, admin_token=ADMIN)

    async def main() -> dict:
        async with running_server(config) as (base, _app), ClientSession() as http:
            obs = OBSPublisher(clip)
            offer = await obs.offer()
            assert "a=candidate" not in offer and video_codecs(offer) <= {"H264", "RTX"}

            # Without the token: refused, and the client is told how to authenticate.
            async with http.post(f"{base}/whip?style={STYLE}", data=offer,
                                 headers={"Content-Type": "application/sdp"}) as r:  # fmt: skip
                assert r.status == 401 and "Bearer" in r.headers.get("WWW-Authenticate", "")

            headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKEN}"}
            # A typo in the style name (OBS's server URL): 400 naming the styles there are.
            async with http.post(f"{base}/whip?style=skecth", data=offer, headers=headers) as r:
                assert r.status == 400 and "choose one of" in await r.text() and STYLE in await r.text()

            async with http.post(f"{base}/whip?style={STYLE}", data=offer, headers=headers) as r:
                assert r.status == 201, await r.text()
                assert r.content_type == "application/sdp"
                location = r.headers["Location"]
                answer = await r.text()
            assert location.startswith("/whip/") and len(location.rsplit("/", 1)[1]) >= 16, location
            assert "a=candidate:" in answer, "OBS sends no candidates, so the answer must carry the server's"
            assert "H264" in video_codecs(answer) and "VP8" not in video_codecs(answer)
            assert "opus/48000" in answer.lower()
            await obs.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            await wait_for(lambda: obs.pc.connectionState == "connected", 20, "the OBS connection")

            async with http.get(f"{base}/api/sessions", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 401, "the users' token must not list everyone's sessions"
            async with http.get(f"{base}/api/sessions", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
                listed = await r.json()
            sid = location.rsplit("/", 1)[1]
            assert sid in str(listed)

            viewer, received, viewer_location = await whep_viewer(http, base, sid)
            await wait_for(lambda: len(received.frames) >= 30, 20, "30 stylized frames at the WHEP viewer")
            async with http.get(f"{base}/api/sessions/{sid}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                info = await r.json()
            assert (info["kind"], info["style"], info["state"], info["viewers"]) == ("whip", STYLE, "connected", 1)
            assert info["frames_out"] >= 30, info
            page = await play_view_page(f"{base}/view/{sid}#token={TOKEN}")

            async with http.delete(f"{base}{location}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200
            n_at_delete = len(received.frames)
            await wait_for(lambda: viewer.connectionState in ("closed", "failed"), 15, "the viewer to be ended")
            async with http.get(f"{base}/api/sessions/{sid}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 404
            async with http.delete(f"{base}{location}", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
                assert r.status == 200  # a repeated DELETE (OBS retries) is not an error
            await viewer.close()
            await obs.pc.close()
            return {"received": list(received.frames), "page": page, "after_delete": len(received.frames)
                    - n_at_delete, "viewer_location": viewer_location}  # fmt: skip

    out = asyncio.run(main())

    frames = [rgb for _, _, rgb in out["received"]]
    assert all(f.shape == (240, 320, 3) for f in frames), {f.shape for f in frames}
    # Each frame the viewer got is the style's output of some frame OBS sent, not the frame itself.
    closer_to_style = sum(
        min(mean_abs(f, s) for s in stylized) < min(mean_abs(f, c) for c in clip) for f in frames[5:]
    )
    assert closer_to_style >= 0.9 * len(frames[5:]), f"{closer_to_style}/{len(frames[5:])} frames stylized"
    assert out["viewer_location"].startswith("/whep/")
    assert out["after_delete"] <= 10, "frames kept flowing after DELETE"

    page = out["page"]
    assert page["message"] is None, page["message"]
    assert (page["width"], page["height"]) == (320, 240) and not page["paused"] and page["advanced"] > 0.2, page


@pytest.mark.browser
def test_browser_source_on_the_servers_page():
    """Way 3: OBS's Browser Source (Chromium, started with OBS's --use-fake-ui-for-media-stream) on the
    server's page: the camera goes in and the stylized output plays."""
    from playwright.async_api import async_playwright

    async def main() -> dict:
        async with running_server() as (base, _app), async_playwright() as p, ClientSession() as http:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])  # fmt: skip
            try:
                context = await browser.new_context()
                await context.grant_permissions(["camera"], origin=base)
                page = await context.new_page()
                await page.goto(f"{base}/")
                await page.click("#start")
                await page.wait_for_function(
                    "() => { const v = document.getElementById('output');"
                    " return v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 0.5; }",
                    timeout=30_000,
                )
                state = await page.evaluate(
                    """() => ({w: document.getElementById('output').videoWidth,
                               message: document.getElementById('message').hidden ? null
                                        : document.getElementById('message').textContent})"""
                )
                sid = await page.evaluate("window.stylestream.session")
                async with http.get(f"{base}/api/sessions/{sid}") as r:
                    state["session"] = await r.json()
                return state
            finally:
                await browser.close()

    state = asyncio.run(main())
    assert state["w"] > 0 and state["message"] in (None, ""), state
    session = state["session"]
    assert session["state"] == "connected" and session["frames_out"] > 0, session
