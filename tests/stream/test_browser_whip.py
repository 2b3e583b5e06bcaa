"""A web player on another origin, doing what the common browser WHIP/WHEP libraries do: POST the
offer without waiting for ICE gathering, trickle candidates with PATCH + If-Match, read the
Location/ETag headers, close the peer connection and DELETE on unload. No CORS error may appear, the
stylized video must play, and the sessions must be gone after the page unloads."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from stylestream.stream.appkeys import SESSIONS
from stylestream.stream.config import ServerConfig
from tests.stream.rtc_client import running_server
from tests.stream.test_obs import CHROMIUM, CHROMIUM_ARGS

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PLAYER = """<!doctype html><meta charset="utf-8"><video id="out" autoplay muted playsinline></video><script>
"use strict";
window.log = [];
async function negotiate(pc, url) {
  // A library's resource: POST at once, queue what ICE gathers until the Location is known, then trickle.
  const queued = [];
  let send = (c) => queued.push(c);
  pc.onicecandidate = (ev) => { if (ev.candidate && ev.candidate.candidate) send(ev.candidate); };
  await pc.setLocalDescription(await pc.createOffer());
  const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/sdp"}, body: pc.localDescription.sdp});
  if (r.status !== 201) throw new Error(`POST ${url}: ${r.status} ${await r.text()}`);
  const location = new URL(r.headers.get("Location"), url).href, etag = r.headers.get("ETag");
  window.log.push(`201 ${new URL(location).pathname} etag=${!!etag} accept-patch=${r.headers.get("Accept-Patch")}`);
  const ufrag = /a=ice-ufrag:(\\S+)/.exec(pc.localDescription.sdp)[1], pwd = /a=ice-pwd:(\\S+)/.exec(pc.localDescription.sdp)[1];
  send = async (c) => {
    const frag = `a=ice-ufrag:${ufrag}\r\na=ice-pwd:${pwd}\r\na=mid:${c.sdpMid}\r\na=${c.candidate}\r\n`;
    const p = await fetch(location, {method: "PATCH", body: frag,
      headers: {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag, "ETag": etag}});
    window.log.push(`PATCH ${p.status}`);
  };
  await pc.setRemoteDescription({type: "answer", sdp: await r.text()});
  queued.forEach(send);
  return location;
}
async function run(server) {
  const cam = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}});
  const pub = new RTCPeerConnection({iceServers: []});
  pub.addTransceiver(cam.getVideoTracks()[0], {direction: "sendonly"});
  const whip = await negotiate(pub, `${server}/whip?style=edges`);
  const sid = new URL(whip).pathname.split("/").pop();
  const play = new RTCPeerConnection({iceServers: []});
  play.addTransceiver("video", {direction: "recvonly"});
  play.ontrack = (ev) => { document.getElementById("out").srcObject = new MediaStream([ev.track]); };
  const whep = await negotiate(play, `${server}/whep/${sid}`);
  window.addEventListener("beforeunload", () => {
    play.close(); pub.close();  // libraries close first, then DELETE (the server may have ended it already)
    for (const url of [whep, whip]) fetch(url, {method: "DELETE", keepalive: true});
  });
  return sid;
}
</script>"""


def test_player_on_another_origin_publishes_plays_and_cleans_up():
    from playwright.async_api import async_playwright

    async def main() -> dict:
        page_app = web.Application()
        page_app.router.add_get("/", lambda _r: web.Response(text=PLAYER, content_type="text/html"))
        page_app.router.add_get("/favicon.ico", lambda _r: web.Response(status=204))
        runner = web.AppRunner(page_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        origin = f"http://localhost:{site._server.sockets[0].getsockname()[1]}"
        config = ServerConfig(include_user_plugins=False, cors_origins=[origin])
        try:
            async with running_server(config) as (base, app), async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
                    *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])  # fmt: skip
                console: list[str] = []
                try:
                    context = await browser.new_context()
                    await context.grant_permissions(["camera"], origin=origin)
                    page = await context.new_page()
                    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                    await page.goto(f"{origin}/")
                    sid = await page.evaluate("(s) => run(s)", base)
                    await page.wait_for_function(
                        "() => { const v = document.getElementById('out');"
                        " return v.readyState >= 2 && v.videoWidth > 0 && v.currentTime > 1.0; }", timeout=30_000,
                    )  # fmt: skip
                    session = app[SESSIONS].sessions[sid]
                    state = {"viewers": len(session.viewers), "frames_out": session.pipeline.stats.frames_out,
                             "log": await page.evaluate("window.log")}  # fmt: skip
                    await page.close(run_before_unload=True)
                    for _ in range(100):
                        if not app[SESSIONS].sessions:
                            break
                        await asyncio.sleep(0.05)
                    state["left"] = len(app[SESSIONS].sessions)
                finally:
                    await browser.close()
                state["console"] = console
                return state
        finally:
            await runner.cleanup()

    state = asyncio.run(main())
    errors = [m for m in state["console"] if "cors" in m.lower() or m.startswith(("error", "pageerror"))]
    assert not errors, errors
    log = state["log"]
    assert sum(e.startswith("201 ") and "accept-patch=application/trickle-ice-sdpfrag" in e for e in log) == 2, log
    assert "PATCH 204" in log, f"no trickle PATCH was accepted: {log}"
    assert not [e for e in log if e.startswith("PATCH") and e != "PATCH 204"], log
    assert state["viewers"] == 1 and state["frames_out"] > 10, state
    assert state["left"] == 0, "the page unloaded but its session stayed open"
