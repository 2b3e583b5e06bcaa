"""The one place that reads and writes media files: what counts as an image or a video, finding them in
folders (recursively, everywhere), reading images (pixel-limited, EXIF-upright) and sampling video
frames, and fitting frames to a size. `stylize`, export calibration/verification, benchmarks and
training all go through here, so a suffix or a limit means the same thing in every command.

Live and streaming paths (the server's WebRTC frames, `stylize`'s video re-encoding with audio, the
camera app's sources) decode as they go and do not use the whole-file readers below."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from stylestream.models.io import ImageTooLargeError, atomic_write, open_image

log = logging.getLogger(__name__)

# Still images. (An animated GIF is a video: `stylize` keeps all its frames.)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv",
                            ".wmv", ".gif", ".y4m"})  # fmt: skip


class MediaError(ValueError):
    """An unreadable input or unwritable output; the message names the file."""


def is_image(path: Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def list_media(folder: Path, recursive: bool = True) -> tuple[list[Path], list[Path]]:
    """(images, videos) under `folder`, sorted; hidden files and folders (.git, .cache) are left out."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    files = sorted(p for p in found if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    return [p for p in files if is_image(p)], [p for p in files if is_video(p)]


def read_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 RGB (H, W, 3) upright (EXIF orientation applied), and the alpha channel if there is one.
    Raises MediaError, or ImageTooLargeError (from the header, before decoding) for an image over
    MAX_IMAGE_PIXELS, which folders skip."""
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
        raise MediaError(f"{path}: unknown image format {path.suffix!r}; use one of {sorted(IMAGE_SUFFIXES)}")
    if alpha is not None and fmt in ("PNG", "WEBP", "TIFF"):
        im.putalpha(Image.fromarray(alpha))
    kw = {"quality": 95} if fmt in ("JPEG", "WEBP") else {}
    atomic_write(path, lambda tmp: im.save(tmp, format=fmt, **kw))


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def read_video_frames(path: Path, max_frames: int = 0, spread: bool = False,
                      max_side: int | None = None) -> list[np.ndarray]:  # fmt: skip
    """uint8 RGB frames of a video (PyAV): all, or the first `max_frames`, or with `spread` that many
    spread evenly over the clip (calibration wants the whole clip, not its first second). `max_side`
    scales frames down (aspect kept, even sides). Raises MediaError naming the file."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            total = stream.frames or 0
            if not total and c.duration and stream.average_rate:  # Matroska and others do not count frames
                total = int(c.duration / 1e6 * float(stream.average_rate))
            step = max(1, total // max_frames) if spread and max_frames and total > max_frames else 1
            frames: list[np.ndarray] = []
            for i, f in enumerate(c.decode(stream)):
                if i % step:
                    continue
                if max_side and max(f.width, f.height) > max_side:
                    s = max_side / max(f.width, f.height)
                    f = f.reformat(width=max(2, round(f.width * s / 2) * 2), height=max(2, round(f.height * s / 2) * 2))
                frames.append(f.to_ndarray(format="rgb24"))
                if max_frames and len(frames) >= max_frames:
                    break
            return frames
    except (av.error.FFmpegError, IndexError, OSError) as exc:
        raise MediaError(f"{path}: not a readable video ({exc.__class__.__name__}: {exc})") from None


def load_frames(source: str | Path, max_frames: int = 16) -> list[np.ndarray]:
    """Real frames from a folder (images and videos, searched recursively), an image or a video file.

    Unreadable or oversized images inside a folder are skipped with a warning (one bad file should not
    sink a calibration set); a source that yields no frame at all is a MediaError naming it."""
    source = Path(source)
    if not source.exists():
        raise MediaError(f"{source}: no such file or folder (expected a folder of images or a video file)")
    if source.is_dir():
        images, videos = list_media(source)
        frames: list[np.ndarray] = []
        for p in images:
            if len(frames) >= max_frames:
                break
            try:
                frames.append(read_image(p)[0])
            except (MediaError, ImageTooLargeError) as exc:
                log.warning("skipped: %s", exc)
        for v in videos:
            if len(frames) >= max_frames:
                break
            try:
                frames.extend(read_video_frames(v, max_frames - len(frames), spread=True))
            except MediaError as exc:
                log.warning("skipped: %s", exc)
        if not frames:
            raise MediaError(f"{source}: no readable images or videos in this folder or below "
                             f"(looked for {', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})")  # fmt: skip
        return frames
    if is_video(source):
        frames = read_video_frames(source, max_frames, spread=True)
        if not frames:
            raise MediaError(f"{source}: could not decode any frame from this video")
        return frames
    try:
        return [read_image(source)[0]]
    except ImageTooLargeError as exc:
        raise MediaError(str(exc)) from None


def default_images() -> Path:
    """A real photo that ships with a dependency (matplotlib's sample data), used for verification and
    thumbnails when the user names no images."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


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
