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


@pytest.fixture(scope="session", autouse=True)
def loopback_ice():
    """Server and clients run on this machine: their ICE candidates stay on loopback, so no test sends
    media to the machine's network address (stylestream serve --ice-interface lo does the same)."""
    from stylestream.stream import network

    network.use_interfaces(["lo"])
    yield
    network.use_interfaces([])
