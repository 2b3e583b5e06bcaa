"""Load test for `stylestream serve`: N concurrent aiortc peers stream the real webcam clip for T
seconds; reports per-stream fps, end-to-end latency p50/p95 (from pts), dropped frames, and the
server's CPU and memory (read from /proc, so the server must run on this machine).

    python bench/serve_load.py --peers 1 4 8 --seconds 10 --style cartoon --size 320x240
    python bench/serve_load.py --url http://127.0.0.1:8080 --server-pid PID ...  (a running server)
    python bench/serve_load.py --random-nets ...   adds `lite` and `johnson` networks with RANDOM weights
                                                    (speed only) as lite-random and johnson-random
    python bench/serve_load.py --random-nets --backend local triton --style lite-random ...
        the same peers and styles, run by the server itself (`local`: its --backend auto, on the styles'
        ONNX files) and by a Triton Inference Server (`triton`: the same ONNX exported with
        --triton-backend python; serve --backend triton --triton-url ...)

Without --url it starts `stylestream serve` itself on a free port (with --serve-args passed on). For
`triton` without --triton-url it starts tritonserver here too, from the environment that
`python -m tests.runtime.tritonserver --setup` makes, and reports its CPU (server and python stubs)
next to the stylestream server's. Run from the repository root (it reuses the test clients in tests/)."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
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


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and its descendants (tritonserver runs each python model in a stub)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            total += proc_cpu_seconds(p)
        except OSError:
            continue
        todo += children.get(p, [])
    return total


async def run_load(url: str, pid: int | None, peers: int, seconds: float, style: str, clip,
                   triton_pid: int | None = None) -> dict:  # fmt: skip
    async with ClientSession() as http:
        ps = [Peer(ClipTrack(clip)) for _ in range(peers)]
        for p in ps:
            await p.connect(http, url, style)
        await asyncio.sleep(2.0)  # warm-up: ICE, first keyframes, model load
        marks = [len(p.received.frames) for p in ps]
        cpu0, t0 = (proc_cpu_seconds(pid) if pid else 0.0), time.monotonic()
        tcpu0 = tree_cpu_seconds(triton_pid) if triton_pid else 0.0
        rss = []
        for _ in tqdm(range(int(seconds)), desc=f"{peers} peer(s) {style}", leave=False):
            await asyncio.sleep(1.0)
            if pid:
                rss.append(proc_rss_mib(pid))
        wall = time.monotonic() - t0
        cpu = (proc_cpu_seconds(pid) - cpu0) / wall * 100 if pid else float("nan")
        triton_cpu = (tree_cpu_seconds(triton_pid) - tcpu0) / wall * 100 if triton_pid else None
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
        "triton_cpu_pct": round(triton_cpu, 1) if triton_cpu is not None else None,
        "proc_size": "/".join("x".join(map(str, i["proc_size"])) for i in infos if i.get("proc_size")),
    }  # fmt: skip


def make_random_plugins(folder: Path) -> None:
    """`lite` and `johnson` networks with random weights (lite-random, johnson-random): the speed of
    trained ones, useless pictures."""
    from stylestream.models import build_model, save_model

    for arch in ("lite", "johnson"):
        save_model(build_model(arch), folder / f"{arch}-random.pt", card={"note": "random weights, speed test only"})


def export_styles(pt_files: list[Path], onnx_dir: Path, repo: Path) -> None:
    """Each style as NAME.onnx (what the local server runs) and as a Triton model NAME (python backend:
    the same ONNX in model.py), both verified against PyTorch by `stylestream export`."""
    from stylestream.export import ExportOptions, export

    for pt in pt_files:
        opts = ExportOptions(name=pt.stem, verify_sizes=[(64, 64)], verify_frames=1, thumbnail=False)
        export(pt, "onnx", onnx_dir / f"{pt.stem}.onnx", opts)
        export(pt, "triton", repo, replace(opts, triton_backend="python"))


def start_serve(serve_args: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "stylestream", "serve", "--port", str(port), "--max-sessions", "64",
           "--ice-interface", "lo", *serve_args]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # ready: /healthz answers (styles discovered, Triton asked)
        if proc.poll() is not None:
            raise SystemExit(f"stylestream serve exited with {proc.returncode}: {' '.join(cmd)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)  # no proxy: loopback only
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, url
        except OSError:
            time.sleep(0.3)
        finally:
            conn.close()
    proc.terminate()
    raise SystemExit("stylestream serve was not ready after 120 s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server (default: start one)")
    ap.add_argument("--server-pid", type=int, help="its process id, for CPU/memory")
    ap.add_argument("--peers", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--style", nargs="+", default=["cartoon"])
    ap.add_argument("--size", default="320x240", help="what each peer sends, WxH")
    ap.add_argument("--random-nets", action="store_true",
                    help="serve random-weight nets as lite-random and johnson-random (speed only)")
    ap.add_argument("--backend", nargs="+", choices=["local", "triton"], default=["local"],
                    help="who runs the styles: local (the server) and/or triton (a Triton server; needs "
                         "--random-nets, whose styles are exported for it); default: local")
    ap.add_argument("--triton-url", help="a running Triton serving the styles (default: start one here)")
    ap.add_argument("--serve-args", default="", help="extra `stylestream serve` options when starting one")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    if "triton" in args.backend and not args.random_nets:
        ap.error("--backend triton serves the --random-nets styles (exported for Triton here): add --random-nets")
    if args.url and len(args.backend) > 1:
        ap.error("with --url the server is yours: give the one --backend it runs")
    w, h = (int(v) for v in args.size.split("x"))
    clip = load_clip(CLIP, (w, h))
    network.use_interfaces(["lo"])  # server and peers on one machine: media stays on loopback
    tmp = tempfile.TemporaryDirectory()
    folder, onnx_dir, repo = (Path(tmp.name) / d for d in ("pt", "onnx", "triton"))
    triton = None
    rows = []
    try:
        serve_args = args.serve_args.split()
        if args.random_nets:
            folder.mkdir()
            make_random_plugins(folder)
            if "triton" in args.backend:  # both backends run the very same ONNX
                onnx_dir.mkdir()
                export_styles(sorted(folder.glob("*.pt")), onnx_dir, repo)
                folder = onnx_dir
        triton_url = args.triton_url
        if "triton" in args.backend and not triton_url:
            from tests.runtime.tritonserver import TritonServer, find_env

            env = find_env()
            if isinstance(env, str):
                raise SystemExit(env)
            triton = TritonServer(env, repo, Path(tmp.name) / "tritonserver")
            triton.start(ready=[p.stem for p in onnx_dir.glob("*.onnx")])
            triton_url = triton.grpc_url
        for backend in args.backend:
            proc, url, pid = None, args.url, args.server_pid
            if url is None:
                extra = (["--backend", "triton", "--triton-url", triton_url] if backend == "triton" else
                         ["--plugins", str(folder)] if args.random_nets else [])  # fmt: skip
                proc, url = start_serve([*serve_args, *extra])
                pid = proc.pid
            try:
                for style in args.style:
                    for n in args.peers:
                        row = asyncio.run(run_load(url, pid, n, args.seconds, style, clip,
                                                   triton.proc.pid if triton and backend == "triton" else None))
                        rows.append({"backend": backend, **row})
                        print(json.dumps(rows[-1]))
            finally:
                if proc:
                    proc.terminate()
                    proc.wait(timeout=20)
    finally:
        if triton:
            triton.stop()
        tmp.cleanup()
    print(f"\ndevice: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; peers send {args.size} "
          f"at 30 fps for {args.seconds:.0f} s" + (f"; Triton {triton_url}" if "triton" in args.backend else "") + "\n")
    print("| backend | style | peers | fps/stream mean (min) | latency p50 / p95 ms | dropped % | server CPU % "
          "| Triton CPU % | RSS MiB | style ran at |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['style']} | {r['peers']} | {r['fps_per_stream_mean']} ({r['fps_per_stream_min']}) "
              f"| {r['latency_p50_ms']} / {r['latency_p95_ms']} | {r['dropped_pct']} | {r['server_cpu_pct']} | "
              f"{r['triton_cpu_pct'] if r['triton_cpu_pct'] is not None else '-'} | {r['server_rss_mib']} "
              f"| {r['proc_size']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
