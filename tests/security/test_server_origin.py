"""Issue: browser-origin attacks on a token-less local server. A page on any web site can make the
visitor's browser send requests to 127.0.0.1: it must not be able to open sessions (fill the slots,
watch the camera), and a Host name that is not the server's (DNS rebinding) is refused."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from stylestream.stream.appkeys import SESSIONS
from stylestream.stream.config import ServerConfig
from tests.security.server_thread import ServerThread
from tests.security.test_server_auth import offer_sdp, request
from tests.stream.test_obs import CHROMIUM, CHROMIUM_ARGS

EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def sdp() -> str:
    return offer_sdp()


def test_other_origins_cannot_post_to_a_tokenless_server(sdp):
    with ServerThread() as srv:
        body = json.dumps({"sdp": sdp, "type": "offer", "style": "edges"}).encode()
        attempts = [
            ("POST", "/api/offer", body, "text/plain"),  # a "simple" request: no preflight
            ("POST", "/api/offer", body, "application/json"),
            ("POST", "/whip", sdp.encode(), "application/sdp"),
            ("POST", "/api/offer", b"sdp=x", "application/x-www-form-urlencoded"),  # an HTML form
        ]
        for method, path, data, ctype in attempts:
            status, headers, raw = request(srv.base + path, method, None, data, ctype, {"Origin": EVIL})
            assert status == 403 and b"--cors-origin" in raw, (path, ctype, status, raw)
            assert "Access-Control-Allow-Origin" not in headers
        # The preflight a browser sends before a non-simple request is refused too.
        status, headers, _ = request(f"{srv.base}/whip", "OPTIONS", headers={
            "Origin": EVIL, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})  # fmt: skip
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
        # Without an Origin (curl, OBS, FFmpeg) the content type still must be the real one.
        status, _, raw = request(f"{srv.base}/api/offer", "POST", None, body, "text/plain")
        assert status == 415 and b"application/json" in raw
        assert not srv.app[SESSIONS].sessions, "an attack opened a session"
        # The page itself (same origin) works: the browser sends Origin = the server.
        status, _, raw = request(f"{srv.base}/api/offer", "POST", None, body, "application/json",
                                 {"Origin": srv.base})  # fmt: skip
        assert status == 200, raw


def test_dns_rebinding_host_is_refused_unless_allowed():
    with ServerThread() as srv:
        for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example"):
            status, _, raw = request(f"{srv.base}/api/styles", headers={"Host": host})
            assert status == 403 and b"--allowed-host" in raw, host
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "localhost"):
            assert request(f"{srv.base}/api/styles", headers={"Host": host})[0] == 200, host
    with ServerThread(ServerConfig(include_user_plugins=False, allowed_hosts=["stream.lan"])) as srv:
        assert request(f"{srv.base}/api/styles", headers={"Host": "stream.lan:8080"})[0] == 200
        assert request(f"{srv.base}/api/styles", headers={"Host": "evil.example"})[0] == 403


def test_cors_only_for_named_origins_or_token_servers():
    player = "https://player.example.org"
    cfg = ServerConfig(include_user_plugins=False, cors_origins=[player])
    with ServerThread(cfg) as srv:
        for path, methods in [("/whip", {"POST"}), ("/whip/x", {"PATCH", "DELETE"}),
                              ("/whep/x", {"POST"}), ("/whep/x/y", {"PATCH", "DELETE"})]:  # fmt: skip
            status, h, _ = request(srv.base + path, "OPTIONS", headers={
                "Origin": player, "Access-Control-Request-Method": "DELETE",
                "Access-Control-Request-Headers": "authorization, content-type, if-match, etag"})  # fmt: skip
            assert status == 204 and h["Access-Control-Allow-Origin"] == player, path
            assert methods <= set(h["Access-Control-Allow-Methods"].replace(" ", "").split(",")), (path, h)
            assert {"authorization", "if-match", "etag"} <= set(h["Access-Control-Allow-Headers"].lower().replace(" ", "").split(","))
            assert "Location" in h["Access-Control-Expose-Headers"]
        assert request(f"{srv.base}/whip", "OPTIONS", headers={
            "Origin": EVIL, "Access-Control-Request-Method": "POST"})[0] == 403  # fmt: skip
    with ServerThread(ServerConfig(include_user_plugins=False, token="tok")) as srv:
        # With a token, any page may call (it must send the token), and even its 401 is readable.
        status, h, _ = request(f"{srv.base}/api/styles", headers={"Origin": EVIL})
        assert status == 401 and h["Access-Control-Allow-Origin"] == EVIL
        status, h, _ = request(f"{srv.base}/api/styles", token="tok", headers={"Origin": EVIL})
        assert status == 200 and h["Access-Control-Allow-Origin"] == EVIL


@pytest.mark.browser
def test_a_real_page_on_another_site_cannot_open_sessions(sdp):
    """The attack as it happens: Chromium visits a page from another origin whose script fires every
    request it can at the local server. None may open a session."""
    from playwright.sync_api import sync_playwright

    evil_page = """<!doctype html><script>
    window.results = [];
    async function attack(base, sdp) {
      const offer = JSON.stringify({sdp, type: "offer", style: "edges"});
      const tries = [
        () => fetch(base + "/api/offer", {method: "POST", body: offer, mode: "no-cors",
                                           headers: {"Content-Type": "text/plain"}}),
        () => fetch(base + "/api/offer", {method: "POST", body: offer, headers: {"Content-Type": "application/json"}}),
        () => fetch(base + "/whip", {method: "POST", body: sdp, headers: {"Content-Type": "application/sdp"}}),
        () => fetch(base + "/whip", {method: "POST", body: sdp, mode: "no-cors"}),
        () => fetch(base + "/api/sessions"),
      ];
      for (const t of tries) {
        try { const r = await t(); window.results.push(r.type + ":" + r.status); }
        catch (e) { window.results.push("blocked"); }
      }
      return window.results;
    }
    </script>"""

    async def evil_site() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/", lambda _r: web.Response(text=evil_page, content_type="text/html"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]

    with ServerThread() as srv:
        runner, port = srv.call(evil_site())
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    # "localhost" vs "127.0.0.1": a different origin, as any other web site would be.
                    page.goto(f"http://localhost:{port}/")
                    results = page.evaluate("([b, s]) => attack(b, s)", [srv.base, sdp])
                finally:
                    browser.close()
        finally:
            srv.call(runner.cleanup())
        assert len(results) == 5, results
        assert not any(r.startswith(("cors:2", "basic:2")) for r in results), results
        asyncio.run(asyncio.sleep(0.2))
        assert not srv.app[SESSIONS].sessions, f"a cross-site page opened a session: {results}"
