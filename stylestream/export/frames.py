"""Real frames for calibration, verification and benchmarks: a folder of images, one image, or a
video file, read with OpenCV and returned as uint8 RGB (H, W, 3) arrays."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from stylestream.export.formats import ExportError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".y4m")


def default_images() -> Path:
    """A real photo that ships with a dependency (matplotlib's sample data), used for verification
    when the user names no images."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def _read_image(path: Path) -> np.ndarray | None:
    import cv2

    data = np.fromfile(path, dtype=np.uint8)  # imdecode: no surprises with non-ASCII paths
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    except cv2.error:  # over OPENCV_IO_MAX_IMAGE_PIXELS (a decompression bomb): skipped like any unreadable file
        return None
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_video(path: Path, max_frames: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return []
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        step = max(1, total // max_frames) if total > 0 else 1
        frames: list[np.ndarray] = []
        i = 0
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i % step == 0:  # spread the samples over the clip, not just its first second
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            i += 1
        return frames
    finally:
        cap.release()


def load_frames(source: str | Path, max_frames: int = 16) -> list[np.ndarray]:
    """uint8 RGB frames from a folder of images, an image file or a video file.

    Unreadable images inside a folder are skipped with a warning (one bad file should not sink a
    calibration set); a source that yields no frame at all is an ExportError naming it."""
    source = Path(source)
    if not source.exists():
        raise ExportError(f"{source}: no such file or folder (expected a folder of images or a video file)")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        videos = sorted(p for p in source.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        frames: list[np.ndarray] = []
        for p in files:
            if len(frames) >= max_frames:
                break
            img = _read_image(p)
            if img is None:
                log.warning("%s: not a readable image, skipped", p)
                continue
            frames.append(img)
        for v in videos:  # a folder of clips works too
            if len(frames) >= max_frames:
                break
            frames.extend(_read_video(v, max_frames - len(frames)))
        if not frames:
            raise ExportError(
                f"{source}: no readable images ({', '.join(IMAGE_SUFFIXES)}) or videos in this folder"
            )
        return frames
    if source.suffix.lower() in VIDEO_SUFFIXES:
        frames = _read_video(source, max_frames)
        if not frames:
            raise ExportError(f"{source}: could not decode any frame from this video")
        return frames
    img = _read_image(source)
    if img is None:
        raise ExportError(f"{source}: not a readable image or video (corrupt, or an unsupported format)")
    return [img]


def fit(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize + centre-crop to exactly (height, width), keeping the aspect ratio (no stretching)."""
    import cv2

    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(frame, (nw, nh), interpolation=interp)
    y, x = (nh - height) // 2, (nw - width) // 2
    return np.ascontiguousarray(resized[y : y + height, x : x + width])


def to_nchw(frames: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) in [0, 255], the models' interface."""
    arr = np.stack(frames) if isinstance(frames, list) else frames
    return np.ascontiguousarray(arr.transpose(0, 3, 1, 2).astype(np.float32))


def to_nhwc_uint8(batch: np.ndarray) -> np.ndarray:
    return np.clip(batch.transpose(0, 2, 3, 1) + 0.5, 0, 255).astype(np.uint8)
