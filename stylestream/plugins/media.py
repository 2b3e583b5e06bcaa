"""Reading and writing the images `stylize` works on, and telling images from videos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stylestream.models.io import ImageTooLargeError, atomic_write, open_image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv", ".gif"}


class MediaError(ValueError):
    """An unreadable input or unwritable output; the message names the file."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTS


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB (H, W, 3) upright (EXIF orientation applied), and the alpha channel if there is one.
    Raises MediaError, or ImageTooLargeError (from the header, before decoding) for an image over
    MAX_IMAGE_PIXELS, which `stylize` skips inside a folder."""
    from PIL import ImageOps, UnidentifiedImageError

    try:
        with open_image(path) as im:
            im = ImageOps.exif_transpose(im)
            alpha = np.asarray(im.getchannel("A")) if "A" in im.getbands() else None
            return np.asarray(im.convert("RGB")), alpha
    except ImageTooLargeError:
        raise
    except FileNotFoundError:
        raise MediaError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise MediaError(f"{path}: not a readable image ({exc})") from None


def write_image(rgb: np.ndarray, path: Path, alpha: np.ndarray | None = None) -> None:
    """Atomically (temp file + rename), in the format the suffix names; alpha kept where it can be."""
    from PIL import Image

    im = Image.fromarray(rgb)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise MediaError(f"{path}: unknown image format {path.suffix!r}; use one of {sorted(IMAGE_EXTS)}")
    if alpha is not None and fmt in ("PNG", "WEBP", "TIFF"):
        im.putalpha(Image.fromarray(alpha))
    kw = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **kw))


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
