"""Image files <-> float tensors (1, 3, H, W) in [0, 255], the range every stylestream net uses."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from stylestream.models.io import ImageTooLargeError, open_image


class ImageLoadError(ValueError):
    """An image that is missing or cannot be decoded; the message names the file."""


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode fully (so truncated files fail here, not later) and convert to RGB. An image over
    MAX_IMAGE_PIXELS is refused from its header, before decoding."""
    path = Path(path)
    if not path.is_file():
        raise ImageLoadError(f"{path}: image file not found")
    try:
        with open_image(path) as img:
            img.load()
            return img.convert("RGB")
    except ImageTooLargeError as exc:
        raise ImageLoadError(str(exc)) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageLoadError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None


def resize_longer_side(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / max(w, h)
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL RGB -> float32 (3, H, W) in [0, 255]."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()


def load_image(path: str | os.PathLike, size: int | None = None) -> torch.Tensor:
    """Load an image as float32 (1, 3, H, W) in [0, 255]; `size` scales the longer side to `size`."""
    img = open_rgb(path)
    if size is not None:
        img = resize_longer_side(img, size)
    return pil_to_tensor(img).unsqueeze(0)


def tensor_to_pil(t: torch.Tensor) -> Image.Image:
    """(3, H, W) or (1, 3, H, W) float in [0, 255] -> PIL RGB (clamped and rounded)."""
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    if t.dim() != 3 or t.shape[0] != 3:
        raise ValueError(f"expected an RGB tensor (3, H, W), got shape {tuple(t.shape)}")
    arr = t.detach().float().cpu().clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr))


def save_image(t: torch.Tensor, path: str | os.PathLike) -> None:
    """Save a [0, 255] tensor as an image file; the format follows the extension."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor_to_pil(t).save(path)
