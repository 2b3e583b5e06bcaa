"""`train --temporal-weight`: partner frames from a small seeded affine warp plus noise, the term in
metrics.csv and the card, exact resume, and a trained network that is steadier under camera shake on
unseen webcam frames (random VGG: a relative check of the mechanism, not a trained style)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylestream.cli import main
from stylestream.media import read_video_frames
from stylestream.models import inference_model, load_model
from stylestream.train.config import ConfigError
from stylestream.train.images import load_image
from stylestream.train.loop import train
from stylestream.train.sweep import is_constant_image
from stylestream.train.temporal_loss import MAX_ROTATION_DEG, MAX_SCALE, MAX_SHIFT_PX, NOISE_SIGMA, move_batch


def _rows(run_dir: str | Path) -> list[dict[str, str]]:
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def photos(media: Path) -> torch.Tensor:
    """Two real photos, 64x64 crops."""
    return torch.cat([load_image(media / "content" / n, size=128)[..., :64, :64] for n in ("amber.jpg", "chicago.jpg")])


def test_partner_frames_depend_on_seed_and_step_only(photos):
    rng = torch.get_rng_state()
    a, b = move_batch(photos, 42, 3), move_batch(photos, 42, 3)
    assert torch.equal(a.moved, b.moved) and torch.equal(a.grid, b.grid)
    assert not torch.equal(a.moved, move_batch(photos, 42, 4).moved)
    assert not torch.equal(a.moved, move_batch(photos, 7, 3).moved)
    assert torch.equal(rng, torch.get_rng_state())  # the global RNG (init, data order) is not touched


def test_the_warp_is_small_and_the_borders_it_brings_in_are_masked(photos):
    n, _, h, w = photos.shape
    worst = 0.0
    for step in range(1, 21):
        m = move_batch(photos, 42, step)
        assert m.moved.shape == photos.shape and 0 <= m.moved.min() and m.moved.max() <= 255
        # how far each pixel's source is from the pixel, in pixels
        ident = F.affine_grid(torch.eye(2, 3).expand(n, 2, 3), [n, 3, h, w], align_corners=False)
        shift = ((m.grid - ident) * torch.tensor([w / 2, h / 2])).norm(dim=-1)
        worst = max(worst, float(shift.max()))
        # an identity "network" is perfectly stable: the term is the noise alone where the mask is 1 ...
        assert m.loss(photos, m.moved) == pytest.approx(NOISE_SIGMA**2, rel=0.3)
        assert 0.7 < float(m.mask.mean()) < 1.0
        # ... and the masked-out border is where the warp brought in what the image does not hold
        outside = ((m.moved.float() - m.warp(photos)) ** 2 * (1 - m.mask)).sum() / ((1 - m.mask).sum() * 3)
        assert outside > 10 * NOISE_SIGMA**2
    corner = math.hypot(w, h) / 2  # rotation and scale move the corners most
    bound = math.hypot(MAX_SHIFT_PX, MAX_SHIFT_PX) + corner * (math.radians(MAX_ROTATION_DEG) + MAX_SCALE) + 0.5
    assert 1.0 < worst < bound


def test_the_warp_is_a_camera_motion_in_pixels_on_non_square_frames():
    """Each grid, read in pixel units, is rotation + uniform scale + shift: no shear, no stretch (an h/w
    mix-up in affine_grid's normalized coordinates would stretch a 48x80 frame), within the bounds."""
    x = torch.rand(4, 3, 48, 80) * 255
    n, _, h, w = x.shape
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")  # fmt: skip
    # output pixel centres relative to the frame's centre, and where each samples its input (pixels)
    p = torch.stack([cols - (w - 1) / 2, rows - (h - 1) / 2, torch.ones_like(rows)], dim=-1).reshape(-1, 3)
    angles = []
    for step in range(1, 11):
        g = move_batch(x, 42, step).grid.double()
        # align_corners=False: normalized u is pixel (u + 1) * size / 2 - 0.5
        sx, sy = (g[..., 0] + 1) * w / 2 - 0.5 - (w - 1) / 2, (g[..., 1] + 1) * h / 2 - 0.5 - (h - 1) / 2
        src = torch.stack([sx, sy], dim=-1).reshape(n, -1, 2)
        for i in range(n):
            m = torch.linalg.lstsq(p, src[i]).solution  # src = p @ m: [[a, c], [b, d], [tx, ty]]
            assert float((p @ m - src[i]).abs().max()) < 1e-4  # affine
            (a, c), (b, d), (tx, ty) = m.tolist()
            assert a == pytest.approx(d, abs=1e-5) and b == pytest.approx(-c, abs=1e-5)  # a similarity
            assert abs(math.hypot(a, c) - 1) <= MAX_SCALE + 1e-6
            assert max(abs(tx), abs(ty)) <= MAX_SHIFT_PX + 1e-4
            angles.append(abs(math.degrees(math.atan2(c, a))))
    assert 0.5 < max(angles) <= MAX_ROTATION_DEG + 1e-4  # rotations were drawn, within the bound


def test_the_term_is_in_metrics_and_the_card(make_cfg, tmp_path):
    on = train(make_cfg(out=str(tmp_path / "on"), steps=3, temporal_weight=10.0))
    off = train(make_cfg(out=str(tmp_path / "off"), steps=3))
    for r in _rows(on.run_dir):
        assert float(r["temporal"]) > 0
        total = sum(float(r[k]) for k in ("content", "style", "tv", "temporal"))
        assert float(r["total"]) == pytest.approx(total, rel=1e-4)
    assert all(float(r["temporal"]) == 0 for r in _rows(off.run_dir))
    card = json.loads((tmp_path / "on" / "card.json").read_text())
    assert card["settings"]["temporal_weight"] == 10.0 and card["temporal"]["weight"] == 10.0
    assert "random affine warp" in card["temporal"]["pairs"] and card["losses"]["temporal"] > 0
    assert "temporal" not in json.loads((tmp_path / "off" / "card.json").read_text())


class Crash(Exception):
    pass


def test_resume_with_the_term_equals_an_uninterrupted_run(make_cfg, tmp_path):
    kw = {"steps": 7, "checkpoint_every": 2, "temporal_weight": 10.0, "lr": 1e-2}
    straight = train(make_cfg(out=str(tmp_path / "straight"), **kw))

    def crash(step, losses):
        if step == 5:
            raise Crash

    cfg = make_cfg(out=str(tmp_path / "resumed"), **kw)
    with pytest.raises(Crash):
        train(cfg, on_step=crash)
    cfg.resume = True
    assert train(cfg).status == "ok"
    a, b = load_model(Path(straight.run_dir) / "model.pt"), load_model(tmp_path / "resumed" / "model.pt")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    keep = ("step", "temporal", "total")
    assert [[r[k] for k in keep] for r in _rows(straight.run_dir)] == [[r[k] for k in keep] for r in _rows(cfg.out)]


def test_resume_refuses_another_temporal_weight_and_accepts_older_checkpoints(make_cfg, tmp_path):
    def stop(step, losses):
        if step == 3:
            raise Crash

    cfg = make_cfg(out=str(tmp_path / "run"), steps=4, checkpoint_every=2)
    with pytest.raises(Crash):
        train(cfg, on_step=stop)
    with pytest.raises(ConfigError, match=r"temporal_weight \(0.0 there, 5.0 now\)"):
        train(make_cfg(out=str(tmp_path / "run"), steps=4, checkpoint_every=2, temporal_weight=5.0, resume=True))
    # a run written before the setting existed (no temporal_weight in its checkpoint, no temporal column
    # in its metrics.csv) resumes as the term being off, its old rows reading 0
    path = tmp_path / "run" / "checkpoint.pt"
    ck = torch.load(path, weights_only=True)
    del ck["config"]["temporal_weight"]
    torch.save(ck, path)
    old = [{k: v for k, v in r.items() if k != "temporal"} for r in _rows(tmp_path / "run")]
    with open(tmp_path / "run" / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(old[0]))
        w.writeheader()
        w.writerows(old)
    assert train(make_cfg(out=str(tmp_path / "run"), steps=4, checkpoint_every=2, resume=True)).status == "ok"
    rows = _rows(tmp_path / "run")
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and all(r["temporal"] == "0" for r in rows)


def test_negative_weight_is_refused_by_the_cli(tiny_data, style_path, tmp_path, capsys):
    args = ["train", "--style", str(style_path), "--data", str(tiny_data), "--out", str(tmp_path / "r"),
            "--vgg-weights", "random", "--temporal-weight", "-1"]  # fmt: skip
    with pytest.raises(SystemExit) as exc:
        raise SystemExit(main(args))
    assert exc.value.code == 2 and "--temporal-weight must be finite and >= 0, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_training_with_the_term_steadies_the_network_on_unseen_webcam_frames(make_cfg, media, tmp_path):
    """The same tiny run with and without the term; each network is then shaken as a hand-held camera
    would be (the documented warp family, draws the training never saw) on real webcam frames it never
    saw, at twice the training size, through the clamped inference model a user runs. With the term,
    its output moves with its input: the masked mean squared difference drops.

    Random VGG, so this checks the mechanism, not a style. The weight is one at which the term shapes
    these 30 steps from the start; measured over seeds 1-5, 7-10 and 42 the ratio was 0.01-0.39 (42,
    this test's seed, the highest), asserted <= 0.5. At W = 100 the term is ~1e-4 of the loss in the first
    steps (the style term dominates), the two runs part ways chaotically rather than systematically, and
    the ratio scattered from 0.03 to 2.4 (seeds 1-5 and 42); the optical-flow warping error on the
    8-frame 64 px webcam clips (bench flicker's measure) scattered too (0.13-1.0 at W = 100, 0.09-1.43
    at W = 1000), so neither is asserted."""
    first = [read_video_frames(media / "video" / f"webcam_{n}.mkv", 1, max_side=64)[0]
             for n in ("walk", "hungry", "book")]
    frames = torch.from_numpy(np.stack(first)).permute(0, 3, 1, 2).float()
    shakes = [move_batch(frames, 1234, step) for step in range(1, 9)]  # another seed than the runs' 42
    unsteady, outputs = {}, {}
    for weight in (0.0, 1000.0):
        run = train(make_cfg(out=str(tmp_path / f"w{weight:g}"), steps=30, lr=1e-2, temporal_weight=weight))
        assert run.status == "ok"
        net = inference_model(load_model(Path(run.run_dir) / "model.pt")).eval()
        with torch.no_grad():
            outputs[weight] = y = net(frames)
            unsteady[weight] = float(np.mean([float(m.loss(y, net(m.moved))) for m in shakes]))
    assert unsteady[1000.0] <= 0.5 * unsteady[0.0], unsteady
    # steadier, not flat: the network still draws each frame, and different frames differently
    y = outputs[1000.0]
    assert not is_constant_image(y) and float((y[0] - y[1]).abs().mean()) > 2.0
