"""The train loop end to end on tiny real images with a random VGG: files, resume, divergence, CLI."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

from stylestream import load_model
from stylestream.cli import main
from stylestream.models.io import read_model_file
from stylestream.train.config import ConfigError
from stylestream.train.images import load_image
from stylestream.train.loop import train
from stylestream.train.rundir import METRIC_FIELDS


def _json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def _rows(path: str) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_run_writes_card_metrics_model_checkpoint_and_pictures(make_cfg, media):
    cfg = make_cfg(steps=5, optimizer="adam", schedule="cosine", lr=2e-3)
    result = train(cfg)
    run = cfg.out
    assert result.status == "ok" and result.step == 5

    card = _json(f"{run}/card.json")
    assert card["status"] == "ok" and card["step"] == 5 and card["total_steps"] == 5
    assert card["settings"]["optimizer"] == "adam" and card["settings"]["lr"] == 2e-3
    assert card["settings"]["schedule"] == "cosine" and card["settings"]["seed"] == 42
    assert card["vgg_weights"].startswith("random (seeded 42") and card["device"].startswith("cpu")
    assert card["dataset"]["images"] == 6 and card["wall_time_s"] > 0 and card["images_per_s"] > 0
    assert set(card["versions"]) >= {"torch", "torchvision", "python", "stylestream"}
    assert card["losses"] == pytest.approx(result.losses) and math.isfinite(card["losses"]["total"])

    rows = _rows(f"{run}/metrics.csv")
    assert list(rows[0]) == list(METRIC_FIELDS)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [int(r["epoch"]) for r in rows] == [0, 0, 0, 1, 1]  # 6 images / batch 2 = 3 steps per epoch
    assert [int(r["images"]) for r in rows] == [2, 4, 6, 8, 10]  # images seen so far
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(2e-3) and lrs == sorted(lrs, reverse=True)  # cosine decay
    for r in rows:
        total = float(r["content"]) + float(r["style"]) + float(r["tv"])
        assert float(r["total"]) == pytest.approx(total, rel=1e-4)
    assert all(float(r["images/s"]) > 0 for r in rows)
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)

    model = load_model(f"{run}/model.pt")  # what export/plugins load
    assert read_model_file(f"{run}/model.pt")["card"]["settings"]["arch"] == "johnson"
    x = load_image(media / "content" / "amber.jpg", size=93)[..., :67, :93]  # odd size
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 255
    ck = torch.load(f"{run}/checkpoint.pt", weights_only=True)
    assert ck["step"] == 5 and (ck["epoch"], ck["batch_in_epoch"]) == (1, 2)
    for picture in ("losses.png", "samples.jpg"):
        assert load_image(f"{run}/{picture}").shape[-1] > 50


def test_loss_goes_down_on_real_images(make_cfg):
    result = train(make_cfg(steps=12, batch_size=6, lr=1e-2))  # the same 6 images every step
    totals = [float(r["total"]) for r in _rows(f"{result.run_dir}/metrics.csv")]
    assert totals[-1] < 0.5 * totals[0], totals


class Crash(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["lookahead", "lbfgs"])
def test_resume_equals_an_uninterrupted_run(make_cfg, tmp_path, optimizer):
    lr = 1e-3 if optimizer == "lookahead" else 1e-8
    kw = {"steps": 7, "checkpoint_every": 2, "optimizer": optimizer, "schedule": "cosine", "lr": lr}
    straight = train(make_cfg(out=str(tmp_path / "straight"), **kw))

    def crash(step, losses):
        if step == 5:  # after the checkpoint at step 4 (epoch 1, batch 1), before the next one
            raise Crash

    cfg = make_cfg(out=str(tmp_path / "resumed"), **kw)
    with pytest.raises(Crash):
        train(cfg, on_step=crash)
    assert _json(f"{cfg.out}/card.json")["status"] == "running"
    assert torch.load(f"{cfg.out}/checkpoint.pt", weights_only=True)["step"] == 4
    cfg.resume = True
    resumed = train(cfg)

    assert resumed.status == "ok" and resumed.step == 7
    a, b = read_model_file(f"{straight.run_dir}/model.pt"), read_model_file(f"{cfg.out}/model.pt")
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    rows = [_rows(f"{d}/metrics.csv") for d in (straight.run_dir, cfg.out)]
    keep = ("step", "epoch", "content", "style", "total", "lr")
    assert [[r[k] for k in keep] for r in rows[0]] == [[r[k] for k in keep] for r in rows[1]]


def test_ctrl_c_saves_a_checkpoint_to_resume_from(make_cfg):
    def interrupt(step, losses):
        if step == 3:
            raise KeyboardInterrupt

    cfg = make_cfg(steps=5)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_step=interrupt)
    assert _json(f"{cfg.out}/card.json")["status"] == "interrupted"
    assert torch.load(f"{cfg.out}/checkpoint.pt", weights_only=True)["step"] == 3
    cfg.resume = True
    assert train(cfg).step == 5


def test_nan_loss_stops_with_status_diverged(make_cfg):
    cfg = make_cfg(steps=6, optimizer="sgd", lr=1e30)
    result = train(cfg)
    assert result.status == "diverged" and result.step < 6
    card = _json(f"{cfg.out}/card.json")
    assert card["status"] == "diverged" and card["step"] == result.step
    assert not math.isfinite(result.losses["total"])


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        code = main(["train", *args])
        raise SystemExit(code)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def _base(tiny_data, style_path, out):
    return ["--style", str(style_path), "--data", str(tiny_data), "--out", str(out), "--vgg-weights", "random",
            "--image-size", "32", "--batch-size", "2", "--no-progress", "--no-amp"]  # fmt: skip


def test_cli_trains_and_exits_3_on_divergence(tiny_data, style_path, tmp_path, capsys, caplog):
    code, out, err = _cli([*_base(tiny_data, style_path, tmp_path / "ok"), "--steps", "2"], capsys)
    assert code == 0 and "ok: 2 steps" in out
    said = out + err + "\n".join(r.getMessage() for r in caplog.records)
    assert said.count("VGG-16 weights: random (seeded") == 1  # the notice, once
    assert (tmp_path / "ok" / "model.pt").is_file()
    bad = [
        *_base(tiny_data, style_path, tmp_path / "nan"),
        "--steps",
        "4",
        "--optimizer",
        "sgd",
        "--lr",
        "1e30",
    ]
    code, out, _ = _cli(bad, capsys)
    assert code == 3 and "diverged" in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lr", "-1"], "--lr must be a positive finite number, got -1.0"),
        (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--steps", "0"], "--steps must be >= 1, got 0"),
        (["--image-size", "8"], "--image-size must be >= 16"),
        (["--style-weight", "inf"], "--style-weight must be finite and >= 0, got inf"),
        (["--optimizer", "adamm"], "argument --optimizer: invalid choice: 'adamm'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--epochs", "1", "--steps", "3"], "not allowed with argument"),
        (
            ["--vgg-weights", "MISSING/vgg16.pth"],
            "VGG-16 weights file MISSING/vgg16.pth (--vgg-weights) not found",
        ),
        (["--resume"], "--resume: no checkpoint at"),
    ],
)
def test_cli_rejects_bad_options_before_any_work(tiny_data, style_path, tmp_path, capsys, extra, message):
    out_dir = tmp_path / "run"
    code, _, err = _cli([*_base(tiny_data, style_path, out_dir), *extra], capsys)
    assert code == 2 and message in err, err
    assert "Traceback" not in err and not (out_dir / "metrics.csv").exists()


def test_cli_errors_for_bad_inputs(tiny_data, style_path, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "style.jpg").write_bytes(b"not a jpeg")
    cases = [
        (_base(tmp_path / "empty", style_path, tmp_path / "r1"), "empty: no image files found"),
        (_base(tiny_data, tmp_path / "style.jpg", tmp_path / "r2"), "style.jpg: not a readable image"),
        (_base(tiny_data, tmp_path / "nostyle.jpg", tmp_path / "r3"), "nostyle.jpg: image file not found"),
    ]
    for args, message in cases:
        code, _, err = _cli(args, capsys)
        assert code == 2 and message in err, err


def test_an_existing_run_is_never_overwritten(make_cfg):
    cfg = make_cfg(steps=1)
    train(cfg)
    before = Path(f"{cfg.out}/model.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run.*--resume"):
        train(make_cfg(steps=1))
    assert Path(f"{cfg.out}/model.pt").read_bytes() == before
    with pytest.raises(
        ConfigError, match=r"settings differ from the checkpoint's: lr \(0.001 there, 0.5 now\)"
    ):
        train(make_cfg(steps=1, lr=0.5, resume=True))


def test_tensorboard_and_bf16_amp(make_cfg):
    cfg = make_cfg(steps=2, tensorboard=True, amp=True, checkpoint_every=1)
    result = train(cfg)
    assert result.card["amp"] == "bfloat16" and result.status == "ok"
    events = list((Path(cfg.out) / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_progress_bar_shows_each_steps_losses(make_cfg, capsys):
    """The bar's postfix follows the run: after the last step it shows the last step's loss, not step 1's."""
    cfg = make_cfg(steps=4, progress=True, log_every=50)
    result = train(cfg)
    bar = capsys.readouterr().err
    shown = [float(v) for v in re.findall(r"total=([0-9.e+]+)", bar)]
    logged = [float(r["total"]) for r in _rows(f"{result.run_dir}/metrics.csv")]
    assert len(set(logged)) == 4 and shown[-1] == pytest.approx(logged[-1], rel=1e-3)
    assert shown[-1] != pytest.approx(logged[0], rel=1e-3)  # not step 1's


