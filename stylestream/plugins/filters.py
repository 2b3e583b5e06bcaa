"""Built-in classic filters (OpenCV, no model needed), so the product works out of the box.

Each filter works frame by frame on uint8 RGB and keeps the exact frame size (pyramid steps can
round odd sizes, so results are resized back)."""

from __future__ import annotations

from typing import ClassVar

import cv2
import numpy as np

from stylestream.plugins.base import Param, StylePlugin
from stylestream.registry import Registry

BUILTINS: Registry[type[StylePlugin]] = Registry("built-in style")


def _builtin(cls: type[StylePlugin]) -> type[StylePlugin]:
    BUILTINS.add(cls.name, cls, cls.description)
    return cls


def _fit(img: np.ndarray, h: int, w: int) -> np.ndarray:
    return img if img.shape[:2] == (h, w) else cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def _half(img: np.ndarray) -> np.ndarray:
    """Half resolution for slow painterly filters on frames wider than 320 px."""
    return cv2.pyrDown(img) if img.shape[1] > 320 and img.shape[0] >= 32 else img


class FrameFilter(StylePlugin):
    """A filter defined on one frame; `apply` maps it over the batch."""

    def apply(self, frames: np.ndarray, params: dict[str, float]) -> np.ndarray:
        out = np.empty_like(frames)
        for i, frame in enumerate(frames):
            out[i] = self.apply_frame(np.ascontiguousarray(frame), params)
        return out

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        raise NotImplementedError


@_builtin
class Original(StylePlugin):
    name = "original"
    title = "Original"
    description = "passthrough: the camera image unchanged"
    scalable: ClassVar[bool] = False  # the engine's --max-side would only blur it

    def apply(self, frames: np.ndarray, params: dict[str, float]) -> np.ndarray:
        return frames.copy()


@_builtin
class Cartoon(FrameFilter):
    name = "cartoon"
    title = "Cartoon"
    description = "flat colours (bilateral smoothing) with bold dark outlines"
    extra_params = (Param("outline", "Outline", 0.5, 0.0, 1.0, 0.05, "weight of the dark outlines"),)

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        h, w = frame.shape[:2]
        # smoothing at half resolution is 4x cheaper and looks flatter
        small = cv2.pyrDown(frame) if min(h, w) >= 64 else frame
        for _ in range(2):
            small = cv2.bilateralFilter(small, 7, 40, 7)
        color = _fit(small, h, w)
        color = (color // 24) * 24 + 12  # posterize into flat bands
        gray = cv2.medianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 5)
        edges = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 3)
        keep = 1.0 - params["outline"] * (1.0 - edges.astype(np.float32) / 255.0)
        return (color.astype(np.float32) * keep[..., None]).astype(np.uint8)


@_builtin
class Sketch(FrameFilter):
    name = "sketch"
    title = "Pencil sketch"
    description = "grey pencil drawing (colour-dodge of the blurred negative)"
    extra_params = (Param("softness", "Softness", 21.0, 3.0, 61.0, 2.0, "blur radius of the shading"),)

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        k = int(params["softness"]) | 1  # Gaussian kernels must be odd
        blur = cv2.GaussianBlur(255 - gray, (k, k), 0)
        sketch = cv2.divide(gray, 255 - blur, scale=256)
        return cv2.cvtColor(sketch, cv2.COLOR_GRAY2RGB)


@_builtin
class Edges(FrameFilter):
    name = "edges"
    title = "Edges"
    description = "Canny edges, white on black"
    extra_params = (Param("threshold", "Threshold", 80.0, 10.0, 250.0, 5.0, "lower Canny threshold"),)

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        gray = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), (5, 5), 0)
        t = params["threshold"]
        edges = cv2.Canny(gray, t, t * 2.0)
        return cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB)


@_builtin
class Watercolor(FrameFilter):
    name = "watercolor"
    title = "Watercolor"
    description = "painterly edge-aware smoothing (cv2.stylization)"
    extra_params = (Param("smoothness", "Smoothness", 60.0, 10.0, 200.0, 5.0, "spatial extent of the wash"),)

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        h, w = frame.shape[:2]
        # the domain transform costs ~170 ms at 640x480; a wash loses nothing at half resolution
        small = _half(frame)
        out = cv2.stylization(small[..., ::-1].copy(), sigma_s=params["smoothness"] * small.shape[1] / w,
                              sigma_r=0.45)  # fmt: skip
        return _fit(out[..., ::-1], h, w)


@_builtin
class PencilColor(FrameFilter):
    name = "pencil-color"
    title = "Colour pencil"
    description = "coloured pencil drawing (cv2.pencilSketch)"
    extra_params = (Param("shade", "Shading", 0.05, 0.0, 0.1, 0.005, "amount of pencil shading"),)

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        _, color = cv2.pencilSketch(frame[..., ::-1].copy(), sigma_s=40, sigma_r=0.07, shade_factor=params["shade"])
        return color[..., ::-1]


@_builtin
class OilPaint(FrameFilter):
    name = "oil-paint"
    title = "Oil paint"
    description = "smooth painterly strokes with enhanced detail (cv2.edgePreservingFilter + detailEnhance)"

    def apply_frame(self, frame: np.ndarray, params: dict[str, float]) -> np.ndarray:
        h, w = frame.shape[:2]
        small = _half(frame)[..., ::-1].copy()  # OpenCV's photo module expects BGR
        smooth = cv2.edgePreservingFilter(small, flags=cv2.RECURS_FILTER, sigma_s=30, sigma_r=0.3)
        return _fit(cv2.detailEnhance(smooth, sigma_s=8, sigma_r=0.15)[..., ::-1], h, w)
