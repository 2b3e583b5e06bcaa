"""argparse types shared by the commands. Frame sizes are written one way everywhere: width x height,
as video tools write them (640x480)."""

from __future__ import annotations

import argparse
import re

_SIZE = re.compile(r"\s*(\d+)\s*[xX]\s*(\d+)\s*")


def size_wxh(text: str) -> tuple[int, int]:
    """'640x480' -> (640, 480): width first."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 640x480; got {text!r}")
    w, h = int(m.group(1)), int(m.group(2))
    if not (w and h):
        raise argparse.ArgumentTypeError(f"width and height must be at least 1, got {text!r}")
    return w, h


def sizes_wxh(text: str) -> list[tuple[int, int]]:
    """'320x240,640x480' -> [(320, 240), (640, 480)]."""
    sizes = [size_wxh(t) for t in text.split(",") if t.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT sizes separated by commas, got {text!r}")
    return sizes


def param(text: str) -> tuple[str, float]:
    """'scale=0.5' -> ('scale', 0.5): a style parameter on the command line (--param, repeatable)."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--param must look like NAME=VALUE, e.g. stabilize=0.5; got {text!r}")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--param {name.strip()}: {value!r} is not a number") from None


def whole_number(text: str) -> int:
    """An integer option with a one-line error instead of argparse's 'invalid int value'."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number(text: str) -> float:
    """A float option (1e-3, 0.5, 1e10) with a one-line error."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def list_of(kind: type, what: str):
    """An argparse type for 'a,b,c' -> [kind(a), kind(b), kind(c)]; `what` names the items in the error."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        try:
            return [kind(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}") from None

    return parse
