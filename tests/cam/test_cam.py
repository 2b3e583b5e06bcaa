"""The cam pipeline without camera hardware: real clips through the real engine into recording,
virtual-camera (pyvirtualcam with a test backend) and preview (scripted keys) sinks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import av
import numpy as np
import pytest

from stylestream.cam import CamError
from stylestream.cam.frames import FrameMeta
from stylestream.cam.pipeline import CamPipeline, LatestFrameSlot
from stylestream.cam.preview import PreviewSink, display_problem, draw_overlay, key_command
from stylestream.cam.sinks import RecordingSink, VideoFileSink, VirtualCameraSink, virtual_camera_hint
from stylestream.cam.sources import AVSource, open_source
from stylestream.plugins import Engine, discover_plugins

SIZE = (160, 120)  # tiny frames keep the 2-core CI fast


@pytest.fixture(scope="module")
def plugins():
    return discover_plugins(include_user_dir=False, include_entry_points=False)


@pytest.fixture
def engine(plugins):
    eng = Engine(plugins, backend="auto", device="cpu")
    yield eng
    eng.close()


def decode_all(path: Path, size: tuple[int, int] = SIZE) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24", width=size[0], height=size[1]) for f in c.decode(video=0)]


def test_file_source_every_frame_keeps_count_size_order_and_style(media, engine):
    clip = media / "video" / "webcam_hungry.mkv"
    expected_in = decode_all(clip)
    sink = RecordingSink()
    stats = CamPipeline(AVSource(str(clip), SIZE, realtime=False), engine, "edges", [sink],
                        every_frame=True).run()  # fmt: skip

    assert stats.frames_in == stats.frames_out == len(expected_in) == len(sink.frames) == 49
    assert stats.dropped == 0
    assert sink.started == (160, 120, 30.0) and sink.closed
    assert [m.index for m in sink.metas] == list(range(49))
    assert {m.style for m in sink.metas} == {"edges"}
    for got, src in zip(sink.frames, expected_in):
        assert got.shape == (120, 160, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, engine.process("edges", src[None])[0])
    assert not np.array_equal(sink.frames[0], expected_in[0])  # really stylized, not passed through


class SlowStyle:
    """A style slower than the camera (100 ms a frame at 30 fps), on top of the real engine."""

    def __init__(self, engine: Engine, delay: float = 0.1):
        self.engine, self.delay = engine, delay

    def process(self, style, frames, params=None):
        time.sleep(self.delay)
        return self.engine.process(style, frames, params)


def test_latest_frame_wins_drops_frames_instead_of_building_up_latency(media, engine):
    clip = media / "video" / "webcam_hungry.mkv"  # 49 frames at 30 fps = 1.6 s, delivered in real time
    sink = RecordingSink(keep_frames=False)
    stats = CamPipeline(AVSource(str(clip), SIZE, realtime=True), SlowStyle(engine), "original", [sink],
                        warmup=False).run()  # fmt: skip

    indices = [m.index for m in sink.metas]
    assert stats.frames_in == 49
    assert stats.dropped > 10 and stats.frames_out < 30, stats.summary()
    assert indices == sorted(set(indices)), "frames must come out in capture order, none twice"
    # A queue would grow to ~3 s of delay here (1.6 s of video, 4.9 s of work); the slot keeps it at
    # about one processing time plus one frame interval.
    assert max(m.latency for m in sink.metas) < 0.6, stats.summary()
    assert stats.wall_s < 3.5


def test_latest_frame_slot_replaces_or_waits():
    slot = LatestFrameSlot()
    for i in range(3):
        assert slot.put(i)
    assert slot.get() == 2 and slot.dropped == 2
    slot.close()
    assert slot.get() is None and slot.put(9) is False


def test_loop_restarts_a_file_at_its_end(media, engine):
    clip = media / "video" / "webcam_hungry.mkv"
    sink = RecordingSink()
    CamPipeline(AVSource(str(clip), SIZE, realtime=False, loop=True), engine, "original", [sink],
                every_frame=True, max_frames=55).run()  # fmt: skip
    assert [m.index for m in sink.metas] == list(range(55))
    np.testing.assert_array_equal(sink.frames[49], sink.frames[0])


class ScriptedGUI:
    """Stands in for OpenCV's highgui: records what the preview shows, answers with scripted keys."""

    def __init__(self, keys: dict[int, str]):
        self.keys = keys
        self.shown: list[np.ndarray] = []
        self.windows: set[str] = set()

    def namedWindow(self, title, flags):
        self.windows.add(title)

    def imshow(self, title, img):
        self.shown.append(img.copy())

    def waitKey(self, ms):
        i = len(self.shown) - 1  # the frame just shown
        return ord(self.keys[i]) if i in self.keys else -1

    def getWindowProperty(self, title, prop):
        return 1.0 if title in self.windows else 0.0

    def destroyWindow(self, title):
        self.windows.discard(title)


