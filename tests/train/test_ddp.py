"""`torchrun --nproc-per-node 2 -m stylestream train` (gloo on CPU) matches one process with the same
global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import torch

from stylestream.models import build_model, load_model
from stylestream.train.loop import train

REPO = Path(__file__).resolve().parents[2]


def totals(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["total"]) for r in csv.DictReader(f)]


def test_two_process_gloo_equals_single_process(tiny_data, style_path, tmp_path, make_cfg):
    common = ["--style", str(style_path), "--data", str(tiny_data), "--image-size", "32", "--steps", "3",
              "--vgg-weights", "random", "--no-amp", "--optimizer", "sgd", "--lr", "1e-7",
              "--checkpoint-every", "100", "--no-progress"]  # fmt: skip
    ddp_out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "stylestream", "train", *common, "--batch-size", "1", "--out", str(ddp_out)],
        check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # one process, global batch 2 = 2 processes x 1 image
    single = train(make_cfg(out=str(tmp_path / "single"), image_size=32, steps=3, batch_size=2,
                            optimizer="sgd", lr=1e-7))  # fmt: skip
    assert single.status == "ok"
    # rank 0 wrote the run (one metrics row per step, the whole batch's loss), rank 1 wrote nothing else
    assert len(totals(ddp_out)) == 3
    for a, b in zip(totals(ddp_out), totals(tmp_path / "single")):
        assert abs(a - b) <= 1e-3 * abs(b)
    # the updates (trained - initial weights) agree. Plain SGD keeps the update linear in the averaged
    # gradient; Adam's per-entry normalization would turn float rounding of near-zero gradients
    # (gloo's sum vs one batched pass) into full-size steps of either sign.
    torch.manual_seed(42)  # train's seed: the initial weights
    init = build_model("johnson").state_dict()
    ddp = load_model(ddp_out / "model.pt").state_dict()
    one = load_model(tmp_path / "single/model.pt").state_dict()
    d_ddp = torch.cat([(ddp[k] - init[k]).flatten() for k in init if init[k].is_floating_point()])
    d_one = torch.cat([(one[k] - init[k]).flatten() for k in init if init[k].is_floating_point()])
    assert d_one.norm() > 0.01  # the weights moved
    assert (d_ddp - d_one).norm() <= 0.01 * d_one.norm()  # measured: ~0.001
