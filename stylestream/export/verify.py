"""Numeric verification of an export against PyTorch FP32 on real images, at several sizes (one odd),
by PSNR over the [0, 255] output range, plus a side-by-side picture of what was compared."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from stylestream.runtime import Backend

log = logging.getLogger(__name__)


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two arrays on a [0, peak] scale; inf when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _batches(x: np.ndarray, batch: int | None) -> list[np.ndarray]:
    """Split into whole batches of a fixed size (repeating frames to fill the last one)."""
    if batch is None:
        return [x]
    reps = -(-len(x) // batch) * batch
    x = np.concatenate([x, x[: reps - len(x)]]) if reps > len(x) else x
    return [x[i : i + batch] for i in range(0, len(x), batch)]


def verify(backend: Backend, reference: Any, frames: list[np.ndarray], sizes: list[tuple[int, int]],
           floor_db: float, batch: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `backend` (the export, loaded by the runtime backend that serves it) and `reference`
    (PyTorch) on the frames at each size.

    Returns {"passed", "floor_db", "min_psnr_db", "runtime", "runtime_version", "sizes": [{"size",
    "psnr_db", "max_abs_error"}], "_arrays": (input, reference, export) at the first size (for pictures)}."""
    import torch

    from stylestream.media import fit, to_nchw

    per_size = []
    arrays = None
    for h, w in sizes:
        x = to_nchw([fit(f, h, w) for f in frames])
        ys, refs = [], []
        for b in _batches(x, batch):
            ys.append(backend.run(b))
            with torch.inference_mode():
                refs.append(reference(torch.from_numpy(b)).numpy())
        y, ref = np.concatenate(ys)[: len(x)], np.concatenate(refs)[: len(x)]
        if y.shape != ref.shape:
            raise AssertionError(f"export returned shape {y.shape} for input {x.shape}")
        value = psnr(y, ref)
        per_size.append({"size": [h, w], "psnr_db": round(value, 2) if math.isfinite(value) else "inf",
                         "max_abs_error": round(float(np.abs(y - ref).max()), 5)})  # fmt: skip
        if arrays is None:
            arrays = (x, ref, y)
    worst = min((s["psnr_db"] for s in per_size), key=lambda v: math.inf if v == "inf" else v)
    worst_f = math.inf if worst == "inf" else worst
    return {"passed": worst_f >= floor_db, "floor_db": floor_db, "min_psnr_db": worst,
            "runtime": backend.describe(), "runtime_version": backend.version(), "frames": len(frames),
            "sizes": per_size, "_arrays": arrays}  # fmt: skip


def save_comparison(arrays: tuple[np.ndarray, np.ndarray, np.ndarray], path: Path, title: str) -> None:
    """One row per frame (up to 3): input | PyTorch | export | |difference| x 10."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, ref, y = arrays
    rows = min(3, len(x))
    fig, axes = plt.subplots(rows, 4, figsize=(12, 2.6 * rows + 0.4), squeeze=False)
    for r in range(rows):
        diff = np.clip(np.abs(y[r] - ref[r]).max(axis=0) * 10, 0, 255)
        panels = [(x[r], "input"), (ref[r], "PyTorch FP32"), (y[r], "export"), (diff, "|diff| x 10")]
        for ax, (img, label) in zip(axes[r], panels):
            if img.ndim == 3:
                ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 255).astype(np.uint8))
            else:
                ax.imshow(img.astype(np.uint8), cmap="magma", vmin=0, vmax=255)
            ax.set_title(label, fontsize=9)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_thumbnail(image_chw: np.ndarray, path: Path, max_side: int = 256) -> None:
    import cv2

    img = np.clip(image_chw.transpose(1, 2, 0) + 0.5, 0, 255).astype(np.uint8)
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise OSError(f"could not write thumbnail {path}")
