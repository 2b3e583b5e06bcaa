"""Shared fixtures and rules: real media shipped in tests/data/media, loopback-only ICE, and the
browser tests' requirement (Chromium: skipped with the reason when absent, a failure under CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")

REPO = Path(__file__).resolve().parents[1]
# Copies of the few files of ../shared/media the tests need (licences in its README): the suite runs the
# same on a fresh clone as beside the shared folder.
MEDIA = REPO / "tests" / "data" / "media"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """`stylestream ARGV...` in this process: (exit code, stdout, stderr). CLIError and argparse errors
    exit through parser.exit, so SystemExit is the exit code too."""
    from stylestream.cli import main

    try:
        code = main([*map(str, argv)])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="session")
def media() -> Path:
    return MEDIA


@pytest.fixture(scope="session", autouse=True)
def loopback_ice():
    """Server and clients run on this machine: their ICE candidates stay on loopback, so no test sends
    media to the machine's network address (stylestream serve --ice-interface lo does the same)."""
    from stylestream.stream import network

    network.use_interfaces(["lo"])
    yield
    network.use_interfaces([])


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("browser") is None or CHROMIUM.exists():
        return
    why = f"{CHROMIUM} not found: install Debian's chromium (.ci/run does)"
    if os.environ.get("CI") == "true":
        pytest.fail(why)
    pytest.skip(why)
