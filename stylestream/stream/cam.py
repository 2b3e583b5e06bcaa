"""`stylestream cam`: a camera, file or stream in; stylized frames out to a virtual camera, a preview
window, a file or memory.

A `Source` yields uint8 RGB frames; `Sink`s receive the stylized frames. Capture runs in its own thread
and hands frames to inference through a one-slot buffer where the newest frame replaces an unprocessed
one (latest-frame-wins), so a style slower than the camera drops frames instead of building up delay.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


class CamError(RuntimeError):
    """A missing camera, input, virtual-camera backend or display; the message says what to do."""


@dataclass(frozen=True)
class FrameMeta:
    """What a sink knows about a stylized frame."""

    index: int  # the source frame number, from 0; gaps are frames dropped by latest-frame-wins
    captured: float  # time.monotonic() when the source delivered the frame
    style: str
    latency: float  # seconds from capture to the stylized frame
    fps: float  # output frames per second (moving average)


def parse_size(text: str) -> tuple[int, int]:
    """'1280x720' -> (1280, 720)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 1280x720; got {text!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise ValueError(f"size {text!r}: width and height must be even and at least 16")
    return w, h


def _resize(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    import cv2

    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    shrink = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


# ---------------------------------------------------------------------------------------------- sources


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
        return _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), self._size)

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


# ------------------------------------------------------------------------------------------------ sinks

QUIT, NEXT, PREV = "quit", "next", "prev"


def key_command(key: int) -> str | None:
    """Preview keys: q/Esc quit, n/p next/previous style, 1-9 pick a style (as 'select:N', from 0)."""
    if key < 0:
        return None
    ch = chr(key & 0xFF).lower()
    if ch == "q" or key & 0xFF == 27:
        return QUIT
    if ch == "n":
        return NEXT
    if ch == "p":
        return PREV
    if ch in "123456789":
        return f"select:{int(ch) - 1}"
    return None


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
        self._cam.send(np.ascontiguousarray(_resize(frame, self._size)))
        return None

    def close(self) -> None:
        if self._cam is not None:
            self._cam.close()
            self._cam = None


def draw_overlay(bgr: np.ndarray, meta: FrameMeta) -> np.ndarray:
    """Style, fps and latency in the top-left corner (drawn in place; also returned)."""
    import cv2

    text = f"{meta.style}  {meta.fps:.1f} fps  {meta.latency * 1000:.0f} ms"
    scale = max(0.4, bgr.shape[1] / 1280)
    org = (8, int(8 + 22 * scale))
    cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(bgr, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bgr


def display_problem(env: Mapping[str, str] | None = None, system: str | None = None) -> str | None:
    """Why a window cannot be shown here, or None."""
    env = os.environ if env is None else env
    system = system or platform.system()
    if system == "Linux" and not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        return ("--preview needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set (over ssh or in "
                "a container?): run it in a desktop session or with `ssh -X`, or drop --preview and "
                "watch the --virtual-camera or an --output file instead")  # fmt: skip
    return None


class PreviewSink(Sink):
    """An OpenCV window with an fps/latency overlay; keys switch styles (n/p, 1-9) and quit (q, Esc).

    `gui` is the module with namedWindow/imshow/waitKey (OpenCV by default)."""

    def __init__(self, title: str = "stylestream", gui: Any = None):
        self.title = title
        self._gui = gui

    def start(self, width: int, height: int, fps: float) -> None:
        if self._gui is None:
            problem = display_problem()
            if problem:
                raise CamError(problem)
            import cv2

            self._gui = cv2
        try:
            self._gui.namedWindow(self.title, 0)  # 0 = cv2.WINDOW_NORMAL: resizable
        except Exception as exc:  # noqa: BLE001 - cv2.error from a build without highgui
            if "not implemented" in str(exc).lower():
                raise CamError("--preview needs OpenCV with GUI support, but this is opencv-python-headless: "
                               "pip uninstall -y opencv-python-headless && pip install opencv-python") from None
            raise CamError(f"--preview could not open a window: {exc}") from None

    def send(self, frame: np.ndarray, meta: FrameMeta) -> str | None:
        bgr = np.ascontiguousarray(frame[..., ::-1])
        self._gui.imshow(self.title, draw_overlay(bgr, meta))
        cmd = key_command(self._gui.waitKey(1))
        if cmd is None and self._gui.getWindowProperty(self.title, 4) < 1:  # 4 = WND_PROP_VISIBLE
            return QUIT  # the user closed the window
        return cmd

    def close(self) -> None:
        if self._gui is not None:
            try:
                self._gui.destroyWindow(self.title)
            except Exception as exc:  # noqa: BLE001 - the user closed it already
                log.debug("destroyWindow: %s", exc)


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

        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(_resize(frame, self._size)), format="rgb24")
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


# --------------------------------------------------------------------------------------------- pipeline


class StyleEngine(Protocol):
    """What the pipeline needs of `stylestream.plugins.Engine`."""

    def process(self, style: str, frames: np.ndarray, params: dict | None = None) -> np.ndarray: ...


