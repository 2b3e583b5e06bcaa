"""Engine throughput: frames/s per style, backend and resolution, measured through `Engine.process`
(uint8 in/out, the path the server and `stylize` use).

Neural styles use random weights of the real architectures (speed does not depend on the weights);
nothing here is a trained result. Usage:

    python bench/engine.py                       # CPU, 320x240 and 640x480, table to stdout
    python bench/engine.py --device cuda --sizes 640x480 1280x720 --json out.json --plot bench/engine.png
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stylestream.devices import available_cores
from stylestream.export.onnx_export import export_onnx
from stylestream.export.options import ExportOptions
from stylestream.export.torchscript import save_torchscript
from stylestream.models import build_model, save_model
from stylestream.plugins import Engine, discover_plugins
from stylestream.runtime import BACKENDS

ARCHS = {"lite": {}, "johnson": {}}
FILTERS = ["cartoon", "sketch", "watercolor"]


def measure(engine: Engine, style: str, h: int, w: int, batch: int, seconds: float) -> float:
    frames = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    for _ in range(3):  # warm-up: model load, allocator, ORT's first-run planning
        engine.process(style, frames)
    n, t0 = 0, time.perf_counter()
    while n < 5 or time.perf_counter() - t0 < seconds:
        engine.process(style, frames)
        n += 1
    return n * batch / (time.perf_counter() - t0)


def device_desc(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()}, {available_cores()} cores usable"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", nargs="+", default=["320x240", "640x480"])
    ap.add_argument("--backends", nargs="+", default=["onnxruntime", "torch"], choices=BACKENDS.names(),
                    help="each style is written as .pt, .onnx and .torchscript, so these can run it")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0, help="measuring time per row")
    ap.add_argument("--no-filters", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--plot", type=Path, help="write a bar chart (PNG)")
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch, cfg in ARCHS.items():
            torch.manual_seed(0)
            model = build_model(arch, **cfg).eval()
            save_model(model, Path(tmp) / f"{arch}.pt")
            export_onnx(model, Path(tmp) / f"{arch}.onnx", ExportOptions())  # as `stylestream export` writes it
            save_torchscript(model, Path(tmp) / f"{arch}.torchscript")
        plugins = discover_plugins([tmp], include_user_dir=False, include_entry_points=False)
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
        for backend in args.backends:
            with Engine(plugins, backend=backend, device=args.device) as engine:
                for arch in ARCHS:
                    for w, h in sizes:
                        fps = measure(engine, arch, h, w, args.batch, args.seconds)
                        rows.append({"style": arch, "kind": "neural", "backend": engine.describe(arch),
                                     "size": f"{w}x{h}", "batch": args.batch, "fps": fps})  # fmt: skip
                        print(f"{arch:<12} {engine.describe(arch):<28} {w}x{h:<5} {fps:7.1f} frames/s", flush=True)
        if not args.no_filters:
            with Engine(plugins, device=args.device) as engine:
                for style in FILTERS:
                    for w, h in sizes:
                        fps = measure(engine, style, h, w, args.batch, args.seconds)
                        rows.append({"style": style, "kind": "filter", "backend": "opencv", "size": f"{w}x{h}",
                                     "batch": args.batch, "fps": fps})  # fmt: skip
                        print(f"{style:<12} {'opencv':<28} {w}x{h:<5} {fps:7.1f} frames/s", flush=True)

    meta = {"device": device_desc(args.device), "torch": torch.__version__,
            "onnxruntime": __import__("onnxruntime").__version__, "weights": "random (speed only)"}  # fmt: skip
    print(f"\ndevice: {meta['device']}; torch {meta['torch']}; onnxruntime {meta['onnxruntime']}\n")
    print("| style | backend | size | batch | frames/s | ms/frame |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['style']} | {r['backend']} | {r['size']} | {r['batch']} | {r['fps']:.1f} | {1000 / r['fps']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    if args.plot:
        plot(rows, meta, args.plot)


def _label(r: dict) -> str:
    return f"{r['style']}\n{r['backend'].replace(' (', chr(10) + '(')}"


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows}, key=lambda s: int(s.split("x")[0]))
    labels = list(dict.fromkeys(_label(r) for r in rows))
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 1.1), 4))
    width = 0.8 / len(sizes)
    for i, size in enumerate(sizes):
        vals = [next((r["fps"] for r in rows if _label(r) == lab and r["size"] == size), 0)
                for lab in labels]  # fmt: skip
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=size)
    ax.axhline(30, color="k", ls="--", lw=0.8, label="30 fps")
    ax.set_xticks(np.arange(len(labels)) + width * (len(sizes) - 1) / 2, labels, fontsize=6)
    ax.set_yscale("log")  # filters run 10-100x faster than the nets; keep both readable
    ax.set_ylabel("frames/s (Engine.process), log scale")
    ax.set_title(f"stylestream engine on {meta['device']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
