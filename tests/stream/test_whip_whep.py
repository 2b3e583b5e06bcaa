"""WHIP ingest shaped like OBS Studio 30.2+ (H.264 only, Opus audio, no ICE candidates in the offer)
and WHEP playback of the stylized output, both with aiortc clients."""

from __future__ import annotations

import asyncio
import re

from aiohttp import ClientSession
from aiortc import AudioStreamTrack, RTCRtpSender, RTCSessionDescription

from stylestream.plugins import Engine, discover_plugins
from stylestream.stream.appkeys import SESSIONS
from tests.stream.rtc_client import (
    ClipTrack,
    Received,
    match_pts,
    mean_abs,
    peer_connection,
    running_server,
    wait_gathered,
)

SDP = {"Content-Type": "application/sdp"}


def obs_like_offer(sdp: str) -> str:
    """OBS 30.2+ sends no candidates (and no trickle): the server must learn them from the checks."""
    return "".join(l for l in sdp.splitlines(keepends=True) if not l.startswith(("a=candidate", "a=end-of-cand")))


def test_whip_publish_whep_play_and_delete(clip):
    ref = Engine(discover_plugins(include_user_dir=False))

    async def main() -> None:
        async with running_server() as (base, app), ClientSession() as http:
            # --- WHIP publisher (OBS-like)
            pub = peer_connection()
            track = ClipTrack(clip)
            video = pub.addTransceiver(track, direction="sendonly")
            h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/H264"]
            video.setCodecPreferences(h264)
            pub.addTransceiver(AudioStreamTrack(), direction="sendonly")
            await pub.setLocalDescription(await pub.createOffer())
            await wait_gathered(pub)
            offer = obs_like_offer(pub.localDescription.sdp)
            assert "a=candidate" not in offer and "VP8" not in offer

            async with http.options(f"{base}/whip") as r:
                assert r.status == 204 and r.headers["Accept-Post"] == "application/sdp"
            async with http.post(f"{base}/whip?style=edges", data=offer, headers=SDP) as r:
                assert r.status == 201, await r.text()
                assert r.headers["Content-Type"].startswith("application/sdp")
                location, etag = r.headers["Location"], r.headers["ETag"]
                answer = await r.text()
            assert re.fullmatch(r"/whip/[\w-]{20,}", location)  # hard to guess: whoever has it can DELETE
            assert "H264" in answer and "a=candidate:" in answer, "answer must accept H.264 and carry candidates"
            sid = location.rsplit("/", 1)[1]
            await pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            for _ in range(100):
                if pub.connectionState == "connected":
                    break
                await asyncio.sleep(0.05)
            assert pub.connectionState == "connected", "ICE must come up from the client's checks alone"

            # Trickle PATCH with a wrong ETag is refused; a matching one is accepted.
            frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
            async with http.patch(base + location, data="a=mid:0\r\n", headers={**frag, "If-Match": '"x"'}) as r:
                assert r.status == 412
            async with http.patch(base + location, data="a=mid:0\r\n", headers={**frag, "If-Match": etag}) as r:
                assert r.status == 204

            # --- WHEP viewer of that session
            viewer = peer_connection()
            viewer.addTransceiver("video", direction="recvonly")
            got = Received()
            tasks = []
            viewer.on("track", lambda t: tasks.append(asyncio.create_task(got.consume(t))))
            await viewer.setLocalDescription(await viewer.createOffer())
            await wait_gathered(viewer)
            async with http.post(f"{base}/whep/{sid}", data=viewer.localDescription.sdp, headers=SDP) as r:
                assert r.status == 201, await r.text()
                view_location = r.headers["Location"]
                await viewer.setRemoteDescription(RTCSessionDescription(await r.text(), "answer"))
            await asyncio.sleep(2.5)
            async with http.get(f"{base}/api/sessions/{sid}") as r:
                info = await r.json()
            assert info["kind"] == "whip" and info["viewers"] == 1 and info["style"] == "edges"

            async with http.delete(base + view_location) as r:
                assert r.status == 200
            async with http.delete(base + location) as r:
                assert r.status == 200
            async with http.delete(base + location) as r:  # repeated (clients retry): still 200 for a minute
                assert r.status == 200
            assert not app[SESSIONS].sessions
            await viewer.close()
            await pub.close()
            for t in tasks:
                t.cancel()

        frames = got.frames
        assert len(frames) > 30, f"the WHEP viewer got only {len(frames)} frames in 2.5 s"
        mapped = match_pts(list(track.sent), [p for _, p, _ in frames])
        assert mapped is not None, "WHEP output pts do not match the published pts"
        for (_, _, rgb), pts in list(zip(frames, mapped))[::10]:
            src = track.sent[pts][1]
            d_style = mean_abs(rgb, ref.process("edges", src[None])[0])
            assert d_style < mean_abs(rgb, src), "WHEP output is not the stylized stream"

    try:
        asyncio.run(main())
    finally:
        ref.close()
