"""Command-line options shared by every command that runs styles (plugins, stylize; reusable by serve/cam)."""

from __future__ import annotations

import argparse
from pathlib import Path

from stylestream.plugins.backends import BACKENDS
from stylestream.plugins.modelfiles import DEFAULT_MAX_MODEL_MB


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of megabytes, got {text}")
    return value


def add_max_model_mb_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-model-mb", type=_megabytes, default=DEFAULT_MAX_MODEL_MB, metavar="MB",
                        help="skip plugin model files larger than this, external data included "
                             f"(default: {DEFAULT_MAX_MODEL_MB:g}); weights are read only when a style "
                             "is first used")  # fmt: skip


def add_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugins", metavar="DIR", type=Path, action="append", default=[],
                        help="a plugin folder (repeatable); the user folder $STYLESTREAM_PLUGINS or "
                             "~/.local/share/stylestream/plugins is always searched too")  # fmt: skip
    parser.add_argument("--no-user-plugins", action="store_true", help="do not search the user plugin folder")
    add_max_model_mb_argument(parser)


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS.names()],
                        help="inference backend for neural styles; auto picks the fastest available for the "
                             "model file and device, and says which:\n" + BACKENDS.help_text())  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--max-side", type=int, default=None, metavar="N",
                        help="process at most N pixels on the longer side (downscale before the style, "
                             "upscale after; keeps aspect ratio) so slow devices stay real-time")  # fmt: skip
