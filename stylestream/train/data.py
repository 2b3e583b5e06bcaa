"""Training images: every image file under a folder (recursively), resized and centre-cropped.

The order is a seeded permutation per epoch, so two runs with the same seed see the same batches, and
a (epoch, batch) position is enough to resume mid-epoch. A corrupt file is skipped with one warning
(logged in the main process, so worker processes do not repeat it); so is an image over the pixel
limit (stylestream.models.io.MAX_IMAGE_PIXELS), refused from its header before decoding."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from stylestream.media import IMAGE_SUFFIXES, list_media
from stylestream.train.images import ImageLoadError, open_rgb, pil_to_tensor

log = logging.getLogger(__name__)


class DataError(ValueError):
    """The training data folder is missing, empty or unusable."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


def list_images(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: training data folder not found (expected a folder of images, e.g. COCO train2017)"
        )
    files = list_media(root)[0]  # the one definition of an image file, searched recursively
    if not files:
        raise DataError(
            f"{root}: no image files found (looked recursively for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


class ImageFolderDataset(Dataset):
    """Items are float32 (3, S, S) in [0, 255]: shorter side resized to S, centre crop (as in Johnson et
    al. and pytorch/examples), or `Skipped` for a file that cannot be decoded."""

    def __init__(self, root: str | os.PathLike, image_size: int):
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.root = Path(root)
        self.image_size = int(image_size)
        self.files = list_images(root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor | Skipped:
        path = self.files[index]
        try:
            img = open_rgb(path)
        except ImageLoadError as exc:
            return Skipped(str(path), str(exc))
        s = self.image_size
        w, h = img.size
        scale = s / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - s) // 2, (nh - s) // 2
        return pil_to_tensor(img.crop((left, top, left + s, top + s)))


def _collate(items: list[torch.Tensor | Skipped]) -> tuple[torch.Tensor | None, list[Skipped]]:
    good = [t for t in items if isinstance(t, torch.Tensor)]
    bad = [t for t in items if isinstance(t, Skipped)]
    return (torch.stack(good) if good else None), bad


class EpochSampler(Sampler[int]):
    """A seeded permutation for one epoch (seed + epoch), this rank's shard, from a start offset."""

    def __init__(self, n: int, seed: int, epoch: int, start: int = 0, rank: int = 0, world_size: int = 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        self.indices = perm[rank::world_size][start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class ResumableLoader:
    """Iterates (epoch, batch_index, images) from a position; batches lost wholly to corrupt files are
    skipped (their position still counts, so resuming stays exact)."""

    def __init__(self, dataset: ImageFolderDataset, batch_size: int, seed: int, num_workers: int = 0,
                 pin_memory: bool = False, rank: int = 0, world_size: int = 1):  # fmt: skip
        self.dataset, self.batch_size, self.seed = dataset, int(batch_size), int(seed)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.rank, self.world_size = rank, world_size
        self.warned: set[str] = set()

    @property
    def batches_per_epoch(self) -> int:
        per_rank = math.ceil((len(self.dataset) - self.rank) / self.world_size)
        return max(1, math.ceil(per_rank / self.batch_size))

    def epoch_batches(self, epoch: int, start_batch: int = 0) -> Iterator[tuple[int, torch.Tensor]]:
        sampler = EpochSampler(len(self.dataset), self.seed, epoch, start_batch * self.batch_size,
                               self.rank, self.world_size)  # fmt: skip
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=_collate,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=False, prefetch_factor=4 if self.num_workers else None,
        )  # fmt: skip
        for i, (images, skipped) in enumerate(loader, start=start_batch):
            for s in skipped:
                if s.path not in self.warned:
                    self.warned.add(s.path)
                    log.warning("skipping training image %s", s.reason)
            if images is not None:
                yield i, images

    def __iter__(self) -> Iterator[torch.Tensor]:
        """Endless stream of batches over epochs 0, 1, 2, ... (for simple consumers)."""
        epoch = 0
        while True:
            for _, images in self.epoch_batches(epoch):
                yield images
            epoch += 1


def make_loader(dataset: ImageFolderDataset, batch_size: int, seed: int, num_workers: int = 0,
                pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> ResumableLoader:  # fmt: skip
    return ResumableLoader(dataset, batch_size, seed, num_workers, pin_memory, rank, world_size)
