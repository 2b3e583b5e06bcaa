from __future__ import annotations

import numpy as np
import pytest

from stylestream.media import MediaError, fit, load_frames


def test_frames_from_video_folder_and_image(media, tmp_path):
    frames = load_frames(media / "video" / "webcam_book.mkv", 5)
    assert len(frames) == 5 and frames[0].shape == (480, 640, 3) and frames[0].dtype == np.uint8
    assert not np.array_equal(frames[0], frames[-1])  # spread over the clip
    assert len(load_frames(media / "content", 3)) == 3
    assert fit(load_frames(media / "styles" / "mosaic.jpg")[0], 37, 53).shape == (37, 53, 3)


def test_corrupt_images_are_skipped_or_named(media, tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(MediaError, match="bad.jpg: not a readable image"):
        load_frames(tmp_path / "bad.jpg")
    with pytest.raises(MediaError, match="no readable images"):
        load_frames(tmp_path)
    (tmp_path / "good.jpg").write_bytes((media / "content" / "amber.jpg").read_bytes())
    assert len(load_frames(tmp_path)) == 1
    with pytest.raises(MediaError, match="no such file"):
        load_frames(tmp_path / "missing")


def test_folders_are_searched_recursively_everywhere(media, tmp_path):
    """A calibration folder with sub-folders (as training data may have) is not "no readable images"."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes((media / "content" / "amber.jpg").read_bytes())
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "y.jpg").write_bytes(b"not even an image")
    assert len(load_frames(tmp_path)) == 1
