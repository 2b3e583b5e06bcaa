"""Command-line options shared by every command that runs styles (plugins, stylize; reusable by serve/cam)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stylestream.plugins.backends import BACKENDS


def add_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins", metavar="DIR", type=Path, action="append", default=[],
                        help="a plugin folder (repeatable); the user folder $STYLESTREAM_PLUGINS or "
                             "~/.local/share/stylestream/plugins is always searched too")  # fmt: skip
    parser.add_argument("--no-user-plugins", action="store_true", help="do not search the user plugin folder")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS.names()],
                        help="inference backend for neural styles; auto picks the fastest available for the "
                             "model file and device, and says which:\n" + BACKENDS.help_text())  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--max-side", type=int, default=None, metavar="N",
                        help="process at most N pixels on the longer side (downscale before the style, "
                             "upscale after; keeps aspect ratio) so slow devices stay real-time")  # fmt: skip
