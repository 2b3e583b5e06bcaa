"""`stylestream cam` as a user runs it: a real clip in, a video file out; user errors exit 2 with a
message that says what to do."""

from __future__ import annotations

import av
import pytest

from tests.conftest import run_cli as stylestream


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    return stylestream(capsys, "cam", *argv)


def test_cam_file_to_video_file(media, tmp_path, capsys):
    clip = media / "video" / "webcam_hungry.mkv"
    out_file = tmp_path / "out" / "cartoon.mp4"
    rc, out, err = run_cli(capsys, "--style", "cartoon", "--input", str(clip), "--size", "160x120",
                           "--every-frame", "--output", str(out_file), "--param", "strength=0.5")  # fmt: skip
    assert rc == 0, err
    assert "49 frames out of 49" in out and "cartoon" in out and f"wrote {out_file}" in out
    with av.open(str(out_file)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 49 and (frames[0].width, frames[0].height) == (160, 120)


def test_cam_max_frames_stops_early(media, tmp_path, capsys):
    out_file = tmp_path / "short.mkv"
    rc, out, err = run_cli(capsys, "--style", "edges", "--input", str(media / "video" / "webcam_book.mkv"),
                           "--size", "160x120", "--every-frame", "--max-frames", "10", "--output", str(out_file))
    assert rc == 0, err
    assert out.count("10 frames out of") == 1
    with av.open(str(out_file)) as c:
        assert len(list(c.decode(video=0))) == 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--style", "edges", "--input", "x.mp4"], "nothing to send the video to: add --virtual-camera"),
        (["--style", "no-such-style", "--output", "o.mp4"], "unknown style 'no-such-style'; choose one of: original"),
        (["--style", "edges", "--input", "63", "--output", "o.mp4"], "no camera at index 63"),
        (["--style", "edges", "--input", "missing.mp4", "--output", "o.mp4"], "input 'missing.mp4' not found"),
        (["--style", "edges", "--size", "big", "--output", "o.mp4"], "argument --size: expected WIDTHxHEIGHT"),
        (["--style", "edges", "--size", "641x480", "--output", "o.mp4"], "--size 641x480: width and height must"),
        (["--style", "edges", "--size", "8x8", "--output", "o.mp4"], "must be even and at least 16"),
        (["--style", "edges", "--max-side", "8", "--output", "o.mp4"], "argument --max-side: must be at least 16"),
        (["--style", "edges", "--param", "strength", "--output", "o.mp4"], "--param must look like NAME=VALUE"),
        (["--style", "edges", "--param", "zoom=2", "--output", "o.mp4"], "has no parameter(s) ['zoom']"),
        (["--style", "edges", "--plugins", "no/such/dir", "--output", "o.mp4"], "--plugins no/such/dir"),
        (["--style", "edges", "--backend", "warp-drive", "--output", "o.mp4"], "invalid choice: 'warp-drive'"),
    ],
)
def test_cam_user_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STYLESTREAM_PLUGINS", str(tmp_path / "none"))  # no user plugins leak in
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.mp4").exists()


def test_cam_preview_without_display(monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    rc, _, err = run_cli(capsys, "--style", "edges", "--preview")
    assert rc == 2 and "--preview needs a display" in err


def test_cam_virtual_camera_without_backend(media, monkeypatch, capsys):
    # The real pyvirtualcam, asked for a device that does not exist: the error says how to get one.
    rc, _, err = run_cli(capsys, "--style", "edges", "--input", str(media / "video" / "webcam_hungry.mkv"),
                         "--virtual-camera", "--vcam-device", "/dev/video99")  # fmt: skip
    assert rc == 2 and "/dev/video99 does not exist" in err and "modprobe v4l2loopback" in err


def test_cam_no_user_plugins_leaves_the_user_folder_out(media, tmp_path, monkeypatch, capsys):
    user = tmp_path / "user"
    user.mkdir()
    (user / "broken.onnx").write_bytes(b"not a model")  # reported as skipped whenever the folder is read
    monkeypatch.setenv("STYLESTREAM_PLUGINS", str(user))
    argv = ["--style", "original", "--input", str(media / "video" / "webcam_hungry.mkv"), "--size", "160x120",
            "--every-frame", "--max-frames", "2", "--output", str(tmp_path / "o.mp4")]  # fmt: skip
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 0 and "skipped plugin" in err and "broken.onnx" in err
    rc, _, err = run_cli(capsys, *argv, "--no-user-plugins")
    assert rc == 0 and "skipped plugin" not in err
