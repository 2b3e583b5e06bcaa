"""Training throughput (images/s) of `stylestream train`'s step for --arch johnson at 256x256, batch 4,
on the current device, next to a faithful re-implementation of the pytorch/examples
fast_neural_style training step (--baseline) measured in the same run, interleaved round by round so
a shared machine's load hits both alike. Random-weight VGG-16 (speed does not depend on the weights).

    python bench/train_throughput.py --baseline            # CPU here; prints the device
    python bench/train_throughput.py --baseline --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from stylestream.bench.baseline import Baseline, StylestreamStep, measure

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"CPU {cpu}, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", action="store_true", help="also measure the pytorch/examples training step")
    ap.add_argument("--fp32", action="store_true", help="also measure stylestream with --no-amp")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="variants alternate this many times")
    ap.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="default: as train")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--plot", type=Path, help="write a bar chart (PNG) here")
    args = ap.parse_args(argv)

    from stylestream.devices import resolve as resolve_device
    from stylestream.train.data import ImageFolderDataset
    from stylestream.train.images import load_image
    from stylestream.train.vgg import load_vgg

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    content = ImageFolderDataset(MEDIA / "content", args.size)
    x = torch.stack([content[i % len(content)] for i in range(args.batch_size)]).to(device)
    style = load_image(MEDIA / "styles" / "starry_night.jpg", size=args.size)
    vgg = load_vgg("random", device=device)

    variants = [StylestreamStep(style, device, vgg, args.amp, args.channels_last)]
    if args.fp32:
        variants.append(StylestreamStep(style, device, load_vgg("random", device=device), False, args.channels_last))
    if args.baseline:
        variants.append(Baseline(style, args.batch_size, device, load_vgg("random", device=device).features))
    load_before = os.getloadavg()
    print(
        f"device: {_device_name(device)}; torch {torch.__version__}; johnson {args.size}^2, batch {args.batch_size}"
    )
    print(f"load average before: {load_before[0]:.2f} (other processes share this machine when > 0)")
    def progress(r: int, name: str, ips: float) -> None:
        print(f"  round {r}: {name}: {ips:.3f} img/s", flush=True)

    timed = measure(variants, x, args.steps, args.warmup, args.rounds, progress=progress)
    times = timed.seconds
    load_after = os.getloadavg()
    results = timed.images_per_s()
    print(f"load average after: {load_after[0]:.2f}")
    for name, ips in results.items():
        print(f"{name:45s} {ips:7.3f} images/s  (median step {sorted(times[name])[len(times[name]) // 2]:.3f} s)")
    base = next((results[v.name] for v in variants if isinstance(v, Baseline)), None)
    if base:
        print(f"speed-up of {variants[0].name} over the baseline: {results[variants[0].name] / base:.2f}x")
    report = {"device": _device_name(device), "torch": torch.__version__, "size": args.size,
              "batch_size": args.batch_size, "images_per_s": results, "step_seconds": times,
              "load_average": [load_before[0], load_after[0]]}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 1 + 0.6 * len(results)))
        ax.barh(list(results), list(results.values()), color="tab:blue")
        ax.set_xlabel("images/s (johnson, 256², batch 4, training)")
        ax.set_title(_device_name(device), fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
