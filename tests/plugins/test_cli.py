import json
import shutil
import subprocess
from fractions import Fraction

import av
import numpy as np
import pytest
from PIL import Image

from stylestream.cli import main


def _probe(path):
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        return n, v.codec_context.width, v.codec_context.height, v.average_rate, len(c.streams.audio)


def test_plugins_table_and_json(model_dir, tmp_path, capsys):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(model_dir / "lite.onnx", folder / "mosaic.onnx")
    (folder / "broken.pt").write_bytes(b"junk")
    assert main(["plugins", "--plugins", str(folder)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "BACKEND", "TITLE", "SOURCE"]
    assert any(ln.split()[:3] == ["mosaic", "neural", "onnxruntime"] and str(folder) in ln for ln in lines)
    assert any(ln.split()[:4] == ["cartoon", "filter", "opencv", "Cartoon"] for ln in lines)
    assert f"{folder / 'broken.pt'}: broken model file" in out
    assert main(["plugins", "--plugins", str(folder), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {s["name"]: s for s in data["styles"]}
    assert by_name["mosaic"]["kind"] == "neural" and by_name["mosaic"]["backend"] == "onnxruntime"
    assert by_name["sketch"]["params"][0]["name"] == "strength"
    assert len(data["errors"]) == 1


def test_stylize_images_and_folders(media, tmp_path, model_dir, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.open(media / "content" / "chicago.jpg").resize((100, 75)).save(src / "a.jpg")
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 128
    Image.fromarray(rgba).save(src / "sub" / "b.png")
    (src / "notes.txt").write_text("ignored")

    out = tmp_path / "one.png"
    assert main(["stylize", "--style", "cartoon", str(src / "a.jpg"), "-o", str(out)]) == 0
    assert Image.open(out).size == (100, 75)

    dst = tmp_path / "out"
    assert main(["stylize", "--style", str(model_dir / "lite.onnx"), str(src), "-o", str(dst)]) == 0
    assert "runs on onnxruntime (CPU)" in capsys.readouterr().out
    a = Image.open(dst / "a.jpg")
    b = Image.open(dst / "sub" / "b.png")
    assert a.size == (100, 75) and b.size == (40, 30)
    assert b.mode == "RGBA" and np.asarray(b)[..., 3].max() == 128  # alpha kept
    assert not (dst / "notes.txt").exists()
    # existing outputs are not overwritten silently
    with pytest.raises(SystemExit) as e:
        main(["stylize", "--style", "sketch", str(src), "-o", str(dst)])
    assert e.value.code == 2
    assert "already exists (use --overwrite" in capsys.readouterr().err


def test_stylize_user_errors(media, tmp_path, capsys):
    img = media / "content" / "amber.jpg"
    with pytest.raises(SystemExit) as e:
        main(["stylize", "--style", "mosiac", str(img), "-o", str(tmp_path / "x.jpg")])
    assert e.value.code == 2
    assert "unknown style 'mosiac'; choose one of: original, cartoon, sketch" in capsys.readouterr().err

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff garbage")
    good = tmp_path / "good.jpg"
    shutil.copy(img, good)
    with pytest.raises(SystemExit) as e:
        main(["stylize", "--style", "edges", str(corrupt), str(good), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"{corrupt}: not a readable image" in err and "1 of 2 input(s) failed (1 written)" in err
    assert (tmp_path / "o" / "good.jpg").is_file()  # the good input was still written

    with pytest.raises(SystemExit):
        main(["stylize", "--style", "edges", str(good), "-o", str(tmp_path / "y.jpg"), "--param", "bogus=1"])
    assert "no parameter(s) ['bogus']" in capsys.readouterr().err


def test_video_round_trip_keeps_frames_size_and_rate(media, tmp_path, model_dir, capsys):
    src = media / "video" / "webcam_walk.mkv"
    dst = tmp_path / "walk.mp4"
    rc = main(["stylize", "--style", "lite", "--plugins", str(model_dir), str(src), "-o", str(dst),
               "--max-side", "320", "--no-progress"])  # fmt: skip
    assert rc == 0
    assert "89 frames 640x480 @ 30 fps" in capsys.readouterr().out
    n, w, h, rate, _ = _probe(dst)
    assert (n, w, h, rate) == (89, 640, 480, Fraction(30))
    with av.open(str(dst)) as c:  # the content is stylized, not a copy
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with av.open(str(src)) as c:
        orig = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - orig).mean() > 10


def test_video_audio_is_copied(media, tmp_path):
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg, "ffmpeg is required to build the test clip with audio"
    clip = tmp_path / "with_audio.mp4"
    subprocess.run([ffmpeg, "-v", "error", "-i", str(media / "video" / "webcam_book.mkv"), "-f", "lavfi",
                    "-i", "sine=frequency=440:duration=1", "-t", "1", "-vf", "scale=160:120", "-c:v", "libx264",
                    "-c:a", "aac", "-shortest", str(clip)], check=True)  # fmt: skip
    n_in, *_ = _probe(clip)
    with av.open(str(clip)) as c:
        a_in = [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.dts is not None]
    out = tmp_path / "styled.mkv"
    assert main(["stylize", "--style", "sketch", str(clip), "-o", str(out), "--no-progress"]) == 0
    n, w, h, rate, n_audio = _probe(out)
    assert (n, w, h, rate, n_audio) == (n_in, 160, 120, Fraction(30), 1)
    with av.open(str(out)) as c:
        a_out = [bytes(p) for p in c.demux(audio=0) if p.dts is not None]
        assert c.streams.audio[0].codec_context.name == "aac"
    assert a_out == [b for _, b in a_in]  # the audio packets are copied bit for bit


def test_corrupt_video_names_the_file_and_leaves_nothing(tmp_path, capsys):
    tmp_path = tmp_path / "work"
    tmp_path.mkdir()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    out = tmp_path / "o.mp4"
    with pytest.raises(SystemExit) as e:
        main(["stylize", "--style", "sketch", str(bad), "-o", str(out), "--no-progress"])
    assert e.value.code == 2
    assert f"{bad}: not a readable video" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [bad]
