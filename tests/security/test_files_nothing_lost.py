"""Issue: nothing lost. Outputs are readable by whoever the umask allows (a container's user too), a run
killed before its first checkpoint can be resumed or started afresh, an image that would inflate to
gigabytes is refused from its header, a full or read-only disk is one clear error with nothing left
behind, and the temp files of a killed run are removed by the next one. Each case runs the real CLI on
tiny real images with a random VGG-16 (subprocesses where the process itself matters: the umask, a kill)."""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from stylestream.models import build_model, save_model
from stylestream.models.io import WriteError, atomic_write
from tests.conftest import run_cli as in_process

TINY = ["--image-size", "32", "--batch-size", "2", "--vgg-weights", "random", "--no-amp", "--no-progress",
        "--device", "cpu"]  # fmt: skip
NO_SPACE = "No space left on device (errno 28)"


def train(style: Path, data: Path, out: Path, *extra, steps: int = 2) -> list:
    return ["train", "--style", style, "--data", data, "--out", out, *TINY, "--steps", steps, *extra]


def run_cli(*args, umask: int | None = None) -> subprocess.CompletedProcess:
    """`python -m stylestream ARGS` in a fresh process (with its own umask when given)."""
    env = {**os.environ, "STYLESTREAM_PLUGINS": os.devnull, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "stylestream", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=180, env=env, preexec_fn=None if umask is None else lambda: os.umask(umask))  # fmt: skip


def cli(capsys, *args) -> tuple[int, str]:
    """The CLI in this process: (exit code, stderr)."""
    code, _, err = in_process(capsys, *args)
    return code, err


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [ln for ln in err.splitlines() if ": error: " in ln]


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def leftovers(folder: Path) -> list[str]:
    """Hidden names: temp files and scratch folders."""
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.fixture(scope="module")
def data(media: Path, tmp_path_factory) -> Path:
    """Four real photos shrunk to 40x32."""
    root = tmp_path_factory.mktemp("data")
    for src in sorted((media / "content").glob("*.jpg"))[:4]:
        with Image.open(src) as im:
            im.convert("RGB").resize((40, 32)).save(root / src.name, quality=90)
    return root


@pytest.fixture(scope="module")
def style(media: Path) -> Path:
    return media / "styles" / "mosaic.jpg"


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_video(path: Path, frames: int = 6) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            out.mux(
                s.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 40, np.uint8), format="rgb24"))
            )
        out.mux(s.encode(None))
    return path


# --------------------------------------------------------------------------------------------- modes


