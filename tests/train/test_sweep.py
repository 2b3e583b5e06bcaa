"""`stylestream sweep` on tiny data: random VGG, 32 px crops, 3 steps per run (or 1 epoch)."""

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
from stylestream.train.figures import grid_layout, label_height, tile_box
from stylestream.train.optimizers import OPTIMIZERS
from stylestream.train.sweep_figures import run_label
from stylestream.train.sweep_report import RunResult, default_setting

TINY = ["--steps", "3", "--image-size", "32", "--vgg-weights", "random", "--no-amp", "--no-progress"]


def sweep(tiny_data: Path, style_path: Path, out: Path, *extra: str) -> int:
    return main(["sweep", "--style", str(style_path), "--data", str(tiny_data), "--out", str(out), *TINY, *extra])


def first_total(run_dir: Path) -> float:
    with open(run_dir / "metrics.csv", newline="") as f:
        return float(next(csv.DictReader(f))["total"])


def assert_tile_shows(grid_path: Path, runs: list[dict], i: int, image_path: Path) -> None:
    """Tile i of a grid (content, style, then `runs` in order) is that image (JPEG tolerance)."""
    labels = ["content", "style"] + [run_label(RunResult.from_json(r)) for r in runs]
    label_h = label_height(labels, 256)
    cols, width, height = grid_layout(len(labels), 256, label_h, columns=min(len(labels), 5))
    with Image.open(grid_path) as im:
        assert im.format == "JPEG" and im.size == (width, height)
        grid = np.asarray(im.convert("RGB")).astype(np.float32)
    left, top, right, bottom = tile_box(i, cols, 256, label_h)
    with Image.open(image_path) as st:
        st = st.convert("RGB")
        w, h = round(st.width * 256 / max(st.size)), round(st.height * 256 / max(st.size))
        expect = np.asarray(st.resize((w, h), Image.Resampling.LANCZOS)).astype(np.float32)
    y0 = (256 - h) // 2
    assert np.abs(grid[top:bottom, left:right][y0:y0 + h, :w] - expect).mean() < 12


