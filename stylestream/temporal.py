"""Temporal stability of stylized video: measuring flicker and reducing it.

Feed-forward style networks flicker on video: tiny changes between frames (noise, light, small motion)
give large changes in texture. Both the measure and the fix follow the video style-transfer papers
(Huang et al. 2017, Gupta et al. 2017, ReCoNet 2018): optical flow on the *input* says where each pixel
of the previous frame went; warping the previous *stylized* frame along it predicts the current one
wherever the flow is trustworthy (forward and backward flows agree: not occluded, not a flow error).

- `warping_error`: mean |stylized(t) - warp(stylized(t-1))| over consistent pixels (the flicker measure).
- `Stabilizer`: blends each new stylized frame with the warped previous output where the flow is
  consistent (`stabilize` 0..1), resetting on scene cuts; flow runs on a small grey copy (~1 ms)."""

from __future__ import annotations

import functools

import cv2
import numpy as np

FLOW_SIDE = 240  # flow for stabilizing runs at most this large (longer side): cheap, and smooth anyway
SCENE_CUT = 40.0  # mean |Δ grey| above which the previous frame says nothing about this one


def grey(rgb: np.ndarray, side: int | None = None) -> np.ndarray:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if side and max(g.shape) > side:
        s = side / max(g.shape)
        g = cv2.resize(g, (round(g.shape[1] * s), round(g.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return g


def optical_flow(cur: np.ndarray, prev: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """Flow d such that cur(p) ≈ prev(p + d), float32 (H, W, 2) in pixels (OpenCV's DIS)."""
    return cv2.DISOpticalFlow_create(preset).calc(cur, prev, None)


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> np.ndarray:
    """Pixel coordinates (H, W, 2) float32, per frame size (a video keeps one size)."""
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.dstack([xs, ys])


def warp(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """img sampled at p + flow(p): the previous frame moved to where its pixels are now."""
    h, w = flow.shape[:2]
    return cv2.remap(img, _grid(h, w) + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _sq(v: np.ndarray) -> np.ndarray:
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1]


def consistent(fwd: np.ndarray, bwd: np.ndarray) -> np.ndarray:
    """Pixels whose flow the reverse flow undoes (Sundaram et al. 2010): not occluded, not an error.
    fwd: cur -> prev, bwd: prev -> cur. Also drops pixels whose source falls outside the frame."""
    h, w = fwd.shape[:2]
    src = _grid(h, w) + fwd  # where each pixel came from
    back = cv2.remap(bwd, src, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    ok = _sq(fwd + back) < 0.01 * (_sq(fwd) + _sq(back)) + 0.5
    return ok & (src[..., 0] >= 0) & (src[..., 0] <= w - 1) & (src[..., 1] >= 0) & (src[..., 1] <= h - 1)


def frame_flow(cur_rgb: np.ndarray, prev_rgb: np.ndarray, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM):
    """(flow cur -> prev, consistency mask) for two RGB frames of one size."""
    a, b = grey(cur_rgb), grey(prev_rgb)
    fwd, bwd = optical_flow(a, b, preset), optical_flow(b, a, preset)
    return fwd, consistent(fwd, bwd)


def warping_error(cur: np.ndarray, prev: np.ndarray, flow: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference (0..255 scale, over channels) between `cur` and `prev` warped to it,
    over the consistent pixels."""
    if not mask.any():
        return 0.0
    diff = np.abs(cur.astype(np.float32) - warp(prev, flow).astype(np.float32)).mean(-1)
    return float(diff[mask].mean())


class Stabilizer:
    """Per stream: keeps the previous input (grey, small) and output, and pulls each new output towards
    the previous one moved along the flow, where the flow is consistent. Call `reset` on a style switch."""

    def __init__(self, flow_side: int = FLOW_SIDE) -> None:
        self.flow_side = flow_side
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self.reset()

    def reset(self) -> None:
        self._prev_grey: np.ndarray | None = None
        self._prev_out: np.ndarray | None = None

    def __call__(self, inp: np.ndarray, out: np.ndarray, amount: float) -> np.ndarray:
        """`inp` the input frame, `out` its stylized version (uint8 RGB, same size); `amount` 0..1."""
        g = grey(inp, self.flow_side)
        prev_g, prev_out = self._prev_grey, self._prev_out
        self._prev_grey = g
        if amount <= 0 or prev_g is None or prev_out is None or prev_out.shape != out.shape or prev_g.shape != g.shape:
            self._prev_out = out
            return out
        if float(np.abs(g.astype(np.int16) - prev_g).mean()) > SCENE_CUT:  # a cut: nothing to carry over
            self._prev_out = out
            return out
        fwd, bwd = self._dis.calc(g, prev_g, None), self._dis.calc(prev_g, g, None)
        alpha = consistent(fwd, bwd).astype(np.float32) * min(1.0, amount)
        h, w = out.shape[:2]
        if (h, w) != g.shape:  # flow was computed small: scale it (and its vectors) to the frame
            fwd = cv2.resize(fwd * (w / g.shape[1]), (w, h), interpolation=cv2.INTER_LINEAR)  # scale while small
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        warped = warp(prev_out, fwd)
        result = cv2.blendLinear(warped, out, alpha, 1.0 - alpha)  # per-pixel weights, in one C++ pass
        self._prev_out = result  # recursive: texture settles instead of re-rolling every frame
        return result
