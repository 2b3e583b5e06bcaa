"""Issue: unbounded parsing and slow clients. Hostile bodies get a 400, not a 500 or a blocked event
loop; connections that trickle their request or pile up from one address are closed; an aborted
upload is one log line."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time

import pytest

from stylestream.stream.appkeys import SESSIONS
from stylestream.stream.config import ServerConfig
from tests.security.server_thread import ServerThread
from tests.security.test_server_auth import offer_sdp, request


@pytest.fixture(scope="module")
def sdp() -> str:
    return offer_sdp()


def healthz_ms(port: int, source: str = "127.0.0.1") -> float:
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    conn.request("GET", "/healthz")
    assert conn.getresponse().status == 200
    conn.close()
    return (time.perf_counter() - t0) * 1000


def test_deep_json_is_a_400_not_a_500():
    with ServerThread() as srv:
        for body in (b"[" * 100_000, b'{"a":' * 50_000):
            status, _, raw = request(f"{srv.base}/api/offer", "POST", None, body, "application/json")
            assert status == 400 and b"JSON" in raw, (status, raw[:200])
        assert healthz_ms(srv.port) < 5000


def test_candidate_floods_are_refused_before_aiortc_sees_them(sdp):
    flood = sdp.replace("a=end-of-candidates\r\n", "") + "".join(
        f"a=candidate:{i} 1 udp 2122260223 10.{i // 250 % 250}.{i % 250}.1 {10000 + i} typ host\r\n" for i in range(2800)
    )
    body = json.dumps({"sdp": flood, "type": "offer", "style": "edges"}).encode()
    with ServerThread() as srv:
        worst = 0.0
        results: list[int] = []

        def post() -> None:
            results.append(request(f"{srv.base}/api/offer", "POST", None, body, "application/json")[0])

        for _ in range(3):  # four floods at once, while /healthz is timed
            threads = [threading.Thread(target=post) for _ in range(4)]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                worst = max(worst, healthz_ms(srv.port))
            for t in threads:
                t.join()
        assert results == [400] * 12, results
        status, _, raw = request(f"{srv.base}/whip", "POST", None, flood.encode(), "application/sdp")
        assert status == 400 and b"ICE candidates; at most 50" in raw
        assert not srv.app[SESSIONS].sessions
        # The figure was 4 s of stalled /healthz; the goal is < 100 ms (a loaded 2-core CI
        # machine gets slack; the measured value is in the assertion message).
        assert worst < 1000, f"/healthz took {worst:.0f} ms while floods arrived"

        # Trickle PATCH: the same cap per request, on a real WHIP session.
        whip_offer = sdp.replace("a=sendrecv", "a=sendonly")
        status, headers, raw = request(f"{srv.base}/whip", "POST", None, whip_offer.encode(), "application/sdp")
        assert status == 201, raw
        frag = "a=ice-ufrag:{}\r\na=mid:0\r\n".format(whip_offer.split("a=ice-ufrag:")[1].split()[0])
        too_many = frag + "".join(f"a=candidate:{i} 1 udp 1 10.0.0.{i} 9 typ host\r\n" for i in range(1, 52))
        status, _, raw = request(srv.base + headers["Location"], "PATCH", None, too_many.encode(),
                                 "application/trickle-ice-sdpfrag")  # fmt: skip
        assert status == 400 and b"--max-candidates" in raw
        status, _, _ = request(srv.base + headers["Location"], "PATCH", None,
                               (frag + "a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n").encode(),
                               "application/trickle-ice-sdpfrag")  # fmt: skip
        assert status == 204


def slow_sockets(port: int, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.setblocking(False)
        socks.append(s)
    return socks


def closed(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""  # EOF: the server closed it
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_slow_header_clients_are_cut_off_and_capped_per_address():
    cfg = ServerConfig(include_user_plugins=False, header_timeout_s=2.0, max_connections_per_ip=64)
    with ServerThread(cfg) as srv:
        socks = slow_sockets(srv.port, 300)
        try:
            request_line = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
            t0 = time.monotonic()
            sent = 0
            open_counts = []
            while time.monotonic() - t0 < 6:  # one byte per connection every 0.5 s (the issue: every 2 s)
                for s in socks:
                    try:
                        s.send(request_line[sent : sent + 1])
                    except OSError:
                        pass
                sent += 1
                time.sleep(0.5)
                open_counts.append(sum(not closed(s) for s in socks))
                # Another client (another address) is served meanwhile.
                assert healthz_ms(srv.port, source="127.0.0.2") < 5000
            assert open_counts[0] <= 64, f"{open_counts[0]} connections from one address stayed open"
            assert open_counts[-1] == 0, f"slow clients still connected after 6 s: {open_counts}"
        finally:
            for s in socks:
                s.close()
        assert healthz_ms(srv.port) < 5000


def test_slow_and_aborted_bodies(caplog):
    cfg = ServerConfig(include_user_plugins=False, body_timeout_s=1.0)
    caplog.set_level(logging.INFO)
    with ServerThread(cfg) as srv:
        head = (b"POST /api/offer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n")  # fmt: skip
        # A body that stops arriving: 408 after the body timeout, and the connection is closed.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(head + b'{"sdp": "')
        t0 = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert time.monotonic() - t0 < 5
        s.close()
        # An upload aborted half-way: one log line, no traceback, the server fine.
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(head + b"x" * 5000)
        time.sleep(0.2)
        s.close()
        time.sleep(0.5)
        assert healthz_ms(srv.port) < 5000
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
