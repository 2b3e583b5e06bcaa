"""Load test for `stylestream serve`: N concurrent aiortc peers stream the real webcam clip for T
seconds; reports per-stream fps, end-to-end latency p50/p95 (from pts), dropped frames, and the
server's CPU and memory (read from /proc, so the server must run on this machine).

    python bench/serve_load.py --peers 1 4 8 --seconds 10 --style cartoon --size 320x240
    python bench/serve_load.py --url http://127.0.0.1:8080 --server-pid PID ...  (a running server)
    python bench/serve_load.py --lite-random ...   adds a `lite` network with RANDOM weights (speed only)

Without --url it starts `stylestream serve` itself on a free port (with --serve-args passed on).
Run from the repository root (it reuses the test client in tests/stream/rtc_client.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from aiohttp import ClientSession
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from stylestream.stream import network
from tests.serve_process import free_port
from tests.stream.rtc_client import ClipTrack, Peer, load_clip, match_pts

CLIP = Path(__file__).resolve().parents[2] / "shared" / "media" / "video" / "webcam_walk.mkv"


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_load(url: str, pid: int | None, peers: int, seconds: float, style: str, clip) -> dict:
    async with ClientSession() as http:
        ps = [Peer(ClipTrack(clip)) for _ in range(peers)]
        for p in ps:
            await p.connect(http, url, style)
        await asyncio.sleep(2.0)  # warm-up: ICE, first keyframes, model load
        marks = [len(p.received.frames) for p in ps]
        cpu0, t0 = (proc_cpu_seconds(pid) if pid else 0.0), time.monotonic()
        rss = []
        for _ in tqdm(range(int(seconds)), desc=f"{peers} peer(s) {style}", leave=False):
            await asyncio.sleep(1.0)
            if pid:
                rss.append(proc_rss_mib(pid))
        wall = time.monotonic() - t0
        cpu = (proc_cpu_seconds(pid) - cpu0) / wall * 100 if pid else float("nan")
        infos = []
        for p in ps:
            async with http.get(f"{url}/api/sessions/{p.session}") as r:
                infos.append(await r.json())
        fps, lat, dropped, frames_in = [], [], 0, 0
        for p, m, info in zip(ps, marks, infos):
            got = p.received.frames[m:]
            fps.append(len(got) / wall)
            mapped = match_pts(list(p.track.sent), [x[1] for x in p.received.frames])
            if mapped:
                lat += [t - p.track.sent[s][0] for (t, _, _), s in zip(p.received.frames[m:], mapped[m:])]
            dropped += info["dropped"]
            frames_in += info["frames_in"]
        for p in ps:
            await p.close()
    return {
        "peers": peers, "style": style, "seconds": round(wall, 1),
        "fps_per_stream_mean": round(float(np.mean(fps)), 1), "fps_per_stream_min": round(float(np.min(fps)), 1),
        "latency_p50_ms": round(float(np.percentile(lat, 50)) * 1000, 1) if lat else None,
        "latency_p95_ms": round(float(np.percentile(lat, 95)) * 1000, 1) if lat else None,
        "dropped_pct": round(100 * dropped / max(frames_in, 1), 1),
        "server_cpu_pct": round(cpu, 1), "server_rss_mib": round(max(rss), 1) if rss else None,
    }  # fmt: skip


def make_lite_plugin(folder: Path) -> None:
    """A `lite` network with random weights: same speed as a trained one, useless pictures."""
    from stylestream.models import build_model, save_model

    save_model(build_model("lite"), folder / "lite-random.pt", card={"note": "random weights, speed test only"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--server-pid", type=int, help="its process id, for CPU/memory")
    ap.add_argument("--peers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--style", nargs="+", default=["cartoon"])
    ap.add_argument("--size", default="320x240", help="what each peer sends, WxH")
    ap.add_argument("--lite-random", action="store_true", help="serve a random-weight `lite` net as lite-random")
    ap.add_argument("--serve-args", default="", help="extra `stylestream serve` options when starting one")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    clip = load_clip(CLIP, (w, h))
    proc, url, pid = None, args.url, args.server_pid
    tmp = tempfile.TemporaryDirectory()
    if url is None:
        port = free_port()
        network.use_interfaces(["lo"])  # server and peers on one machine: media stays on loopback
        cmd = [sys.executable, "-m", "stylestream", "serve", "--port", str(port), "--max-sessions", "64",
               "--ice-interface", "lo",
               *args.serve_args.split()]  # fmt: skip
        if args.lite_random:
            make_lite_plugin(Path(tmp.name))
            cmd += ["--plugins", tmp.name]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url, pid = f"http://127.0.0.1:{port}", proc.pid
        time.sleep(4)
    rows = []
    try:
        for style in args.style:
            for n in args.peers:
                rows.append(asyncio.run(run_load(url, pid, n, args.seconds, style, clip)))
                print(json.dumps(rows[-1]))
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=20)
        tmp.cleanup()
    print(f"\ndevice: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; peers send {args.size} "
          f"at 30 fps for {args.seconds:.0f} s\n")
    print("| style | peers | fps/stream mean (min) | latency p50 / p95 ms | dropped % | server CPU % | RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['style']} | {r['peers']} | {r['fps_per_stream_mean']} ({r['fps_per_stream_min']}) | "
              f"{r['latency_p50_ms']} / {r['latency_p95_ms']} | {r['dropped_pct']} | {r['server_cpu_pct']} | "
              f"{r['server_rss_mib']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
