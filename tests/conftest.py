"""Shared fixtures: real media from ../shared/media, tiny random data, a seeded random VGG."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"


@pytest.fixture(scope="session")
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.fail(f"test media not found at {MEDIA} (expected ../shared/media beside the checkout)")
    return MEDIA
