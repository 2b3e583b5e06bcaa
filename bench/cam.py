"""Benchmark `stylestream cam`: a real clip through the cam pipeline (PyAV file source -> engine ->
recording sink), for classic filters and the `lite` network, in two modes:

  every-frame  each frame stylized as fast as possible: the pipeline's throughput;
  real-time    the clip delivered at its own 30 fps with latest-frame-wins: the fps a viewer gets,
               frames dropped, and capture-to-output latency.

`lite` here has seeded random weights: speed does not depend on the weights, and its pictures are not
a trained result. Prints a markdown table and writes a bar chart.

    python bench/cam.py --frames 300 --plot bench/cam.png
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stylestream.cam.pipeline import CamPipeline
from stylestream.cam.sinks import RecordingSink
from stylestream.cam.sources import AVSource
from stylestream.devices import cpu_model
from stylestream.models import build_model, save_model
from stylestream.plugins import Engine, discover_plugins

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def make_lite(folder: Path, onnx: bool) -> None:
    """A seeded random-weight `lite` net as lite.pt (+ lite.onnx for ONNX Runtime)."""
    torch.manual_seed(0)
    model = build_model("lite").eval()
    save_model(model, folder / "lite.pt", card={"note": "random weights, for speed only"})
    if onnx:
        x = torch.rand(1, 3, 480, 640) * 255
        torch.onnx.export(model, (x,), str(folder / "lite.onnx"), input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "h", 3: "w"}},
                          dynamo=False)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=MEDIA / "video" / "bottles_640x360.mp4")
    ap.add_argument("--frames", type=int, default=300, help="frames per run")
    ap.add_argument("--styles", default="original,edges,cartoon,watercolor,lite")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-onnx", action="store_true", help="run lite with torch only")
    ap.add_argument("--plot", type=Path, help="write a bar chart here (.png)")
    args = ap.parse_args()

    styles = args.styles.split(",")
    rows = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        if "lite" in styles:
            make_lite(Path(tmp), onnx=not args.no_onnx)
        plugins = discover_plugins([tmp], include_user_dir=False, include_entry_points=False)
        engine = Engine(plugins, device=args.device)
        for style in tqdm(styles, desc="styles"):
            backend = engine.describe(style)
            row = {"style": style, "backend": backend}
            for mode, realtime in (("every-frame", False), ("real-time", True)):
                src = AVSource(str(args.clip), realtime=realtime, limit=args.frames)
                sink = RecordingSink(keep_frames=False)
                row[mode] = CamPipeline(src, engine, style, [sink], every_frame=not realtime).run()
                row["size"] = f"{src.width}x{src.height}"
            rows.append(row)
        engine.close()

    print(f"\nclip: {args.clip.name} ({rows[0]['size']}), {args.frames} frames per run; device: "
          f"{engine.device} ({cpu_model()}, {torch.get_num_threads()} torch threads); torch {torch.__version__}; "
          f"load average over the run {load0:.1f} -> {os.getloadavg()[0]:.1f} (other work on the machine)")
    print("\n| style | backend | every-frame fps | real-time fps (of 30) | dropped | latency p50 / p95 ms |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        e, t = r["every-frame"], r["real-time"]
        print(f"| `{r['style']}` | {r['backend']} | {e.fps:.1f} | {t.fps:.1f} | "
              f"{t.dropped}/{t.frames_in} | {t.latency_ms(50):.0f} / {t.latency_ms(95):.0f} |")  # fmt: skip

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
        y = np.arange(len(rows))
        ax.barh(y - 0.2, [r["every-frame"].fps for r in rows], 0.4, label="every frame (throughput)")
        ax.barh(y + 0.2, [r["real-time"].fps for r in rows], 0.4, label="real time, latest-frame-wins")
        for r, yy in zip(rows, y):  # values on the bars: the scale is logarithmic
            for dy, key in ((-0.2, "every-frame"), (0.2, "real-time")):
                ax.text(r[key].fps * 1.05, yy + dy, f"{r[key].fps:.1f}", va="center", fontsize=7)
        ax.set_xscale("log")
        ax.axvline(30, color="gray", ls="--", lw=1, label="source 30 fps")
        ax.set_yticks(y, [f"{r['style']}\n({r['backend'].split(' ')[0]})" for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("frames per second (log scale)")
        ax.set_title(f"stylestream cam, {rows[0]['size']} clip, {engine.device}: {cpu_model()[:40]}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"\nwrote {args.plot}")


if __name__ == "__main__":
    main()