def test_preview_keys_switch_styles_and_quit(media, engine):
    clip = media / "video" / "webcam_book.mkv"
    styles = ["original", "cartoon", "sketch", "edges"]
    # after frame 1: next; after 3: pick 4 (edges); after 5: previous; after 7: quit
    gui = ScriptedGUI({1: "n", 3: "4", 5: "p", 7: "q"})
    rec = RecordingSink()
    stats = CamPipeline(AVSource(str(clip), SIZE, realtime=False), engine, "original",
                        [PreviewSink(gui=gui), rec], styles=styles, every_frame=True).run()  # fmt: skip

    assert [m.style for m in rec.metas] == ["original"] * 2 + ["cartoon"] * 2 + ["edges"] * 2 + ["sketch"] * 2
    assert stats.frames_out == 8 and stats.styles_used == ["original", "cartoon", "edges", "sketch"]
    assert not gui.windows, "the window is closed at the end"
    # The preview shows the stylized frame in BGR with the overlay; the sinks get it without.
    shown = gui.shown[0]
    assert shown.shape == (120, 160, 3)
    np.testing.assert_array_equal(shown[60:, :, ::-1], rec.frames[0][60:])
    assert not np.array_equal(shown[:30, :, ::-1], rec.frames[0][:30])


def test_overlay_and_keys():
    img = np.zeros((120, 160, 3), np.uint8)
    draw_overlay(img, FrameMeta(0, 0.0, "edges", 0.042, 29.7))
    assert img[:30].any() and not img[60:].any()
    assert key_command(ord("q")) == "quit" and key_command(27) == "quit"
    assert key_command(ord("N")) == "next" and key_command(ord("p")) == "prev"
    assert key_command(ord("1")) == "select:0" and key_command(ord("9")) == "select:8"
    assert key_command(-1) is None and key_command(ord("x")) is None


def test_a_failing_style_chosen_live_falls_back_without_ending_the_session(media, engine):
    class Broken:
        def process(self, style, frames, params=None):
            if style == "sketch":
                raise RuntimeError("model exploded")
            return engine.process(style, frames, params)

    gui = ScriptedGUI({2: "n", 6: "q"})
    rec = RecordingSink()
    stats = CamPipeline(AVSource(str(media / "video" / "webcam_book.mkv"), SIZE, realtime=False), Broken(),
                        "cartoon", [PreviewSink(gui=gui), rec], styles=["cartoon", "sketch"],
                        every_frame=True).run()  # fmt: skip
    assert stats.failed == 1 and {m.style for m in rec.metas} == {"cartoon"} and stats.frames_out == 7


# ------------------------------------------------------------------------------------- virtual camera


class RecordingVirtualCamera:
    """A pyvirtualcam backend (its documented Backend interface) that keeps what it is sent."""

    instances: ClassVar[list[RecordingVirtualCamera]] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        import pyvirtualcam
        from pyvirtualcam.util import encode_fourcc

        assert fourcc == encode_fourcc(pyvirtualcam.PixelFormat.RGB.value)
        self.width, self.height, self.fps, self._device = width, height, fps, device or "/dev/video-test"
        self.frames: list[np.ndarray] = []
        self.closed = False
        RecordingVirtualCamera.instances.append(self)

    def send(self, frame):
        self.frames.append(frame.reshape(self.height, self.width, 3).copy())

    def close(self):
        self.closed = True

    def device(self):
        return self._device

    def native_fourcc(self):
        return None


@pytest.fixture
def test_vcam_backend():
    import pyvirtualcam
    from pyvirtualcam.camera import BACKENDS

    RecordingVirtualCamera.instances.clear()
    pyvirtualcam.register_backend("stylestream-test", RecordingVirtualCamera)
    yield "stylestream-test"
    BACKENDS.pop("stylestream-test", None)


def test_virtual_camera_sink_sends_what_the_pipeline_produces(media, engine, test_vcam_backend):
    clip = media / "video" / "webcam_hungry.mkv"
    vcam = VirtualCameraSink(device="/dev/video42", backend=test_vcam_backend)
    rec = RecordingSink()
    CamPipeline(AVSource(str(clip), SIZE, realtime=False), engine, "cartoon", [vcam, rec],
                every_frame=True).run()  # fmt: skip

    (cam,) = RecordingVirtualCamera.instances
    assert (cam.width, cam.height, cam.fps) == (160, 120, 30.0) and cam.device() == "/dev/video42"
    assert cam.closed and len(cam.frames) == len(rec.frames) == 49
    for a, b in zip(cam.frames, rec.frames):
        np.testing.assert_array_equal(a, b)


