"""Held-out evaluation of a style network: the mean perceptual loss over a fixed set of images that no
run trained on, and the train/eval split a sweep uses when no separate eval folder is given."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch
from torch import nn

from stylestream.train.data import DataError, ImageFolderDataset
from stylestream.train.losses import PerceptualLoss
from stylestream.train.step import autocast

DEFAULT_EVAL_IMAGES = 64


def with_files(dataset: ImageFolderDataset, files: list[Path]) -> ImageFolderDataset:
    """The same dataset (size, crop) restricted to `files`."""
    ds = copy.copy(dataset)
    ds.files = list(files)
    return ds


def split_files(files: list[Path], eval_images: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, eval): a seeded choice of `eval_images` files (at most a fifth of them, at least one)
    held out; both lists keep the sorted order. Needs at least two files."""
    if len(files) < 2:
        raise DataError(f"{len(files)} image(s): need at least 2 to hold out an eval split (or pass --eval-data)")
    n_eval = max(1, min(eval_images, len(files) // 5))
    g = torch.Generator().manual_seed(seed)
    held = set(torch.randperm(len(files), generator=g)[:n_eval].tolist())
    return ([f for i, f in enumerate(files) if i not in held], [f for i, f in enumerate(files) if i in held])


def train_eval_datasets(data: str | os.PathLike, image_size: int, seed: int,
                        eval_data: str | os.PathLike | None = None,
                        eval_images: int = DEFAULT_EVAL_IMAGES) -> tuple[ImageFolderDataset, ImageFolderDataset, str]:  # fmt: skip
    """Training and eval datasets plus a phrase saying where the eval images came from."""
    full = ImageFolderDataset(data, image_size)
    if eval_data is not None:
        ev = ImageFolderDataset(eval_data, image_size)
        train_set = {p.resolve() for p in full.files}
        overlap = [p for p in ev.files if p.resolve() in train_set]
        if overlap:
            raise DataError(f"--eval-data {eval_data}: {len(overlap)} of its images are also under --data "
                            f"(e.g. {overlap[0]}); the eval set must be held out")  # fmt: skip
        if len(ev.files) > eval_images:  # a fixed seeded subset keeps evaluation cheap
            g = torch.Generator().manual_seed(seed)
            keep = sorted(torch.randperm(len(ev.files), generator=g)[:eval_images].tolist())
            ev = with_files(ev, [ev.files[i] for i in keep])
        return full, ev, f"--eval-data {eval_data}"
    train_files, eval_files = split_files(full.files, eval_images, seed)
    return (with_files(full, train_files), with_files(full, eval_files),
            f"a seeded split of {data} held out from training")  # fmt: skip


@torch.no_grad()
def evaluate(model: nn.Module, loss_fn: PerceptualLoss, dataset: ImageFolderDataset, device: torch.device,
             batch_size: int = 8, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Mean loss terms (weighted as in training) per image over `dataset`; unreadable images are skipped."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    items = [t for t in (dataset[i] for i in range(len(dataset))) if isinstance(t, torch.Tensor)]
    try:
        for start in range(0, len(items), batch_size):
            x = torch.stack(items[start:start + batch_size]).to(device)
            with autocast(device, amp_dtype):
                terms = loss_fn(model(x), loss_fn.content_targets(x))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            count += len(x)
    finally:
        model.train(was_training)
    if not count:
        raise DataError("no readable image in the eval set")
    out = {k: v / count for k, v in sums.items()}
    out["images"] = float(count)
    return {k: (v if math.isfinite(v) else math.nan) for k, v in out.items()}
