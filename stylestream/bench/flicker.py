"""`stylestream bench flicker`: how much a style flickers on real video.

For consecutive frames: optical flow on the input (OpenCV DIS), the previous stylized frame warped to
the current one, and the mean absolute difference over pixels where forward and backward flow agree
(the warping error of the video style-transfer papers). The same figure for the input itself says how
much of it is real change; `change_ratio` = mean|Δ stylized| / mean|Δ input| (plain frame differences)
needs no flow at all. Style parameters as in `stylize` (`--param stabilize=0.5`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stylestream import temporal
from stylestream.bench import output_path
from stylestream.media import read_video_frames

log = logging.getLogger(__name__)


def measure(frames: list[np.ndarray], stylize: Callable[[np.ndarray], np.ndarray],
            stabilize: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Stylize `frames` one by one (as a live stream would) and measure the flicker."""
    stab = temporal.Stabilizer()
    styled, stab_ms = [], []
    for f in frames:
        out = stylize(f)
        t0 = time.perf_counter()
        out = stab(f, out, stabilize)
        stab_ms.append((time.perf_counter() - t0) * 1000)
        styled.append(out)
    werr, ierr, dsty, dinp = [], [], [], []
    for t in range(1, len(frames)):
        flow, mask = temporal.frame_flow(frames[t], frames[t - 1])
        werr.append(temporal.warping_error(styled[t], styled[t - 1], flow, mask))
        ierr.append(temporal.warping_error(frames[t], frames[t - 1], flow, mask))
        dsty.append(float(np.abs(styled[t].astype(np.int16) - styled[t - 1]).mean()))
        dinp.append(float(np.abs(frames[t].astype(np.int16) - frames[t - 1]).mean()))
    return {
        "frames": len(frames), "size": [int(frames[0].shape[1]), int(frames[0].shape[0])],
        "warping_error": round(float(np.mean(werr)), 3), "input_warping_error": round(float(np.mean(ierr)), 3),
        "change_ratio": round(float(np.mean(dsty)) / max(float(np.mean(dinp)), 1e-6), 3),
        "stabilize_ms": round(float(np.median(stab_ms[1:])), 2) if stabilize > 0 and len(stab_ms) > 1 else None,
        "styled": styled,
    }  # fmt: skip


def run_flicker(videos: list[Path], style: str, engine: Any, params: Mapping[str, float],
                max_frames: int = 0, max_side: int | None = None) -> list[dict[str, Any]]:  # fmt: skip
    per_frame = {k: v for k, v in params.items() if k != "stabilize"}
    rows = []
    for video in videos:
        frames = read_video_frames(video, max_frames, max_side=max_side)
        if len(frames) < 2:
            raise ValueError(f"{video}: needs at least 2 frames, has {len(frames)}")
        r = measure(frames, lambda f: engine.process(style, f[None], per_frame)[0], params.get("stabilize", 0.0))
        r["clip"] = video.name
        rows.append(r)
        log.info("%s: warping error %.2f (input %.2f), change ratio %.2f", video.name, r["warping_error"],
                 r["input_warping_error"], r["change_ratio"])  # fmt: skip
    return rows


def write_outputs(rows: list[dict[str, Any]], prefix: Path, header: dict[str, Any]) -> tuple[Path, Path]:
    """PREFIX.md (table), PREFIX.json (figures), PREFIX.jpg (sample frames: input over stylized)."""
    import cv2

    prefix.parent.mkdir(parents=True, exist_ok=True)
    table = [{k: v for k, v in r.items() if k != "styled"} for r in rows]
    md = [f"Flicker of style `{header['style']}` {header['params'] or ''} on {header['device']}.", "",
          "| clip | frames | size | warping error | input warping error | change ratio | stabilize ms/frame |",
          "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in table:
        md.append(f"| {r['clip']} | {r['frames']} | {r['size'][0]}×{r['size'][1]} | {r['warping_error']} | "
                  f"{r['input_warping_error']} | {r['change_ratio']} | {r['stabilize_ms'] or '—'} |")  # fmt: skip
    mean = float(np.mean([r["warping_error"] for r in table]))
    md += ["", f"Mean warping error: {mean:.3f}."]
    md_path, js_path = output_path(prefix, ".md"), output_path(prefix, ".json")
    md_path.write_text("\n".join(md) + "\n")
    js_path.write_text(json.dumps({**header, "mean_warping_error": round(mean, 3), "clips": table}, indent=2) + "\n")
    # Sample frames: three consecutive stylized frames of the first clip, to look at flicker and trails.
    styled = rows[0]["styled"]
    mid = max(1, len(styled) // 2)
    strip = np.concatenate(styled[mid - 1 : mid + 2], axis=1)
    cv2.imwrite(str(output_path(prefix, ".jpg")), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return md_path, js_path
