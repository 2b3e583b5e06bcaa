"""Fixtures for the server tests: the real webcam clip, decoded small once."""

from __future__ import annotations

import numpy as np
import pytest

from tests.stream.rtc_client import load_clip


@pytest.fixture(scope="session")
def clip(media) -> list[np.ndarray]:
    """webcam_walk.mkv (640x480 30 fps, 89 frames) as 320x240 RGB: the test machine has 2 cores."""
    return load_clip(media / "video" / "webcam_walk.mkv")
