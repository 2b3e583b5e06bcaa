"""The HTTP API without media: every bad request is a 4xx JSON error and the server stays healthy;
--token and --max-sessions are enforced; the page and its assets are served."""

from __future__ import annotations

import asyncio

from aiohttp import ClientSession
from aiortc import RTCPeerConnection, VideoStreamTrack

from stylestream.stream.appkeys import SESSIONS
from stylestream.stream.config import ServerConfig
from tests.stream.rtc_client import peer_connection, running_server, wait_gathered


async def real_offer() -> tuple[RTCPeerConnection, str]:
    pc = peer_connection()
    pc.addTransceiver(VideoStreamTrack(), direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    await wait_gathered(pc)
    return pc, pc.localDescription.sdp


JSON = {"Content-Type": "application/json"}


def test_bad_input_corpus_gets_4xx_json_and_server_stays_healthy():
    async def main() -> None:
        async with running_server() as (base, app), ClientSession() as http:
            pc, sdp = await real_offer()
            recv_only = sdp.replace("a=sendrecv", "a=recvonly")
            garbage = "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/zzz\r\n"
            cases = [  # (method, path, kwargs, expected status, words the message must contain)
                ("POST", "/api/offer", {"data": b"{not json", "headers": JSON}, 400, "not valid JSON"),
                ("POST", "/api/offer", {"data": b"\xff\xfe\x00", "headers": JSON}, 400, "not valid JSON"),
                ("POST", "/api/offer", {"data": b"{}"}, 415, "application/json"),
                ("POST", "/api/offer", {"json": [1, 2]}, 400, "JSON object"),
                ("POST", "/api/offer", {"json": {"type": "offer"}}, 400, "missing field"),
                ("POST", "/api/offer", {"json": {"sdp": sdp}}, 400, "missing field"),
                ("POST", "/api/offer", {"json": {"sdp": sdp, "type": "answer"}}, 400, "'type' must be 'offer'"),
                ("POST", "/api/offer", {"json": {"sdp": "hello", "type": "offer"}}, 400, "malformed SDP"),
                ("POST", "/api/offer", {"json": {"sdp": garbage, "type": "offer"}}, 400, "SDP"),
                ("POST", "/api/offer", {"json": {"sdp": 42, "type": "offer"}}, 400, "SDP offer is missing"),
                ("POST", "/api/offer", {"json": {"sdp": recv_only, "type": "offer"}}, 400, "sendrecv"),
                ("POST", "/api/offer", {"json": {"sdp": sdp, "type": "offer", "style": "nope"}}, 400, "edges"),
                ("POST", "/api/offer", {"json": {"sdp": sdp, "type": "offer", "style": "edges",
                                                 "params": {"strength": "x"}}}, 400, "must be a number"),
                ("POST", "/api/offer", {"data": b"x" * (8 << 20), "headers": JSON}, 413, "too large"),
                ("GET", "/api/sessions/nope", {}, 404, "no session"),
                ("PATCH", "/api/sessions/nope", {"json": {"style": "edges"}}, 404, "no session"),
                ("DELETE", "/api/sessions/nope", {}, 404, "no session"),
                ("GET", "/api/styles/nope/thumbnail", {}, 404, "unknown style"),
                ("POST", "/whip", {"data": sdp}, 415, "application/sdp"),
                ("POST", "/whip", {"data": "garbage", "headers": {"Content-Type": "application/sdp"}}, 400,
                 "malformed SDP"),
                ("POST", "/whip?style=nope", {"data": sdp, "headers": {"Content-Type": "application/sdp"}}, 400,
                 "unknown style"),
                ("DELETE", "/whip/nope", {}, 404, "no session"),
                ("POST", "/whep/nope", {"data": sdp, "headers": {"Content-Type": "application/sdp"}}, 404,
                 "no session"),
                ("GET", "/api/nothing-here", {}, 404, "Not Found"),
                ("PUT", "/api/offer", {}, 405, "Not Allowed"),
            ]
            for method, path, kw, status, words in cases:
                async with http.request(method, base + path, **kw) as r:
                    body = await r.json()
                    assert r.status == status, (method, path, r.status, body)
                    assert words.lower() in body["error"].lower(), (path, body)
                async with http.get(f"{base}/healthz") as r:
                    assert r.status == 200 and (await r.json())["ok"]
            assert not app[SESSIONS].sessions, "a rejected offer left a session behind"

            # A real session, then bad PATCHes on it.
            async with http.post(f"{base}/api/offer", json={"sdp": sdp, "type": "offer", "style": "edges"}) as r:
                assert r.status == 200
                sid = (await r.json())["session"]
            for body, words in [
                ({"style": "nope"}, "unknown style"), ({"params": {"nope": 1}}, "no parameter"),
                ({"params": [1]}, "must be an object"), ({"colour": "red"}, "unknown field"), ({}, "give 'style'"),
            ]:  # fmt: skip
                async with http.patch(f"{base}/api/sessions/{sid}", json=body) as r:
                    assert r.status == 400 and words in (await r.json())["error"], body
            async with http.patch(f"{base}/api/sessions/{sid}", json={"params": {"strength": 7}}) as r:
                assert (await r.json())["params"] == {"strength": 1.0}  # clamped to the declared range
            async with http.get(f"{base}/api/sessions") as r:  # every session id: only for an --admin-token
                assert r.status == 403 and "--admin-token" in (await r.json())["error"]
            assert list(app[SESSIONS].sessions) == [sid]
            async with http.delete(f"{base}/api/sessions/{sid}") as r:
                assert r.status == 200
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                assert r.status == 404
            await pc.close()

    asyncio.run(main())


def test_token_is_required_on_api_whip_whep_and_metrics():
    async def main() -> None:
        cfg = ServerConfig(include_user_plugins=False, token="s3cret")
        async with running_server(cfg) as (base, _app), ClientSession() as http:
            good = {"Authorization": "Bearer s3cret"}
            for method, path in [("GET", "/api/styles"), ("GET", "/api/sessions/x"), ("POST", "/api/offer"),
                                 ("POST", "/whip"), ("POST", "/whep/x"), ("DELETE", "/whip/x"), ("GET", "/metrics")]:
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                    async with http.request(method, base + path, headers=headers) as r:
                        assert r.status == 401, (method, path, headers)
                        assert "token" in (await r.json())["error"]
                        assert r.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(f"{base}/api/styles", headers=good) as r:
                assert r.status == 200
                names = [s["name"] for s in (await r.json())["styles"]]
                assert {"original", "cartoon", "sketch", "edges"} <= set(names)
            for path in ("/healthz", "/", "/static/app.js", "/view/anything"):  # open: no secrets there
                async with http.get(base + path) as r:
                    assert r.status == 200, path
            async with http.options(f"{base}/whip") as r:  # CORS preflight carries no credentials
                assert r.status == 204 and r.headers["Accept-Post"] == "application/sdp"

    asyncio.run(main())


def test_max_sessions_answers_503_with_retry_after():
    async def main() -> None:
        cfg = ServerConfig(include_user_plugins=False, max_sessions=1)
        async with running_server(cfg) as (base, _app), ClientSession() as http:
            pc, sdp = await real_offer()
            body = {"sdp": sdp, "type": "offer", "style": "cartoon"}
            async with http.post(f"{base}/api/offer", json=body) as r:
                sid = (await r.json())["session"]
            async with http.post(f"{base}/api/offer", json=body) as r:
                assert r.status == 503 and r.headers["Retry-After"]
                assert "full" in (await r.json())["error"]
            async with http.post(f"{base}/whip", data=sdp, headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 503
            async with http.delete(f"{base}/api/sessions/{sid}") as r:
                assert r.status == 200
            async with http.post(f"{base}/api/offer", json=body) as r:
                assert r.status == 200
            await pc.close()

    asyncio.run(main())


def test_styles_listing_has_params_and_page_is_served():
    async def main() -> None:
        async with running_server() as (base, _app), ClientSession() as http:
            async with http.get(f"{base}/api/styles") as r:
                styles = {s["name"]: s for s in (await r.json())["styles"]}
            cartoon = styles["cartoon"]
            assert cartoon["kind"] == "filter" and cartoon["backend"] == "opencv" and cartoon["title"]
            assert any(p["name"] == "strength" and p["min"] == 0 and p["max"] == 1 for p in cartoon["params"])
            async with http.get(f"{base}/") as r:
                html = await r.text()
            assert 'id="styles"' in html and "app.js" in html
            async with http.get(f"{base}/api/config") as r:
                assert (await r.json())["codec"] == "vp8"

    asyncio.run(main())


def test_styles_without_a_picture_get_a_rendered_thumbnail():
    import cv2
    import numpy as np

    async def main() -> None:
        async with running_server() as (base, _app), ClientSession() as http:
            async with http.get(f"{base}/api/styles") as r:
                styles = {s["name"]: s for s in (await r.json())["styles"]}
            pics = {}
            for name in ("original", "sketch"):
                async with http.get(base + styles[name]["thumbnail"]) as r:
                    assert r.status == 200 and r.content_type == "image/jpeg"
                    pics[name] = cv2.imdecode(np.frombuffer(await r.read(), np.uint8), cv2.IMREAD_COLOR)
            assert pics["original"].shape == pics["sketch"].shape == (120, 160, 3)
            # the thumbnail shows the style: a pencil sketch is grey and differs from the photo
            assert np.abs(pics["original"].astype(int) - pics["sketch"]).mean() > 10
            b, g, r_ = (pics["sketch"][..., i].astype(int) for i in range(3))
            assert np.abs(b - g).mean() < 3 and np.abs(g - r_).mean() < 3
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200

    asyncio.run(main())


def test_idle_server_reports_zero_sessions_and_has_a_favicon():
    async def main() -> None:
        async with running_server() as (base, _app), ClientSession() as http:
            async with http.get(f"{base}/metrics") as r:
                text = await r.text()
            assert 'stylestream_sessions{kind="browser"} 0.0' in text and 'stylestream_sessions{kind="whip"} 0.0' in text
            async with http.get(f"{base}/favicon.ico") as r:
                assert r.status == 204  # not a 404 in every browser console

    asyncio.run(main())
