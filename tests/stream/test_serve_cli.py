"""`stylestream serve` as a user runs it: bad options fail cleanly; SIGTERM closes every peer."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from aiohttp import ClientSession

from stylestream.stream.sdp import accept_candidateless, with_bitrate
from tests.serve_process import ServeProcess
from tests.stream.rtc_client import ClipTrack, Peer


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stylestream", "serve", *args],
                          check=False, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_bad_options_are_clear_errors():
    for args, words in [
        (["--style", "nope"], "unknown style 'nope'"),
        (["--cert", "x.pem"], "--cert and --key go together"),
        (["--max-sessions", "0"], "--max-sessions must be at least 1"),
        (["--ice-server", "http://x"], "must start with stun:"),
    ]:
        r = serve(*args)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_sigterm_closes_peers_and_exits_cleanly(clip, tmp_path):
    srv = ServeProcess(tmp_path, verbose=True)
    srv.wait_ready()

    async def main() -> bool:
        async with ClientSession() as http:
            peer = Peer(ClipTrack(clip))
            await peer.connect(http, srv.base, "cartoon")
            while len(peer.received.frames) < 10:
                await asyncio.sleep(0.05)
            srv.proc.send_signal(signal.SIGTERM)
            for _ in range(100):  # the server closes the connection: our incoming track ends
                if peer.pc.connectionState == "closed" or all(t.done() for t in peer._tasks):
                    break
                await asyncio.sleep(0.1)
            ended = all(t.done() for t in peer._tasks)
            await peer.close()
            return ended

    try:
        ended = asyncio.run(main())
        assert srv.proc.wait(timeout=20) == 0
    finally:
        srv.stop()
    text = srv.output()
    assert ended, "the peer's stream did not end when the server shut down"
    assert "closed 1 session(s) on shutdown" in text, text[-2000:]


def test_sdp_rewrites():
    offer = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=end-of-candidates\r\n"
    assert "end-of-candidates" not in accept_candidateless(offer)  # OBS: learn candidates from checks
    with_cand = offer + "a=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n"
    assert accept_candidateless(with_cand) == with_cand
    answer = ("v=0\r\nm=audio 9 X 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\n"
              "m=video 9 X 96 97\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n"
              "a=fmtp:97 apt=96\r\n")  # fmt: skip
    out = with_bitrate(answer, 2000)
    video = out.split("m=video")[1]
    assert "b=AS:2000" in video and "a=fmtp:96 x-google-start-bitrate=1500" in video
    assert "b=AS" not in out.split("m=video")[0] and "a=fmtp:97 apt=96\r\n" in video
    assert with_bitrate(answer, None) == answer