@contextlib.contextmanager
def umask_set(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("umask,expected", [(0o022, "0o644"), (0o077, "0o600")])
def test_every_output_gets_the_mode_the_umask_allows(umask, expected, data, style, tmp_path, capsys):
    run, exp, styled = tmp_path / "run", tmp_path / "exp", tmp_path / "styled"
    r = run_cli(*train(style, data, run), umask=umask)  # a process started under this umask
    assert r.returncode == 0, r.stderr
    clip = tiny_video(tmp_path / "clip.mp4")
    with umask_set(umask):  # the quicker commands in this process
        assert (
            cli(capsys, "export", run / "model.pt", "--format", "onnx", "--no-verify", "-o", exp / "m.onnx")[
                0
            ]
            == 0
        )
        assert cli(capsys, "stylize", "--style", "sketch", "--no-user-plugins", "--no-progress",
                   next(data.glob("*.jpg")), clip, "-o", styled)[0] == 0  # fmt: skip
    files = [run / n for n in ("model.pt", "checkpoint.pt", "card.json", "metrics.csv")]
    files += [exp / "m.onnx", exp / "m.json", *sorted(styled.iterdir())]  # stylize: an image and a video
    assert len(files) == 8
    assert {f.name: mode(f) for f in files} == {f.name: expected for f in files}
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------- resume / overwrite


def test_a_run_killed_before_its_first_checkpoint_is_no_dead_end(data, style, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    base = train(style, data, run)
    long = train(style, data, run, "--checkpoint-every", "100000", steps=100000)
    proc = subprocess.Popen([sys.executable, "-m", "stylestream", *map(str, long)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.csv").is_file() or len((run / "metrics.csv").read_text().splitlines()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, (
                "the training process did not get going"
            )
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (
        not (run / "checkpoint.pt").exists()
        and json.loads((run / "card.json").read_text())["status"] == "running"
    )
    (run / "notes.txt").write_text("mine")  # not a run file: nothing may remove it

    # a plain run refuses, naming both ways out
    code, err = cli(capsys, *base)
    assert code == 2 and error_lines(err) == [
        (
            f"stylestream train: error: --out {run} already holds a run; pass --resume to continue it, "
            "--overwrite to start it afresh, or choose another --out"
        )
    ]
    # --resume starts over from step 0 and says so
    caplog.clear()
    code, _ = cli(capsys, *base, "--resume")
    assert code == 0
    said = [r.getMessage() for r in caplog.records if "starting over from step 0" in r.getMessage()]
    restart = f"--resume: {run} has no checkpoint yet (the run stopped before its first one); starting over from step 0"
    assert said == [restart]
    with open(run / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2]  # the killed run's rows are gone
    assert json.loads((run / "card.json").read_text())["status"] == "ok"

    # --overwrite starts a finished run afresh, and nothing but run files is removed
    (run / "tensorboard").mkdir()
    code, _ = cli(capsys, *train(style, data, run, "--overwrite", steps=3))
    assert code == 0
    with open(run / "metrics.csv", newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [1, 2, 3]
    assert json.loads((run / "card.json").read_text())["total_steps"] == 3
    assert (run / "notes.txt").read_text() == "mine" and not (run / "tensorboard").exists()

    # a model.pt without a checkpoint is never silently retrained
    (run / "checkpoint.pt").unlink()
    before = (run / "model.pt").read_bytes()
    code, err = cli(capsys, *base, "--resume")
    assert code == 2 and "holds a model.pt but no checkpoint.pt" in err and "--overwrite" in err
    assert (run / "model.pt").read_bytes() == before
    code, err = cli(capsys, *base, "--resume", "--overwrite")
    assert code == 2 and "not both" in err


# ------------------------------------------------------------------------------ decompression bombs


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1-bit PNG of side x side pixels: 50 KB on disk, 1.2 GB once decoded to RGB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    rows = b"\x00" * (1 + side // 8) * 1000  # filter byte + packed bits, 1000 rows at a time
    idat = b"".join(z.compress(rows) for _ in range(side // 1000)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))  # fmt: skip
    return path


def test_an_oversized_image_is_refused_from_its_header(data, style, tmp_path, capsys, caplog, monkeypatch):
    folder = tmp_path / "in"
    shutil.copytree(data, folder)
    bomb = bomb_png(folder / "bomb.png")
    assert bomb.stat().st_size < 100_000
    with monkeypatch.context() as m:
        m.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL alone reads it: a real PNG
        with Image.open(bomb) as im:
            assert im.size == (20000, 20000) and im.mode == "1"
    too_large = f"{bomb}: image too large (400 MP; the limit is 100 MP, a guard against decompression bombs)"

    # inside a folder: skipped with one warning, every other image written
    r = run_cli("stylize", "--style", "sketch", "--no-user-plugins", folder, "-o", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in data.iterdir())
    assert [ln for ln in r.stderr.splitlines() if "bomb.png" in ln] == [
        f"WARNING stylestream.plugins.stylize_cli: skipped {too_large}; downscale it"
    ]
    # named on its own: an error
    r = run_cli("stylize", "--style", "sketch", "--no-user-plugins", bomb, "-o", tmp_path / "one.png")
    assert r.returncode == 2 and error_lines(r.stderr) == [
        f"stylestream stylize: error: {too_large}; downscale it"
    ]
    assert not (tmp_path / "one.png").exists()
    # as the style image: an error before any work
    r = run_cli(*train(bomb, data, tmp_path / "r1"))
    assert r.returncode == 2 and error_lines(r.stderr) == [
        f"stylestream train: error: {too_large}; downscale it"
    ]
    assert not (tmp_path / "r1").exists()
    # among the training images: skipped with one warning, the run completes
    caplog.clear()
    code, err = cli(capsys, *train(style, folder, tmp_path / "r2", steps=3))
    assert code == 0, err
    assert [r.getMessage() for r in caplog.records if "bomb.png" in r.getMessage()] == [
        f"skipping training image {too_large}; downscale it"
    ]
    assert json.loads((tmp_path / "r2" / "card.json").read_text())["status"] == "ok"


# ------------------------------------------------------------------------------- full / read-only disk


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a tmpfs mount, which needs root")
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=False,
                       capture_output=True, text=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        gc.collect()  # files still open (in a failed writer an exception holds) keep the mount busy
        busy = subprocess.run(["umount", str(path)], check=False, capture_output=True, text=True)
        if busy.returncode:  # detach it anyway, so no mount outlives the test, then say why
            subprocess.run(["umount", "-l", str(path)], check=True)
            pytest.fail(f"a file on the test disk was still open: {busy.stderr.strip()}")


@pytest.fixture(scope="module")
def johnson_pt(tmp_path_factory) -> Path:
    """A full-size johnson model (6.7 MB, larger than the test disks); random weights."""
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.manual_seed(0)
    save_model(build_model("johnson").eval(), path)
    return path


def test_a_full_disk_is_one_clear_error_and_leaves_nothing_behind(data, style, johnson_pt, tmp_path, capsys):
    noise = tmp_path / "noise.png"  # ~3 MB as PNG: does not fit in 1 MB
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), np.uint8)).save(noise)
    with tmpfs(tmp_path / "disk", "1m") as disk:
        code, err = cli(
            capsys, "stylize", "--style", "original", "--no-user-plugins", noise, "-o", disk / "out.png"
        )
        line = f"cannot write {disk / 'out.png'}: {NO_SPACE}; free space or choose another --output"
        assert code == 2 and error_lines(err) == [f"stylestream stylize: error: {line}"]
        assert list(disk.iterdir()) == []

        code, err = cli(
            capsys, "export", johnson_pt, "--format", "onnx", "--no-verify", "-o", disk / "m.onnx"
        )
        line = f"cannot write {disk / 'm.onnx'}: {NO_SPACE}; free space or choose another --output"
        assert code == 2 and error_lines(err) == [f"stylestream export: error: {line}"]
        assert list(disk.iterdir()) == []

        # card.json and metrics.csv fit, the checkpoint (20 MB) does not; a real process, for its stderr
        run = disk / "run"
        r = run_cli(*train(style, data, run))
        line = f"cannot write {run / 'checkpoint.pt'}: {NO_SPACE}; free space or choose another --out"
        assert r.returncode == 2 and error_lines(r.stderr) == [f"stylestream train: error: {line}"]
        card = json.loads((run / "card.json").read_text())
        assert card["status"] == "failed" and card["error"] == line
        assert sorted(p.name for p in run.iterdir()) == ["card.json", "metrics.csv"]

        # torch.save to a path reports a full disk as a bare RuntimeError: still named as the disk's error
        shutil.rmtree(run)
        with pytest.raises(WriteError) as exc:
            atomic_write(disk / "x.pt", lambda tmp: torch.save({"w": torch.zeros(1 << 20)}, tmp))
        assert (
            exc.value.line()
            == f"cannot write {disk / 'x.pt'}: {NO_SPACE}; free space or choose another --out"
        )
        assert list(disk.iterdir()) == []
        del exc  # its traceback holds torch's writer, and with it the unlinked file, open


def test_a_read_only_disk_is_one_clear_error(data, style, johnson_pt, tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "run").mkdir()
        if subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], check=False, capture_output=True
        ).returncode:
            pytest.skip("cannot remount the tmpfs read-only here")
        ro = "Read-only file system (errno 30); make it writable or choose another"
        code, err = cli(capsys, "stylize", "--style", "sketch", "--no-user-plugins", next(data.glob("*.jpg")),
                        "-o", disk / "out.png")  # fmt: skip
        assert code == 2 and error_lines(err) == [
            f"stylestream stylize: error: cannot write {disk / 'out.png'}: {ro} --output"
        ]
        code, err = cli(
            capsys, "export", johnson_pt, "--format", "onnx", "--no-verify", "-o", disk / "m.onnx"
        )
        assert code == 2 and error_lines(err) == [
            f"stylestream export: error: cannot write {disk / 'm.onnx'}: {ro} --output"
        ]
        # not even card.json can be written: still the one line
        code, err = cli(capsys, *train(style, data, disk / "run"))
        assert code == 2 and len(error_lines(err)) == 1
        assert error_lines(err)[0].startswith(f"stylestream train: error: cannot write {disk / 'run'}")
        assert err.rstrip().endswith(f"{ro} --out")
        assert [p.name for p in disk.rglob("*")] == ["run"]


# ------------------------------------------------------------------------------ stale temp files


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_temp_files_of_killed_runs_are_removed_by_the_next_run(data, tmp_path, capsys):
    dead, live = dead_pid(), os.getpid()
    out = tmp_path / "out"
    out.mkdir()

    def plant(folder: Path) -> tuple[list[Path], list[Path]]:
        stale = [folder / f".x.png.{dead}.abcd1234.tmp", folder / f".clip.mp4.{dead}.k2_9zz0a.tmp.mp4",
                 folder / f".model.pt.{live}.old00000.tmp"]  # fmt: skip
        kept = [folder / f".y.png.{live}.abcd1234.tmp", folder / ".notes.tmp", folder / f".x.png.{dead}.tmp"]
        for p in stale + kept:
            p.write_bytes(b"partial")
        day_old = time.time() - 2 * 86400  # a live pid's temp this old: the pid was reused, or another host's
        os.utime(stale[2], (day_old, day_old))
        for pid, bucket in ((dead, stale), (live, kept)):
            d = folder / f".stylestream-export-{pid}-abcd_123"
            d.mkdir()
            (d / "artifact.onnx").write_bytes(b"partial")
            bucket.append(d)
        return stale, kept

    stale, kept = plant(out)
    code, err = cli(capsys, "stylize", "--style", "sketch", "--no-user-plugins", next(data.glob("*.jpg")),
                    "-o", out / "a.png")  # fmt: skip
    assert code == 0, err
    assert [p.exists() for p in stale] == [False] * 4 and [p.exists() for p in kept] == [True] * 4

    exp = tmp_path / "exp"
    exp.mkdir()
    stale, kept = plant(exp)
    model = tmp_path / "lite.pt"
    save_model(build_model("lite", width=8, res_blocks=1).eval(), model)
    code, err = cli(capsys, "export", model, "--format", "onnx", "--no-verify", "-o", exp / "m.onnx")
    assert code == 0, err
    assert [p.exists() for p in stale] == [False] * 4 and [p.exists() for p in kept] == [True] * 4
    assert (exp / "m.onnx").is_file()