def test_style_image_is_resized_to_the_training_size_unless_told(make_cfg, style_path):
    """`train` follows Johnson's code (the style at --image-size); --style-size 0 keeps it as is (the study)."""
    from PIL import Image

    with Image.open(style_path) as im:
        size = list(im.size)
    resized = train(make_cfg(steps=1, out=str(Path(make_cfg().out).parent / "a")))
    as_is = train(make_cfg(steps=1, style_size=0, out=str(Path(make_cfg().out).parent / "b")))
    assert max(resized.card["style_image"]["size"]) == 32
    assert as_is.card["style_image"]["size"] == size[::-1]  # (H, W) of the file


class _BlowUpLastStep(torch.optim.Adam):
    """Real Adam steps; the last one leaves weights so large the net's output overflows, while every
    logged loss (measured before its update) stays finite."""

    last = 4

    def step(self, closure=None):
        loss = super().step(closure)
        self.state.setdefault("calls", 0)
        self.state["calls"] += 1
        if self.state["calls"] == self.last:
            with torch.no_grad():
                for g in self.param_groups:
                    for p in g["params"]:
                        p.fill_(1e30)
        return loss


def test_a_net_blown_up_by_its_last_update_is_diverged_not_ok(make_cfg, monkeypatch):
    from stylestream.registry import Entry
    from stylestream.train.optimizers import OPTIMIZERS

    monkeypatch.setitem(OPTIMIZERS._entries, "blowup-test",
                        Entry("blowup-test", lambda params, lr, **kw: _BlowUpLastStep(params, lr=lr), "test"))
    cfg = make_cfg(steps=4, optimizer="blowup-test", lr=1e-3)
    result = train(cfg)
    assert math.isfinite(result.losses["total"])  # nothing in the log shows it
    assert result.status == "diverged"
    card = _json(f"{cfg.out}/card.json")
    assert card["status"] == "diverged" and card["error"] == "after its last step (4) its output is NaN/Inf; try a lower lr"
    assert not Path(cfg.out, "model.pt").exists()