def test_virtual_camera_resizes_a_frame_of_another_size(test_vcam_backend):
    vcam = VirtualCameraSink(backend=test_vcam_backend)
    vcam.start(160, 120, 30.0)
    vcam.send(np.full((240, 320, 3), 200, np.uint8), FrameMeta(0, 0.0, "x", 0.0, 0.0))
    vcam.close()
    (cam,) = RecordingVirtualCamera.instances
    assert cam.frames[0].shape == (120, 160, 3) and (cam.frames[0] == 200).all()


def test_no_virtual_camera_backend_names_the_fix():
    # The real pyvirtualcam, asked for a device that does not exist: the error must say what to do.
    with pytest.raises(CamError) as err:
        VirtualCameraSink(device="/dev/video99").start(160, 120, 30.0)
    assert "no virtual camera could be opened" in str(err.value) and "/dev/video99" in str(err.value)
    assert "modprobe v4l2loopback" in str(err.value)
    with pytest.raises(CamError, match="unknown virtual-camera backend 'nope'.*v4l2loopback"):
        VirtualCameraSink(backend="nope").start(160, 120, 30.0)


def test_virtual_camera_hints_per_platform():
    assert "modprobe v4l2loopback" in virtual_camera_hint("Linux")
    assert "OBS" in virtual_camera_hint("Darwin") and "Start Virtual Camera" in virtual_camera_hint("Darwin")
    assert "OBS" in virtual_camera_hint("Windows") and "unitycapture" in virtual_camera_hint("Windows")


# ---------------------------------------------------------------------------------------- bad inputs


def test_missing_camera_device_or_file_has_a_precise_error(tmp_path):
    with pytest.raises(CamError, match="no camera at index 63"):
        open_source("63")
    with pytest.raises(CamError, match="no camera at /dev/video99: the device does not exist"):
        open_source("/dev/video99")
    with pytest.raises(CamError, match="not found"):
        open_source(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(CamError, match="cannot open .*junk.mp4"):
        open_source(str(junk))


def _run_damaged(media, engine, tmp_path, start: int, junk: bytes) -> object:
    data = bytearray((media / "video" / "webcam_book.mkv").read_bytes())  # 109 frames intact
    data[start : start + len(junk)] = junk
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    rec = RecordingSink(keep_frames=False)
    return CamPipeline(AVSource(str(damaged), SIZE, realtime=False), engine, "original", [rec],
                       every_frame=True).run()  # fmt: skip


def test_damaged_file_plays_what_can_be_read(media, engine, tmp_path):
    size = (media / "video" / "webcam_book.mkv").stat().st_size
    # Damage inside the picture data: the decoder conceals it and every frame still comes out.
    stats = _run_damaged(media, engine, tmp_path, size // 2, bytes(64))
    assert stats.frames_out == stats.frames_in == 109
    # Damage that breaks the container's structure: what precedes it plays, then the run ends cleanly.
    junk = np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    stats = _run_damaged(media, engine, tmp_path, size // 2, junk)
    assert stats.frames_out == stats.frames_in >= 40


def test_preview_without_display_or_gui_says_why():
    assert "DISPLAY" in display_problem(env={}, system="Linux")
    assert display_problem(env={"DISPLAY": ":0"}, system="Linux") is None
    assert display_problem(env={}, system="Darwin") is None
    import re

    import cv2

    # The project depends on opencv-python-headless: the real OpenCV refuses a window, and we say why.
    assert re.search(r"GUI:\s+NONE", cv2.getBuildInformation()), "expected a headless OpenCV build"
    with pytest.raises(CamError, match="pip install opencv-python"):
        PreviewSink(gui=cv2).start(160, 120, 30.0)


def test_video_file_sink_writes_a_playable_file(tmp_path):
    path = tmp_path / "out.mp4"
    sink = VideoFileSink(path)
    sink.start(160, 120, 30.0)
    frames = [np.full((120, 160, 3), v, np.uint8) for v in (30, 120, 220)]
    for i, f in enumerate(frames):
        sink.send(f, FrameMeta(i, 0.0, "x", 0.0, 0.0))
    assert not path.exists(), "the file appears only when complete"
    sink.close()
    got = decode_all(path)
    assert len(got) == 3 and all(abs(int(g.mean()) - int(f.mean())) < 4 for g, f in zip(got, frames))
