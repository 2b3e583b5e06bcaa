"""Paths named by a plugin (model files, thumbnails, cards, ONNX external data) are untrusted input:
a plugin folder may come from anyone, and its files are read by the server and served over HTTP.
`confined` is the one check every such path goes through."""

from __future__ import annotations

import os
from pathlib import Path


class OutsideFolder(ValueError):
    """A plugin names a path that resolves outside its own folder: the plugin is refused, not repaired."""


def confined(folder: str | os.PathLike, rel: str | os.PathLike, what: str = "path",
             base: str | os.PathLike | None = None) -> Path:  # fmt: skip
    """The resolved path of `rel` (relative to `base`, default `folder`; absolute paths taken as they are),
    which must lie inside `folder` after every symlink is followed.

    Raises OutsideFolder("<what> '<rel>' is outside the plugin folder <folder>") otherwise, so that
    "../../etc/passwd", "/etc/shadow" and a symlink pointing out of the folder are all refused alike,
    and ValueError when `rel` is not a file name at all (a number in a card, an empty string)."""
    root = Path(folder).resolve()
    if not isinstance(rel, (str, os.PathLike)) or not str(rel) or "\x00" in str(rel):
        raise ValueError(f"{what} {rel!r} is not a file name")
    target = (Path(base) if base is not None else root).joinpath(rel).resolve()
    if not target.is_relative_to(root):
        raise OutsideFolder(f"{what} {str(rel)!r} is outside the plugin folder {root}")
    return target
