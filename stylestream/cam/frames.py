"""What sources, sinks and the pipeline share: a stylized frame's metadata and resizing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameMeta:
    """What a sink knows about a stylized frame."""

    index: int  # the source frame number, from 0; gaps are frames dropped by latest-frame-wins
    captured: float  # time.monotonic() when the source delivered the frame
    style: str
    latency: float  # seconds from capture to the stylized frame
    fps: float  # output frames per second (moving average)


def resize_rgb(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """`rgb` at `size` (width, height); the same array when it already has that size or size is None."""
    import cv2

    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    shrink = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
