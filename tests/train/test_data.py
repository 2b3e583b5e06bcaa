"""Training data: recursive listing, seeded order, resume positions, corrupt files, clear errors."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from stylestream.train.data import DataError, EpochSampler, ImageFolderDataset, make_loader
from stylestream.train.images import ImageLoadError, load_image, save_image


def test_every_image_under_the_folder_is_found_resized_and_cropped(tiny_data):
    ds = ImageFolderDataset(tiny_data, 32)
    assert len(ds) == 6 and any("nested/deeper" in str(f) for f in ds.files)
    item = ds[0]
    assert item.shape == (3, 32, 32) and item.dtype == torch.float32
    assert 0 <= item.min() and item.max() <= 255 and item.std() > 1  # a real photo, not a blank


def _order(loader, epochs=2):
    return [
        torch.cat([b for _, b in loader.epoch_batches(e)]).sum(dim=(1, 2, 3)).tolist() for e in range(epochs)
    ]


def test_same_seed_same_batches_other_seed_other_order(tiny_data):
    ds = ImageFolderDataset(tiny_data, 16)
    a, b, c = (_order(make_loader(ds, 2, seed)) for seed in (7, 7, 8))
    assert a == b
    assert a != c
    assert a[0] != a[1]  # each epoch is reshuffled
    assert sorted(a[0]) == sorted(a[1])  # ... over the same images


def test_a_position_resumes_the_epoch_exactly(tiny_data):
    ds = ImageFolderDataset(tiny_data, 16)
    loader = make_loader(ds, 2, seed=3)
    full = [(i, b) for i, b in loader.epoch_batches(1)]
    tail = [(i, b) for i, b in loader.epoch_batches(1, start_batch=2)]
    assert [i for i, _ in tail] == [2] and torch.equal(tail[0][1], full[2][1])
    assert loader.batches_per_epoch == 3


def test_ranks_see_disjoint_shards():
    shards = [EpochSampler(10, seed=1, epoch=0, rank=r, world_size=3).indices for r in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))


def test_corrupt_image_is_skipped_with_one_warning(tiny_data, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    good = sorted(root.rglob("*.jpg"))[1]
    (root / "broken.jpg").write_bytes(good.read_bytes()[:300])  # truncated JPEG
    (root / "garbage.png").write_bytes(b"\x89PNG nonsense")
    ds = ImageFolderDataset(root, 16)
    loader = make_loader(ds, 3, seed=0)
    with caplog.at_level(logging.WARNING, logger="stylestream.train.data"):
        seen = sum(len(b) for e in range(3) for _, b in loader.epoch_batches(e))
    assert seen == 3 * 6  # the 6 good images, every epoch
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines  # one line per bad file, not one per epoch
    assert any("broken.jpg" in m and "not a readable image" in m for m in lines)
    assert any("garbage.png" in m for m in lines)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="empty: no image files found"):
        ImageFolderDataset(tmp_path / "empty", 32)
    with pytest.raises(DataError, match="missing: training data folder not found"):
        ImageFolderDataset(tmp_path / "missing", 32)


def test_image_round_trip_and_errors(tmp_path, media):
    img = load_image(media / "styles" / "candy.jpg", size=40)
    assert img.shape[:2] == (1, 3) and max(img.shape[-2:]) == 40
    save_image(img, tmp_path / "out.png")
    assert torch.equal(load_image(tmp_path / "out.png"), img.round().clamp(0, 255))
    with pytest.raises(ImageLoadError, match="nope.jpg: image file not found"):
        load_image(tmp_path / "nope.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"nothing")
    with pytest.raises(ImageLoadError, match="bad.jpg: not a readable image"):
        load_image(tmp_path / "bad.jpg")


def test_worker_processes_give_the_same_batches_and_one_warning(tiny_data, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ds = ImageFolderDataset(root, 16)
    in_process = _order(make_loader(ds, 2, seed=5))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stylestream.train.data"):
        assert _order(make_loader(ds, 2, seed=5, num_workers=2)) == in_process
    assert sum("broken.jpg" in r.getMessage() for r in caplog.records) == 1