class LatestFrameSlot:
    """A one-item hand-over between threads. `put` replaces an item not yet taken (counted in
    `dropped`), unless `lossless`, where it waits for the taker instead."""

    def __init__(self, lossless: bool = False):
        self.lossless = lossless
        self.dropped = 0
        self._item: Any = None
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: Any) -> bool:
        """False if the slot was closed (the taker is gone)."""
        with self._cond:
            if self.lossless:
                self._cond.wait_for(lambda: self._item is None or self._closed)
            if self._closed:
                return False
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self._cond.notify_all()
            return True

    def get(self) -> Any:
        """The newest item; None once closed and empty."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed)
            item, self._item = self._item, None
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class CamStats:
    source: str = ""
    frames_in: int = 0  # delivered by the source
    frames_out: int = 0  # stylized and sent to the sinks
    dropped: int = 0  # replaced by a newer frame before inference took them
    failed: int = 0  # frames a style raised on
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list, repr=False)
    styles_used: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000) if self.latencies else 0.0

    def summary(self) -> str:
        return (f"{self.frames_out} frames out of {self.frames_in} in {self.wall_s:.1f} s: {self.fps:.1f} fps, "
                f"latency p50 {self.latency_ms(50):.0f} ms / p95 {self.latency_ms(95):.0f} ms, "
                f"{self.dropped} dropped (latest-frame-wins), styles: {', '.join(self.styles_used)}")  # fmt: skip


class CamPipeline:
    """Source -> (capture thread, latest-frame-wins) -> engine -> sinks.

    `styles` is the list n/p/1-9 step through; `every_frame` stylizes every source frame instead
    (for files, benchmarks and tests). `run` starts and closes the sinks and closes the source."""

    def __init__(self, source: Source, engine: StyleEngine, style: str, sinks: Sequence[Sink],
                 styles: Sequence[str] | None = None, params: dict[str, Any] | None = None,
                 every_frame: bool = False, max_frames: int | None = None, warmup: bool = True):  # fmt: skip
        self.source = source
        self.engine = engine
        self.styles = list(styles or [style])
        if style not in self.styles:
            self.styles.insert(0, style)
        self.style = style
        self.sinks = list(sinks)
        self.params = params
        self.every_frame = every_frame
        self.max_frames = max_frames
        self.warmup = warmup
        self._stop = threading.Event()
        self._capture_error: BaseException | None = None

    def set_style(self, name: str) -> None:
        if name not in self.styles:
            raise CamError(f"unknown style {name!r}; choose one of: {', '.join(self.styles)}")
        if name != self.style:
            log.info("style: %s", name)
        self.style = name

    def stop(self) -> None:
        """Ask `run` to finish (thread-safe)."""
        self._stop.set()

    def _command(self, cmd: str) -> None:
        i = self.styles.index(self.style)
        if cmd == NEXT:
            self.set_style(self.styles[(i + 1) % len(self.styles)])
        elif cmd == PREV:
            self.set_style(self.styles[(i - 1) % len(self.styles)])
        elif cmd.startswith("select:"):
            n = int(cmd.split(":", 1)[1])
            if n < len(self.styles):
                self.set_style(self.styles[n])

    def _capture(self, slot: LatestFrameSlot, stats: CamStats) -> None:
        try:
            index = 0
            while not self._stop.is_set():
                img = self.source.read()
                if img is None:
                    break
                stats.frames_in += 1
                if not slot.put((index, time.monotonic(), img)):
                    break
                index += 1
        except BaseException as exc:  # noqa: BLE001 - handed to run(), which raises it in the caller's thread
            self._capture_error = exc
        finally:
            slot.close()

    def _stylize(self, img: np.ndarray, stats: CamStats) -> np.ndarray | None:
        try:
            return self.engine.process(self.style, img[None], self.params)[0]
        except Exception as exc:
            stats.failed += 1
            fallback = stats.styles_used[-1] if stats.styles_used else None
            if fallback is None or fallback == self.style:
                raise CamError(f"style {self.style!r} failed: {exc}") from exc
            # A broken style chosen live must not end the session: go back to the last one that worked.
            log.error("style %r failed (%s); back to %r", self.style, exc, fallback)
            self.style = fallback
            return None

    def run(self) -> CamStats:
        src = self.source
        stats = CamStats(source=src.description)
        slot = LatestFrameSlot(lossless=self.every_frame)
        started: list[Sink] = []
        try:
            for sink in self.sinks:
                sink.start(src.width, src.height, src.fps)
                started.append(sink)
            if self.warmup:  # model load / engine build before the first real frame, not during it
                self.engine.process(self.style, np.zeros((1, src.height, src.width, 3), np.uint8), self.params)
            capture = threading.Thread(target=self._capture, args=(slot, stats), name="cam-capture", daemon=True)
            t0 = time.monotonic()
            capture.start()
            fps = 0.0
            last = t0
            while not self._stop.is_set():
                item = slot.get()
                if item is None:
                    break
                index, captured, img = item
                out = self._stylize(img, stats)
                if out is None:
                    continue
                now = time.monotonic()
                fps = 1.0 / max(now - last, 1e-6) if fps == 0.0 else 0.9 * fps + 0.1 / max(now - last, 1e-6)
                last = now
                meta = FrameMeta(index, captured, self.style, now - captured, fps)
                stats.frames_out += 1
                stats.latencies.append(meta.latency)
                if not stats.styles_used or stats.styles_used[-1] != self.style:
                    stats.styles_used.append(self.style)
                for sink in self.sinks:
                    cmd = sink.send(out, meta)
                    if cmd == QUIT:
                        self._stop.set()
                    elif cmd:
                        self._command(cmd)
                if self.max_frames is not None and stats.frames_out >= self.max_frames:
                    break
            stats.wall_s = time.monotonic() - t0
        finally:
            self._stop.set()
            slot.close()
            if "capture" in locals():
                capture.join(timeout=5.0)
            stats.dropped = slot.dropped
            src.close()
            for sink in started:
                try:
                    sink.close()
                except Exception:  # closing one sink must not keep the others (a file) from closing
                    log.exception("closing %s failed", type(sink).__name__)
        if self._capture_error is not None:
            err = self._capture_error
            if isinstance(err, CamError):
                raise err
            raise CamError(f"reading {src.description} failed: {err}") from err
        return stats

