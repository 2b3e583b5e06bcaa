"""Command-line options shared by every command that runs styles (plugins, stylize, serve, cam): each
option has one name, default and help everywhere. Light: building a parser must not load torch,
ONNX Runtime or OpenCV."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stylestream.cli_types import param
from stylestream.plugins.modelfiles import DEFAULT_MAX_MODEL_MB
from stylestream.runtime import BACKENDS
from stylestream.runtime.triton_backend import TritonBackend, parse_triton_url

MIN_SIDE = 16  # the smallest frame side every style and backend accepts


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megabytes") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be a positive number of megabytes, got {text}")
    return value


def _max_side(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of pixels, got {text!r}") from None
    if value < MIN_SIDE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_SIDE} pixels, got {value}")
    return value


def _triton_url(text: str) -> str:
    try:
        url = str(parse_triton_url(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--triton-url {text!r}: ")) from None
    missing = TritonBackend.unavailable_reason("cpu")  # said now, not as a traceback at discovery
    if missing:
        raise argparse.ArgumentTypeError(missing)
    return url


def add_plugin_arguments(parser: argparse.ArgumentParser) -> None:
    """--plugins DIR (repeatable), --no-user-plugins, --max-model-mb and --triton-url (a Triton server's
    models are styles too, so it is where styles come from, for `plugins` as for the commands that run them)."""
    parser.add_argument("--plugins", metavar="DIR", type=Path, action="append", default=[],
                        help="a plugin folder (repeatable); the user folder $STYLESTREAM_PLUGINS or "
                             "~/.local/share/stylestream/plugins is searched too unless --no-user-plugins")  # fmt: skip
    parser.add_argument("--no-user-plugins", action="store_true", help="do not search the user plugin folder")
    parser.add_argument("--max-model-mb", type=_megabytes, default=DEFAULT_MAX_MODEL_MB, metavar="MB",
                        help="skip plugin model files larger than this, external data included "
                             f"(default: {DEFAULT_MAX_MODEL_MB:g}); weights are read only when a style "
                             "is first used")  # fmt: skip
    parser.add_argument("--triton-url", type=_triton_url, default=None, metavar="URL",
                        help="a Triton Inference Server, grpc://HOST:8001 or http://HOST:8000: the style models "
                             "in its repository become styles (run on it), and --backend triton runs every "
                             "neural style on it, looked up by name; asked at start, an error if it does not "
                             "answer (default: none)")  # fmt: skip


def backend_options(backend: str, triton_url: str | None) -> dict[str, dict[str, Any]]:
    """The Engine's backend_options from --backend and --triton-url; ValueError when --backend triton has
    no server to run on."""
    if backend == "triton" and not triton_url:
        raise ValueError("--backend triton needs --triton-url grpc://HOST:8001 (or http://HOST:8000), the "
                         "Triton server that runs the styles")  # fmt: skip
    return {"triton": {"url": triton_url}} if triton_url else {}


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend, --device and --max-side: how the engine runs the styles."""
    parser.add_argument("--backend", default="auto", choices=["auto", *BACKENDS.names()],
                        help="inference backend for neural styles; auto picks the fastest available for the "
                             "model file and device, and says which:\n" + BACKENDS.help_text())  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--max-side", type=_max_side, default=None, metavar="N",
                        help=f"stylize at most N pixels on the longer side (>= {MIN_SIDE}): frames are scaled "
                             "down for the style, aspect ratio kept, and back up after, so slow devices stay "
                             "real-time (serve adapts below this on its own: --target-fps)")  # fmt: skip


def add_param_argument(parser: argparse.ArgumentParser) -> None:
    """--param NAME=VALUE (repeatable): style parameters, as the page's sliders set them."""
    parser.add_argument("--param", action="append", type=param, default=[], metavar="NAME=VALUE",
                        help="a style parameter (see `stylestream plugins --json`), repeatable; e.g. "
                             "--param stabilize=0.5 (videos: less flicker)")  # fmt: skip
