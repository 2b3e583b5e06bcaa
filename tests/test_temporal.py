"""Flicker measure and stabilizer: exact on known motion, zero for a still scene through an identity
style, large for an input-independent noise style, and the stabilizer removes most flicker."""

from __future__ import annotations

import numpy as np

from stylestream.temporal import Stabilizer, frame_flow, warping_error
from tests.conftest import MEDIA
from tests.stream.rtc_client import load_clip


def texture(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8)
    return np.kron(small, np.ones((4, 4, 1), dtype=np.uint8))  # blocky: flow can lock on


def test_known_translation_is_recovered_and_warps_exactly():
    prev = texture()
    for dx, dy in [(3, 0), (0, 2), (-2, 1)]:
        cur = np.roll(prev, (dy, dx), axis=(0, 1))
        flow, mask = frame_flow(cur, prev)
        inner = mask[10:-10, 10:-10]
        assert inner.mean() > 0.9
        med = np.median(flow[10:-10, 10:-10][inner], axis=0)
        assert np.allclose(med, (-dx, -dy), atol=0.25), (dx, dy, med)
        assert warping_error(cur, prev, flow, mask) < 3.0


def test_still_clip_identity_is_zero_and_noise_style_is_large():
    frame = load_clip(MEDIA / "video" / "webcam_walk.mkv", (160, 120), limit=1)[0]
    flow, mask = frame_flow(frame, frame)
    assert warping_error(frame, frame, flow, mask) == 0.0
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 255, frame.shape, dtype=np.uint8) for _ in range(2)]  # ignores its input
    assert warping_error(noise[1], noise[0], flow, mask) > 60


def test_stabilizer_removes_most_flicker_on_a_real_clip():
    clip = load_clip(MEDIA / "video" / "webcam_walk.mkv", (320, 240), limit=40)
    rng = np.random.default_rng(2)
    # A flickering "style": the input plus fresh noise every frame, as texture re-rolls in a network.
    styled = [np.clip(f.astype(np.int16) + rng.integers(-40, 41, f.shape), 0, 255).astype(np.uint8) for f in clip]
    stab = Stabilizer()
    steady = [stab(f, s, 0.5) for f, s in zip(clip, styled)]

    def flicker(frames: list[np.ndarray]) -> float:
        errs = []
        for t in range(1, len(clip)):
            flow, mask = frame_flow(clip[t], clip[t - 1])
            errs.append(warping_error(frames[t], frames[t - 1], flow, mask))
        return float(np.mean(errs))

    before, after = flicker(styled), flicker(steady)
    assert after < 0.7 * before, (before, after)
    # Still the style: no frame drifts far from its own stylized version (no ghosting trails).
    drift = np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(steady, styled)])
    assert drift < 25, drift


def test_stabilizer_resets_on_a_scene_cut_and_when_off():
    a, b = texture(seed=3), texture(seed=4)
    stab = Stabilizer()
    stab(a, a, 1.0)
    assert np.array_equal(stab(b, b, 1.0), b), "a cut must not carry the old picture over"
    assert np.array_equal(stab(b, a, 0.0), a)


def test_bench_flicker_writes_its_report_under_a_prefix_with_a_dot(tmp_path, capsys):
    """`-o out/cartoon-0.5`: the figures land in cartoon-0.5.md/.json/.jpg (not cartoon-0.md, which a
    second run with stabilize 0 would overwrite), and the report says which stabilize it measured."""
    import json

    from stylestream.cli import main

    clip = MEDIA / "video" / "webcam_walk.mkv"
    args = ["bench", "flicker", "--no-user-plugins", "--style", "cartoon", "--max-frames", "4", str(clip)]
    assert main([*args, "--param", "stabilize=0.5", "-o", str(tmp_path / "cartoon-0.5")]) == 0
    assert main([*args, "-o", str(tmp_path / "cartoon-0")]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"cartoon-{a}.{ext}" for a in ("0", "0.5") for ext in ("jpg", "json", "md"))
    stab = json.loads((tmp_path / "cartoon-0.5.json").read_text())
    assert stab["params"] == {"stabilize": 0.5} and stab["clips"][0]["stabilize_ms"] is not None
    assert json.loads((tmp_path / "cartoon-0.json").read_text())["clips"][0]["stabilize_ms"] is None
    assert "cartoon-0.5.jpg" in capsys.readouterr().out
