"""Issue: secure by default. A server other machines can reach is never open by accident, and one
token does not open everybody's session: each attack here is run against a real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from stylestream.stream.appkeys import SESSIONS
from stylestream.stream.config import ServerConfig
from stylestream.stream.server import create_app
from tests.security.server_thread import ServerThread
from tests.serve_process import ServeProcess

ADMIN = "admin-token-0123456789abcdef"


def request(url: str, method: str = "GET", token: str | None = None, body: bytes | None = None,
            content_type: str | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:  # fmt: skip
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if content_type:
        h["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()





def test_public_bind_without_token_generates_one_and_prints_the_url(tmp_path):
    s = ServeProcess(tmp_path, "--host", "0.0.0.0", env={"STYLESTREAM_TOKEN": ""})
    try:
        text = s.wait_ready()
        m = re.search(r"http://\S+:(\d+)/#token=([A-Za-z0-9_-]{20,})", text)
        assert m, f"the page URL carrying the generated token must be printed:\n{text}"
        assert int(m.group(1)) == s.port
        token = m.group(2)
        assert request(f"{s.base}/api/styles")[0] == 401, "reachable from other machines with no token"
        assert request(f"{s.base}/api/styles", token="guess")[0] == 401
        assert request(f"{s.base}/api/styles", token=token)[0] == 200
        assert token not in " ".join(s.proc.args), "the token is generated, not on the command line"
    finally:
        s.stop()


def test_no_auth_is_explicit_and_warns(tmp_path):
    s = ServeProcess(tmp_path, "--host", "0.0.0.0", "--no-auth", env={"STYLESTREAM_TOKEN": ""})
    try:
        text = s.wait_ready()
        assert "WARNING" in text and "--no-auth" in text, text
        assert request(f"{s.base}/api/styles")[0] == 200
    finally:
        s.stop()


def test_token_from_environment_and_file_stays_out_of_ps(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file-0123456789\n")
    for args, env, token in [
        (["--token-file", str(token_file)], {}, "from-a-file-0123456789"),
        ([], {"STYLESTREAM_TOKEN": "from-the-env-0123456789"}, "from-the-env-0123456789"),
    ]:
        s = ServeProcess(tmp_path, "--host", "0.0.0.0", *args, env=env)
        try:
            text = s.wait_ready()
            assert "#token=" not in text and token not in text, "a token the user chose is not printed"
            assert token not in " ".join(s.proc.args)
            assert request(f"{s.base}/api/styles")[0] == 401
            assert request(f"{s.base}/api/styles", token=token)[0] == 200
        finally:
            s.stop()


def test_library_refuses_an_open_public_server():
    with pytest.raises(ValueError, match="without a token"):
        create_app(ServerConfig(host="0.0.0.0", include_user_plugins=False))
    bad = [ServerConfig(host="0.0.0.0", token="t", no_auth=True), ServerConfig(token="   "),
           ServerConfig(admin_token="short"), ServerConfig(token="same-token-0123456789",
                                                           admin_token="same-token-0123456789")]  # fmt: skip
    for cfg in bad:
        with pytest.raises(ValueError):
            cfg.validate()


def test_busy_port_is_one_line_and_no_url_is_printed(tmp_path):
    first = ServeProcess(tmp_path)
    try:
        first.wait_ready()
        r = subprocess.run([sys.executable, "-m", "stylestream", "serve", "--port", str(first.port)],
                           capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{first.port}" in r.stderr, r.stderr
        assert "open http" not in r.stdout, "the URL was printed for a port the server never had"
        assert "Traceback" not in r.stderr
    finally:
        first.stop()


def offer_sdp() -> str:
    """A real browser-like offer made by aiortc (sendrecv video), with no ICE servers."""
    import asyncio

    from aiortc import VideoStreamTrack

    from tests.stream.rtc_client import peer_connection, wait_gathered

    async def make() -> str:
        pc = peer_connection()
        pc.addTransceiver(VideoStreamTrack(), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        await wait_gathered(pc)
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def test_a_session_id_is_a_capability_only_its_creator_holds():
    token = "shared-user-token"
    sdp = offer_sdp()
    with ServerThread(ServerConfig(include_user_plugins=False, token=token, admin_token=ADMIN)) as srv:
        body = json.dumps({"sdp": sdp, "type": "offer", "style": "edges"}).encode()
        ids = []
        for _ in range(2):  # two people on the same server, both with the shared token
            status, _, raw = request(f"{srv.base}/api/offer", "POST", token, body, "application/json")
            assert status == 200, raw
            ids.append(json.loads(raw)["session"])
        victim = ids[1]
        assert len(victim) >= 22 and len(set(ids)) == 2  # 16 random bytes, url-safe base64

        # The attacker holds the shared token but not the victim's id: no way to learn it...
        status, _, raw = request(f"{srv.base}/api/sessions", token=token)
        assert status == 401 and victim.encode() not in raw
        status, _, raw = request(f"{srv.base}/metrics", token=token)
        assert status == 200 and victim.encode() not in raw and ids[0].encode() not in raw
        # ...guessing does not find it, and nothing about other sessions comes back.
        for guess in (victim[:-1] + ("A" if victim[-1] != "A" else "B"), "0" * 22, "*", "..%2f"):
            for method, path, ctype in [("POST", f"/whep/{guess}", "application/sdp"), ("DELETE", f"/api/sessions/{guess}", None),
                                        ("GET", f"/api/sessions/{guess}", None), ("DELETE", f"/whip/{guess}", None)]:  # fmt: skip
                status, _, raw = request(srv.base + path, method, token, sdp.encode() if ctype else None, ctype)
                assert status == 404, (method, path, status, raw)
        assert victim in srv.app[SESSIONS].sessions

        # The admin token lists them (the operator finds the session OBS started).
        status, _, raw = request(f"{srv.base}/api/sessions", token=ADMIN)
        assert status == 200 and {s["id"] for s in json.loads(raw)["sessions"]} == set(ids)
        # The creator controls its own session with its id.
        assert request(f"{srv.base}/api/sessions/{victim}", token=token)[0] == 200
        assert request(f"{srv.base}/api/sessions/{victim}", "DELETE", token)[0] == 200


def test_no_admin_token_means_nobody_lists_sessions():
    with ServerThread() as srv:  # the loopback default, no token at all
        status, _, raw = request(f"{srv.base}/api/sessions")
        assert status == 403 and b"--admin-token" in raw
