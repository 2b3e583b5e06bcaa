"""Training for temporal stability on still images (`train --temporal-weight W`, issue 14).

A feed-forward style network flickers on video because nothing in the perceptual loss asks it to treat
two nearly equal frames alike. Following the video style-transfer papers (Huang et al. 2017, Gupta et
al. 2017), each training image x gets a partner frame made from x itself: moved by a small random
affine warp (a few pixels of shift, under 2° of rotation, ±2 % scale, as a hand-held camera or a
person moving would) and given camera-like noise n. The loss

    temporal = W * mean over valid pixels of (f(warp(x) + n) - warp(f(x)))^2

asks the stylized partner to be the stylized image moved the same way. The same sampling grid warps x
and f(x) (torch's affine_grid / grid_sample), and pixels whose source lies outside the image (the
borders the warp brings in) are left out. No video is needed, so it works on COCO-style still images.

The warp and the noise of a step come from a generator seeded by (seed, step) alone: every run of a
lockstep group gets the same pairs (so different weights compare fairly), a resumed run draws what an
uninterrupted one would, and the global RNGs are not touched (a run with W = 0 is bit for bit what it
was before this term existed).

What it teaches is steadiness under camera motion and sensor noise; nothing in the pairs is a change
that is not a camera motion (a person moving, an occlusion, which also shift the whole frame's
normalization statistics). Measured with random VGG on short runs (README, train section), the trained
network is much steadier under such shakes of unseen frames, while the optical-flow warping error on
real webcam clips did not drop reliably at that scale."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MAX_SHIFT_PX = 3.0  # each axis, uniform in [-3, 3] pixels
MAX_ROTATION_DEG = 2.0
MAX_SCALE = 0.02  # zoom uniform in [0.98, 1.02]
NOISE_SIGMA = 3.0  # grey levels on the 0..255 scale, Gaussian: a webcam's sensor noise
_STREAM = 0x7E3A_5EED  # keeps these draws apart from the data order's generator (same seed, same step)
# a pixel is valid when (nearly) all of its bilinear taps fall inside the image
_INSIDE = 0.999


def describe() -> str:
    """The pairs in words, for the card."""
    return (f"each image paired with itself moved by a random affine warp (shift <= {MAX_SHIFT_PX:g} px, "
            f"rotation <= {MAX_ROTATION_DEG:g} deg, scale within {MAX_SCALE:.0%}) plus Gaussian noise "
            f"(sigma {NOISE_SIGMA:g} levels); loss: mean squared (f(warp(x) + n) - warp(f(x))) over pixels "
            "the warp keeps inside the image")  # fmt: skip


def _generator(device: torch.device, seed: int, step: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed((int(seed) * 1_000_003 + int(step)) ^ _STREAM)
    return g


def _theta(u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """affine_grid matrices (N, 2, 3) from uniform draws u (N, 4) in [-1, 1]: shift x, shift y,
    rotation, scale. affine_grid works in coordinates normalized to [-1, 1] per axis, so a rotation by
    a in pixel space becomes [[c, -s h/w], [s w/h, c]] there and a shift of t pixels 2t/w (or 2t/h)."""
    tx, ty = u[:, 0] * MAX_SHIFT_PX * 2 / w, u[:, 1] * MAX_SHIFT_PX * 2 / h
    a = u[:, 2] * math.radians(MAX_ROTATION_DEG)
    scale = 1 + u[:, 3] * MAX_SCALE
    cos, sin = torch.cos(a) * scale, torch.sin(a) * scale
    return torch.stack([torch.stack([cos, -sin * h / w, tx], dim=1), torch.stack([sin * w / h, cos, ty], dim=1)], dim=1)


@dataclass(frozen=True)
class MovedBatch:
    """A batch's partner frames and the warp that made them."""

    moved: torch.Tensor  # warp(x) + n, clamped to [0, 255], in x's memory format
    grid: torch.Tensor  # (N, H, W, 2) float32: where each output pixel samples its input
    mask: torch.Tensor  # (N, 1, H, W) float32: 1 where the whole sample lies inside the image

    def warp(self, y: torch.Tensor) -> torch.Tensor:
        """`y` (N, C, H, W) moved by this batch's warp, in float32."""
        return F.grid_sample(y.float(), self.grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def loss(self, y: torch.Tensor, y_moved: torch.Tensor) -> torch.Tensor:
        """Mean squared difference between f(moved) and warp(f(x)) over the valid pixels (float32)."""
        sq = (y_moved.float() - self.warp(y)) ** 2 * self.mask
        return sq.sum() / (self.mask.sum() * y.shape[1]).clamp_min(1.0)


def move_batch(x: torch.Tensor, seed: int, step: int) -> MovedBatch:
    """The partner frames of batch `x` (N, 3, H, W in [0, 255]) for step `step` of a run seeded `seed`."""
    n, c, h, w = x.shape
    g = _generator(x.device, seed, step)
    u = torch.rand(n, 4, generator=g, device=x.device) * 2 - 1
    noise = torch.randn(n, c, h, w, generator=g, device=x.device) * NOISE_SIGMA
    grid = F.affine_grid(_theta(u, h, w), [n, c, h, w], align_corners=False)
    # the moved frame continues its edges (as a camera's next frame would show more of the scene, not
    # black); those pixels are masked out of the loss anyway
    warped = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = F.grid_sample(torch.ones(n, 1, h, w, device=x.device), grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)  # fmt: skip
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    moved = (warped + noise).clamp(0.0, 255.0).to(dtype=x.dtype).contiguous(memory_format=fmt)
    return MovedBatch(moved, grid, (inside > _INSIDE).float())
