"""Frames in: a local camera through OpenCV, or a video file or stream URL through PyAV.

A `Source` yields uint8 RGB frames at its own pace; the pipeline reads it from a capture thread."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stylestream.cam import CamError
from stylestream.cam.frames import resize_rgb

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


class Source:
    """Frames in. `read` returns uint8 RGB (H, W, 3), or None when the input has ended."""

    width: int
    height: int
    fps: float
    live: bool  # a camera or stream (frames come at their own pace) rather than a file
    description: str

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _camera_hint() -> str:
    system = platform.system()
    if system == "Linux":
        found = sorted(str(p) for p in Path("/dev").glob("video*"))
        listed = f"found: {', '.join(found)}" if found else "no /dev/video* devices exist on this machine"
        return f"{listed}; list cameras with `v4l2-ctl --list-devices`"
    if system == "Darwin":
        return "allow camera access for your terminal in System Settings -> Privacy & Security -> Camera"
    return "close other apps that use the camera (Zoom, Teams, OBS) and try the next index"


class OpenCVCameraSource(Source):
    """A local camera by index (0, 1, ...) or device path (/dev/video2) through OpenCV."""

    live = True

    def __init__(self, device: int | str, size: tuple[int, int] | None = None, fps: float | None = None):
        import cv2

        self.description = f"camera {device}"
        if isinstance(device, str) and device.startswith("/dev/") and not Path(device).exists():
            raise CamError(f"no camera at {device}: the device does not exist ({_camera_hint()})")
        self._cap = cv2.VideoCapture(device)
        if not self._cap.isOpened():
            self._cap.release()
            raise CamError(f"no camera at {'index ' if isinstance(device, int) else ''}{device}: "
                           f"OpenCV could not open it ({_camera_hint()})")  # fmt: skip
        if size:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])
        if fps:
            self._cap.set(cv2.CAP_PROP_FPS, fps)
        # The capture thread drains the camera continuously; a deep driver queue would only add delay.
        self._cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        # Some drivers open a busy or virtual device and then deliver nothing: fail now, not later.
        ok, first = self._cap.read()
        if not ok or first is None:
            self._cap.release()
            raise CamError(f"camera {device} opened but delivered no frame; is another application using it?")
        native = (first.shape[1], first.shape[0])
        if size and native != size:
            log.info("camera %s gives %dx%d; resizing to %dx%d", device, *native, *size)
        self._size = size
        self.width, self.height = size or native
        self.fps = float(fps or self._cap.get(cv2.CAP_PROP_FPS) or 30.0)
        self._pending: np.ndarray | None = first

    def read(self) -> np.ndarray | None:
        import cv2

        bgr, self._pending = self._pending, None
        if bgr is None:
            for _ in range(10):  # a few dropped grabs are normal; a run of them means it is gone
                ok, bgr = self._cap.read()
                if ok:
                    break
            else:
                log.warning("%s stopped delivering frames (unplugged?)", self.description)
                return None
        return resize_rgb(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._size)

    def close(self) -> None:
        self._cap.release()


class AVSource(Source):
    """A video file or stream URL (rtsp://, http://, srt://, ...) decoded by PyAV.

    Files play in real time by default (paced by their timestamps), as a camera would deliver them;
    `realtime=False` delivers every frame as fast as it decodes (benchmarks, tests, batch jobs);
    `limit` ends the input after that many frames."""

    def __init__(self, path_or_url: str, size: tuple[int, int] | None = None,
                 realtime: bool = True, loop: bool = False, limit: int | None = None):  # fmt: skip
        import av

        self.live = "://" in path_or_url and not path_or_url.startswith("file:")
        self.description = path_or_url
        if not self.live and not Path(path_or_url).is_file():
            raise CamError(f"input {path_or_url!r} not found: give a camera index (0), a device "
                           "(/dev/video0), a video file or a stream URL")  # fmt: skip
        try:
            # Live inputs: don't let FFmpeg buffer ahead, and don't hang forever on a dead server.
            options = {"fflags": "nobuffer", "flags": "low_delay"} if self.live else {}
            self._container = av.open(path_or_url, options=options, timeout=10.0 if self.live else None)
        except (av.error.FFmpegError, OSError) as exc:
            raise CamError(f"cannot open {path_or_url!r} as video: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise CamError(f"{path_or_url!r} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        ctx = self._stream.codec_context
        self._size = size
        self.width, self.height = size or (ctx.width, ctx.height)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 30.0
        self.realtime = realtime and not self.live
        self.loop = loop and not self.live
        self.corrupt_packets = 0
        self.limit = limit
        self._delivered = 0
        self._frames = self._decode()
        self._clock0: float | None = None  # monotonic time of media time 0
        self._offset = 0.0  # media time added per loop
        self._last_time = 0.0

    def _decode(self) -> Iterator[Any]:
        import av

        for packet in self._container.demux(self._stream):
            try:
                yield from packet.decode()
            except av.error.InvalidDataError as exc:  # a damaged packet: skip it, keep the stream
                self.corrupt_packets += 1
                log.warning("%s: skipping a corrupt packet (%s)", self.description, exc)

    def read(self) -> np.ndarray | None:
        if self.limit is not None and self._delivered >= self.limit:
            return None
        frame = next(self._frames, None)
        if frame is None and self.loop:
            self._offset += self._last_time + 1.0 / self.fps
            self._container.seek(0)
            self._frames = self._decode()
            frame = next(self._frames, None)
        if frame is None:
            return None
        t = frame.time or 0.0
        self._last_time = t
        if self.realtime:
            now = time.monotonic()
            if self._clock0 is None:
                self._clock0 = now - (t + self._offset)
            wait = self._clock0 + t + self._offset - now
            if wait > 0:
                time.sleep(wait)
        self._delivered += 1
        return frame.to_ndarray(format="rgb24", width=self.width, height=self.height)

    def close(self) -> None:
        self._container.close()


def open_source(spec: str, size: tuple[int, int] | None = None, fps: float | None = None,
                realtime: bool = True, loop: bool = False) -> Source:  # fmt: skip
    """'0' or '/dev/video2' -> a camera; anything else -> a file or URL through PyAV."""
    if spec.isdigit():
        return OpenCVCameraSource(int(spec), size, fps)
    if spec.startswith("/dev/video"):
        return OpenCVCameraSource(spec, size, fps)
    return AVSource(spec, size, realtime=realtime, loop=loop)
