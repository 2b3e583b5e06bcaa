"""Frames out: a virtual camera, a video file, memory (tests, benchmarks) or a progress line.

A `Sink` is started with the source's size and frame rate, receives each stylized frame with its
`FrameMeta`, and may answer with a command from the user (QUIT, NEXT, PREV or 'select:N')."""

from __future__ import annotations

import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from stylestream.cam import CamError
from stylestream.cam.frames import FrameMeta, resize_rgb

log = logging.getLogger(__name__)

# Commands a sink may return (the preview window's keys); 'select:N' picks style N, from 0.
QUIT, NEXT, PREV = "quit", "next", "prev"


class Sink:
    """Frames out. `send` may return a command (QUIT, NEXT, PREV, 'select:N') from the user."""

    def start(self, width: int, height: int, fps: float) -> None:
        pass

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class RecordingSink(Sink):
    """Keeps what it was sent (frames only if `keep_frames`): for tests, benchmarks and callers."""

    def __init__(self, keep_frames: bool = True):
        self.keep_frames = keep_frames
        self.frames: list[np.ndarray] = []
        self.metas: list[FrameMeta] = []
        self.started: tuple[int, int, float] | None = None
        self.closed = False

    def start(self, width: int, height: int, fps: float) -> None:
        self.started = (width, height, fps)

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        if self.keep_frames:
            self.frames.append(frame.copy())
        self.metas.append(meta)
        return None

    def close(self) -> None:
        self.closed = True


class ProgressSink(Sink):
    """A live status line on stderr: frames, style, fps and latency."""

    def __init__(self) -> None:
        self._bar: Any = None

    def start(self, width: int, height: int, fps: float) -> None:
        from tqdm import tqdm

        self._bar = tqdm(desc="cam", unit="frame", dynamic_ncols=True)

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        self._bar.set_postfix_str(f"{meta.style} {meta.fps:.1f} fps {meta.latency * 1000:.0f} ms", refresh=False)
        self._bar.update()
        return None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def virtual_camera_hint(system: str | None = None) -> str:
    """How to get a virtual-camera backend for pyvirtualcam on this platform."""
    system = system or platform.system()
    if system == "Linux":
        return ("On Linux the virtual camera is v4l2loopback: `sudo apt install v4l2loopback-dkms` "
                "(or your distribution's package), then `sudo modprobe v4l2loopback devices=1 "
                "exclusive_caps=1 card_label=stylestream` (exclusive_caps=1 lets Chrome, Zoom and Meet "
                "see it); pick the device with --vcam-device /dev/videoN.")  # fmt: skip
    if system == "Darwin":
        return ("On macOS the virtual camera is OBS's: install OBS Studio 30+, click 'Start Virtual "
                "Camera' once and allow the system extension, then stop it in OBS (one app at a time "
                "can feed it).")  # fmt: skip
    if system == "Windows":
        return ("On Windows install OBS Studio 26+ (its Virtual Camera is registered on install; OBS "
                "must not be sending to it at the same time) or Unity Capture (--vcam-backend unitycapture).")
    return f"pyvirtualcam has no virtual-camera backend for {system}."


class VirtualCameraSink(Sink):
    """Frames to a virtual camera (pyvirtualcam: v4l2loopback, OBS Virtual Camera, Unity Capture)."""

    def __init__(self, device: str | None = None, backend: str | None = None):
        self.device = device
        self.backend = backend
        self._cam: Any = None
        self._size: tuple[int, int] = (0, 0)

    def start(self, width: int, height: int, fps: float) -> None:
        try:
            import pyvirtualcam
        except ImportError:
            raise CamError("--virtual-camera needs pyvirtualcam: pip install 'stylestream[cam]'. "
                           + virtual_camera_hint()) from None  # fmt: skip
        known = list(pyvirtualcam.camera.BACKENDS)
        if self.backend and self.backend not in known:
            raise CamError(f"unknown virtual-camera backend {self.backend!r}; on this platform pyvirtualcam "
                           f"has: {', '.join(known) or 'none'}. " + virtual_camera_hint())  # fmt: skip
        if not known:
            raise CamError("no virtual-camera backend: " + virtual_camera_hint())
        try:
            self._cam = pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB,
                                            device=self.device, backend=self.backend)  # fmt: skip
        except (RuntimeError, ValueError, OSError) as exc:
            raise CamError(f"no virtual camera could be opened ({str(exc).strip()}). "
                           + virtual_camera_hint()) from None  # fmt: skip
        self._size = (width, height)
        log.info("virtual camera: %s (%s backend), %dx%d @ %g fps",
                 self._cam.device, self._cam.backend, width, height, fps)  # fmt: skip

    @property
    def camera_device(self) -> str:
        return self._cam.device if self._cam is not None else ""

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        # A virtual camera has one fixed size; a style that changes size must not break it.
        self._cam.send(np.ascontiguousarray(resize_rgb(frame, self._size)))
        return None

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


class VideoFileSink(Sink):
    """Frames to a video file (H.264 in .mp4/.mkv/.mov, else the container's default codec).

    Writes to NAME.part and renames on close, so an interrupted run never leaves a torn file at NAME."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._container: Any = None

    def start(self, width: int, height: int, fps: float) -> None:
        import av

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fmt = self.path.suffix.lstrip(".") or None
        try:
            self._container = av.open(str(self._part), "w", format={"mkv": "matroska", "mov": "mov"}.get(
                fmt or "", fmt))  # fmt: skip
        except (av.error.FFmpegError, ValueError) as exc:
            raise CamError(f"cannot write {self.path}: {exc} (use .mp4 or .mkv)") from None
        from fractions import Fraction

        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"preset": "veryfast", "crf": "20"}
        self._size = (width, height)
        self._n = 0

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        import av

        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(resize_rgb(frame, self._size)), format="rgb24")
        vf.pts = self._n
        self._n += 1
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        return None

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        os.replace(self._part, self.path)