def test_sweep_of_four_optimizers_writes_report_plots_and_grids(tiny_data, style_path, tmp_path, capsys, caplog):
    out = tmp_path / "sweep"
    opts = ["adam", "rmsprop", "adagrad", "nadam"]
    assert sweep(tiny_data, style_path, out, "--optimizers", ",".join(opts), "--batch-sizes", "2") == 0
    captured = capsys.readouterr()
    assert "report:" in captured.out and "precision: float32" in captured.out
    said = captured.out + captured.err + "\n".join(r.getMessage() for r in caplog.records)
    assert said.count("random (seeded") == 1  # the notice, once

    report = (out / "report.md").read_text()
    for name in opts:
        assert f"| {name} |" in report
    assert "same initial weights" in report and "same order" in report  # the fairness statement
    assert "equal in optimizer steps (3 per run)" in report  # --steps: what is equal, said so
    assert "Random VGG-16 weights" in report  # never passed off as a trained result
    assert "precision float32" in report and "torch " in report and "numpy " in report  # how it computed

    data = json.loads((out / "report.json").read_text())
    assert data["meta"]["precision"] == "float32" and set(data["meta"]["versions"]) >= {"torch", "numpy"}
    runs = {r["optimizer"]: r for r in data["runs"]}
    assert sorted(runs) == sorted(opts) and sorted(data["ranking"]) == sorted(opts)
    for r in runs.values():
        assert r["status"] == "ok" and r["steps"] == r["total_steps"] == 3 and r["images_seen"] > 0
        assert r["loss"] > 0 and r["eval_loss"] > 0 and r["train_time_s"] > 0
        assert r["content"] + r["style"] == pytest.approx(r["loss"], rel=1e-4)  # tv weight is 0
        card = json.loads((out / r["name"] / "card.json").read_text())
        assert card["amp"] == "off" and card["settings"]["style_size"] == 0  # the study's: fp32, style as is
    evals = [runs[name]["eval_loss"] for name in data["ranking"]]
    assert evals == sorted(evals)  # ranked by eval loss
    assert data["meta"]["train_images"] + data["meta"]["eval_images"] == 6  # held out, never trained on

    # same initial weights and the same first batch: every run starts from the same loss
    starts = [first_total(out / r["name"]) for r in runs.values()]
    assert max(starts) - min(starts) <= 1e-4 * max(starts)

    for name in ("losses.png", "losses_best.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size == (1050, 500)  # the plot, and its legend beside it
            assert np.asarray(im.convert("RGB")).std() > 5  # curves drawn, not a blank canvas

    # grid.jpg: content, style, then every optimizer at the default setting (here the only one), in the
    # order given; grid_best.jpg: the best run of each, best first
    for grid, order in (("grid.jpg", opts), ("grid_best.jpg", data["ranking"])):
        for i, name in enumerate(order, start=2):
            assert_tile_shows(out / grid, [runs[o] for o in order], i, out / runs[name]["stylized"])
    assert not (out / "heatmaps").exists()  # one lr and one batch size: no grid to map


def test_default_setting_figures_and_per_run_steps_with_epochs(tiny_data, style_path, tmp_path):
    """--epochs: equal images, unequal steps (each run's listed); grid.jpg/losses.png hold every optimizer at
    the default setting (η 1e-3; bs 2, closest to the study's 4), grid_best.jpg each optimizer's best."""
    out = tmp_path / "sweep"
    args = ["sweep", "--style", str(style_path), "--data", str(tiny_data), "--out", str(out), "--epochs", "1",
            "--image-size", "32", "--vgg-weights", "random", "--no-progress", "--optimizers", "adam,rmsprop",
            "--lrs", "0.001,0.01", "--batch-sizes", "1,2"]  # fmt: skip
    assert main(args) == 0
    data = json.loads((out / "report.json").read_text())
    runs = {r["name"]: r for r in data["runs"]}
    # 5 training images: 5 steps of 1, 3 of 2 (the last one of 1 image); the same 5 images either way
    for name, r in runs.items():
        assert r["total_steps"] == (5 if name.endswith("bs1") else 3) and r["images_seen"] == 5
    report = (out / "report.md").read_text()
    assert "equal in epochs" in report and "bs 1: 5 steps; bs 2: 3 steps" in report
    assert "| `adam/lr0.001-bs1` |" in report and "| 5/5 | 5 |" in report and "| 3/3 | 5 |" in report
    assert data["meta"]["default_setting"] == [0.001, 2] and "η=0.001, bs=2" in report

    default = [runs[f"{name}/lr0.001-bs2"] for name in ("adam", "rmsprop")]
    best = [runs[data["best"][name]] for name in data["ranking"]]
    for i, r in enumerate(default, start=2):
        assert_tile_shows(out / "grid.jpg", default, i, out / r["stylized"])
    for i, r in enumerate(best, start=2):
        assert_tile_shows(out / "grid_best.jpg", best, i, out / r["stylized"])
    assert {p.name for p in (out / "heatmaps").iterdir()} == {"adam.png", "rmsprop.png"}


def test_loss_curves_against_images_seen_when_batch_sizes_differ(tiny_data, style_path, tmp_path):
    from stylestream.train.sweep_figures import loss_curves

    out = tmp_path / "sweep"
    assert sweep(tiny_data, style_path, out, "--optimizers", "adam", "--batch-sizes", "1,2") == 0
    data = json.loads((out / "report.json").read_text())
    runs = [RunResult.from_json(r) for r in data["runs"]]
    curves, xlabel = loss_curves(out, runs)
    assert xlabel == "images seen"
    xs = {label.split("bs=")[1]: x.tolist() for label, (x, _) in curves.items()}
    assert xs == {"1": [1, 2, 3], "2": [2, 4, 5]}  # 5 training images: the third batch of 2 holds one
    same_bs, xlabel = loss_curves(out, [r for r in runs if r.batch_size == 2])
    assert xlabel == "step" and next(iter(same_bs.values()))[0].tolist() == [1, 2, 3]


def test_default_setting_is_the_studys_or_the_closest_swept():
    assert default_setting([0.1, 0.01, 0.001, 0.0001], [1, 2, 4, 8]) == (0.001, 4)
    assert default_setting([0.1, 0.01], [1, 2]) == (0.01, 2)
    assert default_setting([1e-4], [8]) == (1e-4, 8)


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


class _ConstantOutput(torch.optim.Adam):
    """Test optimizer: a real Adam step, then weights that make the net put out one colour, (254, 0, 0)
    (what adam, adagrad and rprop at lr 0.01 ended at with the tanh head)."""

    def step(self, closure=None):
        loss = super().step(closure)
        with torch.no_grad():
            params = [p for g in self.param_groups for p in g["params"]]
            for p in params:
                p.zero_()
            params[-1].copy_(torch.tensor([254.0, 0.0, 0.0]))  # the last conv's bias
        return loss


class _BlowUpInStep3(torch.optim.Adam):
    """Test optimizer: real Adam steps, the third (the last of 3) leaving weights so large the net's output
    overflows: every logged loss is finite, the trained net is not."""

    def step(self, closure=None):
        loss = super().step(closure)
        self.state.setdefault("calls", 0)
        self.state["calls"] += 1
        if self.state["calls"] == 3:
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        p.fill_(1e30)
        return loss


@pytest.fixture
def test_optimizers(monkeypatch):
    monkeypatch.setitem(OPTIMIZERS._entries, "nan-test",
                        Entry("nan-test", lambda params, lr, **kw: _NaNWeights(params, lr=lr), "test"))
    monkeypatch.setitem(OPTIMIZERS._entries, "crash-test",
                        Entry("crash-test", lambda params, lr, **kw: _CrashAtStep2(params, lr=lr), "test"))
    monkeypatch.setattr(_CrashAtStep2, "armed", True)
    monkeypatch.setitem(OPTIMIZERS._entries, "const-test",
                        Entry("const-test", lambda params, lr, **kw: _ConstantOutput(params, lr=lr), "test"))
    monkeypatch.setitem(OPTIMIZERS._entries, "blowup-test",
                        Entry("blowup-test", lambda params, lr, **kw: _BlowUpInStep3(params, lr=lr), "test"))


def test_a_run_whose_net_ends_with_a_non_finite_output_is_diverged(tiny_data, style_path, tmp_path, test_optimizers):
    out = tmp_path / "sweep"
    assert sweep(tiny_data, style_path, out, "--optimizers", "adam,blowup-test", "--batch-sizes", "2") == 0
    data = json.loads((out / "report.json").read_text())  # the report is written
    run = {r["name"]: r for r in data["runs"]}["blowup-test/lr0.001-bs2"]
    assert run["status"] == "diverged" and run["error"] == "after its last step (3) its output is NaN/Inf; try a lower lr"
    assert run["loss"] is not None and run["eval_loss"] is None and data["ranking"] == ["adam"]


def test_a_run_whose_net_puts_out_a_constant_image_is_collapsed(tiny_data, style_path, tmp_path, test_optimizers):
    out = tmp_path / "sweep"
    assert sweep(tiny_data, style_path, out, "--optimizers", "adam,const-test", "--lrs", "0.001,0.01",
                 "--batch-sizes", "2") == 0  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    status = {r["name"]: r["status"] for r in data["runs"]}
    assert status == {"adam/lr0.001-bs2": "ok", "adam/lr0.01-bs2": "ok",
                      "const-test/lr0.001-bs2": "collapsed", "const-test/lr0.01-bs2": "collapsed"}  # fmt: skip
    assert data["ranking"] == ["adam"]  # a constant image is not a result to rank
    with Image.open(out / "const-test/lr0.001-bs2/stylized.jpg") as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert np.abs(pixels.mean(axis=0) - [254, 0, 0]).max() < 3 and pixels.std(axis=0).max() < 2
    report = (out / "report.md").read_text()
    assert "`const-test/lr0.001-bs2`: collapsed at step 3/3: its output is a constant image, colour (254, 0, 0)" in report
    assert (out / "heatmaps" / "const-test.png").is_file()


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
    # --resume with another loss is refused; a sweep.json from before --temporal-weight resumes (its runs had none)
    assert_exit_2(lambda: sweep(tiny_data, style_path, out, *args, "--resume", "--temporal-weight", "1"))
    assert "temporal_weight (0.0 there, 1.0 now)" in capsys.readouterr().err
    state = json.loads((out / "sweep.json").read_text())
    del state["settings"]["temporal_weight"]
    (out / "sweep.json").write_text(json.dumps(state))
    assert sweep(tiny_data, style_path, out, *args, "--resume") == 0
    assert model.stat().st_mtime_ns == first  # finished: kept
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
