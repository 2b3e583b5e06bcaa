"""Property-based fuzzing of every endpoint that parses client input: random JSON, random and
mutated SDP, random trickle fragments. Never a 5xx, never a traceback in the log, and the server is
healthy afterwards."""

from __future__ import annotations

import http.client
import json
import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stylestream.stream.config import ServerConfig
from tests.security.server_thread import ServerThread
from tests.security.test_server_auth import offer_sdp

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,  # reproducible in CI
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)


class Server:
    def __init__(self) -> None:
        self.thread = ServerThread(ServerConfig(include_user_plugins=False, max_sessions=64))
        self.port = self.thread.port
        self.sdp = offer_sdp()
        self.whip_offer = self.sdp.replace("a=sendrecv", "a=sendonly")
        self.whep_offer = self.sdp.replace("a=sendrecv", "a=recvonly")
        status, headers, _ = self.call("POST", "/whip", self.whip_offer.encode(), "application/sdp")
        assert status == 201
        self.whip = headers["location"]
        self.sid = self.whip.rsplit("/", 1)[1]
        status, headers, _ = self.call("POST", f"/whep/{self.sid}", self.whep_offer.encode(), "application/sdp")
        assert status == 201
        self.whep = headers["location"]

    def call(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers={"Content-Type": ctype} if ctype else {})
        r = conn.getresponse()
        out = r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        conn.close()
        return out

    def check(self, method: str, path: str, body: bytes | None, ctype: str | None) -> None:
        status, headers, raw = self.call(method, path, body, ctype)
        assert status < 500, (method, path, status, raw[:300], body[:300] if body else body)
        if status >= 400:
            assert "error" in json.loads(raw), raw[:200]
        # A fuzzed offer that happens to be valid opens a session: end it, so slots never run out.
        if status in (200, 201) and method == "POST":
            loc = headers.get("location") or f"/api/sessions/{json.loads(raw)['session']}"
            assert self.call("DELETE", loc)[0] == 200


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.thread.close()


@st.composite
def mutated_sdp(draw, base: str) -> str:
    lines = base.split("\r\n")
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["drop", "dup", "replace", "insert", "digits", "truncate"]))
        i = draw(st.integers(0, len(lines) - 1))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "replace":
            lines[i] = lines[i][:2] + draw(st.text(max_size=40))
        elif op == "insert":
            kind = draw(st.sampled_from(["a=", "m=", "c=", "b=", "a=candidate:", "a=group:BUNDLE ", "a=mid:"]))
            lines.insert(i, kind + draw(st.text(alphabet=st.characters(codec="ascii"), max_size=40)))
        elif op == "digits":
            lines[i] = "".join(str(draw(st.integers(0, 99999))) if c.isdigit() else c for c in lines[i])
        elif op == "truncate":
            lines = lines[: i + 1]
    return "\r\n".join(lines)


def no_errors_logged(caplog) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad][:5]


@FUZZ
@given(body=json_values)
def test_offer_with_random_json(server, caplog, body):
    server.check("POST", "/api/offer", json.dumps(body).encode(), "application/json")
    no_errors_logged(caplog)


@FUZZ
@given(data=st.data(), style=st.sampled_from(["edges", "original", None, 3, "", "../x"]),
       params=st.none() | json_values)  # fmt: skip
def test_offer_with_mutated_sdp(server, caplog, data, style, params):
    body = {"sdp": data.draw(mutated_sdp(server.sdp)), "type": "offer", "style": style, "params": params}
    server.check("POST", "/api/offer", json.dumps(body).encode(), "application/json")
    no_errors_logged(caplog)


@FUZZ
@given(data=st.data())
def test_whip_and_whep_with_mutated_sdp(server, caplog, data):
    server.check("POST", "/whip?style=edges", data.draw(mutated_sdp(server.whip_offer)).encode(), "application/sdp")
    server.check("POST", f"/whep/{server.sid}", data.draw(mutated_sdp(server.whep_offer)).encode(), "application/sdp")
    no_errors_logged(caplog)


@FUZZ
@given(body=json_values | st.fixed_dictionaries({"style": json_values, "params": json_values}))
def test_session_patch_with_random_json(server, caplog, body):
    server.check("PATCH", f"/api/sessions/{server.sid}", json.dumps(body).encode(), "application/json")
    no_errors_logged(caplog)


@FUZZ
@given(data=st.data(), raw=st.binary(max_size=300))
def test_trickle_patches_with_random_fragments(server, caplog, data, raw):
    frag = data.draw(mutated_sdp("a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\na=end-of-candidates"))
    for path in (server.whip, server.whep):
        server.check("PATCH", path, frag.encode(), "application/trickle-ice-sdpfrag")
        server.check("PATCH", path, raw, "application/trickle-ice-sdpfrag")
    no_errors_logged(caplog)


def test_healthy_after_fuzzing(server):
    status, _, raw = server.call("GET", "/healthz")
    assert status == 200 and json.loads(raw)["ok"]
    assert server.call("GET", f"/api/sessions/{server.sid}")[0] == 200, "the fuzzed session must survive"
