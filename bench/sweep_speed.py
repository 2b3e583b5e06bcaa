"""Lockstep vs sequential training of a sweep's runs: the same N runs (one per optimizer, same batch
size) trained one after another with `stylestream train`'s loop, then together in one lockstep group.
Both produce the same losses (tests/train/test_sweep_lockstep.py); this measures the wall time.

    python bench/sweep_speed.py --image-size 128 --steps 20 --optimizers adam,adamax,rmsprop,adagrad

Both sides include what a user pays: sequential runs each load VGG-16 and the style image, the
lockstep group once. Random VGG-16 weights (the speed is the same as ImageNet weights'). Prints a
Markdown table row and writes --json. Never gates anything."""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path

import torch

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimizers", default="adam,adamax,rmsprop,adagrad")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--data", default=str(MEDIA / "content"), help="training images (default: shared media)")
    p.add_argument("--style", default=str(MEDIA / "styles" / "starry_night.jpg"))
    p.add_argument("--repeats", type=int, default=3, help="alternate both sides this often; keep the fastest")
    p.add_argument("--json", default=None, help="write the numbers here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from stylestream.devices import device_name
    from stylestream.devices import resolve as resolve_device
    from stylestream.train.config import TrainConfig
    from stylestream.train.lockstep import make_shared, train_lockstep
    from stylestream.train.loop import train

    opts = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="sweep_speed_"))

    def cfg(opt: str, out: str) -> TrainConfig:
        return TrainConfig(style=args.style, data=args.data, out=str(tmp / out), optimizer=opt,
                           image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                           vgg_weights="random", device=args.device, progress=False,
                           checkpoint_every=10**9, log_every=10**9)  # fmt: skip

    # warm-up (allocator, cuDNN autotune, page cache) so neither side pays it
    train(cfg(opts[0], "warmup"))

    # alternate the two sides and keep each one's fastest repeat: the CPU may be shared
    seq_times, lock_times = [], []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        seq = {o: train(cfg(o, f"seq{rep}-{o}")) for o in opts}
        seq_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        cfgs = [cfg(o, f"lock{rep}-{o}") for o in opts]
        outcomes = train_lockstep(cfgs, make_shared(cfgs[0]), progress=False)
        lock_times.append(time.perf_counter() - t0)
    seq_s, lock_s = min(seq_times), min(lock_times)

    max_rel = max(abs(oc.losses["total"] - seq[o].losses["total"]) / abs(seq[o].losses["total"])
                  for o, oc in zip(opts, outcomes))  # fmt: skip
    dev = resolve_device(args.device)
    result = {
        "device": device_name(dev), "torch": torch.__version__, "machine": platform.machine(),
        "optimizers": opts, "image_size": args.image_size, "batch_size": args.batch_size, "steps": args.steps,
        "sequential_s": round(seq_s, 2), "lockstep_s": round(lock_s, 2), "speedup": round(seq_s / lock_s, 3),
        "sequential_all_s": [round(t, 2) for t in seq_times], "lockstep_all_s": [round(t, 2) for t in lock_times],
        "max_rel_final_loss_diff": max_rel,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    print(f"| {len(opts)} runs ({','.join(opts)}) | {args.image_size}² bs {args.batch_size} x {args.steps} steps "
          f"| {seq_s:.1f} s | {lock_s:.1f} s | {seq_s / lock_s:.2f}x | {result['device']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
