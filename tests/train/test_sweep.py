"""`stylestream sweep` on tiny data: random VGG, 32 px crops, 3 steps per run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylestream.cli import main
from stylestream.registry import Entry
from stylestream.train.optimizers import OPTIMIZERS
from stylestream.train.sweep_report import grid_layout, tile_box

TINY = ["--steps", "3", "--image-size", "32", "--vgg-weights", "random", "--no-amp", "--no-progress"]


def sweep(tiny_data: Path, style_path: Path, out: Path, *extra: str) -> int:
    return main(["sweep", "--style", str(style_path), "--data", str(tiny_data), "--out", str(out), *TINY, *extra])


def first_total(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv", newline="") as f:
        return float(next(csv.DictReader(f))["total"])


def test_sweep_of_four_optimizers_writes_report_plots_and_grid(tiny_data, style_path, tmp_path, capsys):
    out = tmp_path / "sweep"
    opts = ["adam", "rmsprop", "adagrad", "nadam"]
    assert sweep(tiny_data, style_path, out, "--optimizers", ",".join(opts), "--batch-sizes", "2") == 0
    printed = capsys.readouterr().out
    assert "random" in printed and "report:" in printed

    report = (out / "report.md").read_text()
    for name in opts:
        assert f"| {name} |" in report
    assert "same initial weights" in report and "same order" in report  # the fairness statement
    assert "Random VGG-16 weights" in report  # never passed off as a trained result

    data = json.loads((out / "report.json").read_text())
    runs = {r["optimizer"]: r for r in data["runs"]}
    assert sorted(runs) == sorted(opts) and sorted(data["ranking"]) == sorted(opts)
    for r in runs.values():
        assert r["status"] == "ok" and r["steps"] == r["total_steps"] == 3
        assert r["loss"] > 0 and r["eval_loss"] > 0 and r["train_time_s"] > 0
        assert r["content"] + r["style"] == pytest.approx(r["loss"], rel=1e-4)  # tv weight is 0
    evals = [runs[name]["eval_loss"] for name in data["ranking"]]
    assert evals == sorted(evals)  # ranked by eval loss
    assert data["meta"]["train_images"] + data["meta"]["eval_images"] == 6  # held out, never trained on

    # same initial weights and the same first batch: every run starts from the same loss
    starts = [first_total(out / r["name"]) for r in runs.values()]
    assert max(starts) - min(starts) <= 1e-4 * max(starts)

    with Image.open(out / "losses.png") as im:
        assert im.format == "PNG" and im.size == (800, 500)
        arr = np.asarray(im.convert("RGB"))
        assert arr.std() > 5  # curves drawn, not a blank canvas

    # grid: content, style, then one labelled tile per optimizer (best setting), 5 per row
    cols, width, height = grid_layout(2 + len(opts), 256)
    with Image.open(out / "grid.jpg") as im:
        assert im.format == "JPEG" and im.size == (width, height)
        grid = np.asarray(im.convert("RGB")).astype(np.float32)
    for i, name in enumerate(data["ranking"], start=2):
        l, t, r, b = tile_box(i, cols, 256)
        tile = grid[t:b, l:r]
        with Image.open(out / runs[name]["stylized"]) as st:
            st = st.convert("RGB")
            w, h = round(st.width * 256 / max(st.size)), round(st.height * 256 / max(st.size))
            expect = np.asarray(st.resize((w, h), Image.Resampling.LANCZOS)).astype(np.float32)
        y0 = (256 - h) // 2
        assert np.abs(tile[y0:y0 + h, :w] - expect).mean() < 12  # that run's image (JPEG tolerance)
    assert not (out / "heatmaps").exists()  # one lr and one batch size: no grid to map


class _NaNWeights(torch.optim.SGD):
    """Test optimizer: a real SGD step that then leaves NaN weights (a forced divergence)."""

    def step(self, closure=None):
        super().step(closure)
        with torch.no_grad():
            for g in self.param_groups:
                for p in g["params"]:
                    p.fill_(float("nan"))


class _CrashAtStep2(torch.optim.Adam):
    armed = True

    def step(self, closure=None):
        self.state.setdefault("calls", 0)
        self.state["calls"] += 1
        if self.armed and self.state["calls"] == 2:
            raise RuntimeError("simulated crash in step 2")
        return super().step(closure)


@pytest.fixture
def test_optimizers(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS._entries, "nan-test",
                        Entry("nan-test", lambda params, lr, **kw: _NaNWeights(params, lr=lr), "test"))
    monkeypatch.setitem(OPTIMIZERS._entries, "crash-test",
                        Entry("crash-test", lambda params, lr, **kw: _CrashAtStep2(params, lr=lr), "test"))
    monkeypatch.setattr(_CrashAtStep2, "armed", True)


def test_diverged_and_crashed_runs_are_recorded_and_resume_finishes_the_rest(
    tiny_data, style_path, tmp_path, test_optimizers, capsys
):
    out = tmp_path / "sweep"
    args = ("--optimizers", "adam,nan-test,crash-test", "--lrs", "0.001,0.01", "--batch-sizes", "2",
            "--checkpoint-every", "1")
    assert sweep(tiny_data, style_path, out, *args) == 0  # the adam runs finished
    data = json.loads((out / "report.json").read_text())
    status = {r["name"]: r["status"] for r in data["runs"]}
    assert status == {"adam/lr0.001-bs2": "ok", "adam/lr0.01-bs2": "ok",
                      "nan-test/lr0.001-bs2": "diverged", "nan-test/lr0.01-bs2": "diverged",
                      "crash-test/lr0.001-bs2": "crashed", "crash-test/lr0.01-bs2": "crashed"}
    assert data["ranking"] == ["adam"]
    report = (out / "report.md").read_text()
    assert "diverged" in report and "simulated crash in step 2" in report
    assert all((out / "heatmaps" / f"{o}.png").is_file() for o in ("adam", "nan-test", "crash-test"))
    nan_run = next(r for r in data["runs"] if r["name"] == "nan-test/lr0.001-bs2")
    assert (nan_run["steps"], nan_run["total_steps"]) == (2, 3)  # stopped at the first NaN loss
    assert not (out / "nan-test/lr0.001-bs2/model.pt").exists()

    # a new sweep into the same folder is refused; --resume keeps finished runs and resumes the crashed
    capsys.readouterr()
    assert_exit_2(lambda: sweep(tiny_data, style_path, out, *args))
    assert "already holds a sweep; pass --resume" in capsys.readouterr().err
    kept = (out / "adam/lr0.001-bs2/model.pt").stat().st_mtime_ns
    (out / "crash-test/lr0.01-bs2/checkpoint.pt").unlink()  # as if killed before its first checkpoint
    _CrashAtStep2.armed = False
    assert sweep(tiny_data, style_path, out, *args, "--resume") == 0
    data = json.loads((out / "report.json").read_text())
    status = {r["name"]: r["status"] for r in data["runs"]}
    assert status["crash-test/lr0.001-bs2"] == status["crash-test/lr0.01-bs2"] == "ok"
    assert status["nan-test/lr0.001-bs2"] == "diverged"
    assert (out / "adam/lr0.001-bs2/model.pt").stat().st_mtime_ns == kept  # not retrained
    with open(out / "crash-test/lr0.001-bs2/metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]  # resumed after step 1, no repeats
    with open(out / "crash-test/lr0.01-bs2/metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]  # started over, the old rows gone


def test_overwrite_starts_a_sweep_afresh(tiny_data, style_path, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ("--optimizers", "adam", "--batch-sizes", "2")
    assert sweep(tiny_data, style_path, out, *args) == 0
    model = out / "adam/lr0.001-bs2/model.pt"
    first = model.stat().st_mtime_ns
    capsys.readouterr()
    assert_exit_2(lambda: sweep(tiny_data, style_path, out, *args, "--resume", "--overwrite"))
    err = capsys.readouterr().err
    assert "--resume (continue the sweep in --out) or --overwrite (start it afresh), not both" in err
    assert sweep(tiny_data, style_path, out, *args, "--overwrite") == 0
    assert model.stat().st_mtime_ns != first  # trained again
    with open(out / "adam/lr0.001-bs2/metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]


def assert_exit_2(fn) -> None:
    with pytest.raises(SystemExit) as exc:
        fn()
    assert exc.value.code == 2


def test_bad_sweep_options_are_clear_errors(tiny_data, style_path, tmp_path, capsys):
    assert_exit_2(lambda: sweep(tiny_data, style_path, tmp_path / "a", "--optimizers", "adam,adamm"))
    err = capsys.readouterr().err
    assert "unknown optimizer 'adamm'" in err and "adam" in err
    assert_exit_2(lambda: sweep(tiny_data, style_path, tmp_path / "b", "--lrs", "0.1,-1"))
    assert "--lrs must be positive" in capsys.readouterr().err
    assert_exit_2(lambda: sweep(tiny_data, style_path, tmp_path / "c", "--batch-sizes", "2,x"))
    assert "comma-separated list of batch sizes" in capsys.readouterr().err
