"""Model files from plugin folders: discovery reads names, sizes and headers only (a 3 GiB file costs
a stat and a few bytes), and an ONNX model is checked for the style signature before it first runs
(a Resize x200 would allocate tens of GB at 640x480)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stylestream.cli import main
from stylestream.plugins import Engine, discover_plugins
from tests.plugins import conftest as _plugin_fixtures
from tests.plugins.hostile import (
    data_dependent_resize_onnx,
    gray_onnx,
    int_input_onnx,
    resize_onnx,
    sparse_onnx,
)

GiB = 2**30
REPO = Path(__file__).resolve().parents[2]
SIGNATURE = "expected one float32 input (N, 3, H, W) -> one float32 output of the same shape"

# the plugin tests' fixtures: tiny real models, an empty user plugin folder and cache (never ~/.local)
model_dir = _plugin_fixtures.model_dir
isolated_user_dir = _plugin_fixtures.isolated_user_dir
isolated_cache = _plugin_fixtures.isolated_cache


def _discover(folder: Path, **kw):
    return discover_plugins([folder], include_user_dir=False, include_entry_points=False, **kw)


def _env(tmp_path: Path) -> dict[str, str]:
    """A child `stylestream` that sees no user plugins or cache of the machine it runs on."""
    return {**os.environ, "PYTHONPATH": str(REPO), "STYLESTREAM_PLUGINS": str(tmp_path / "no-user-plugins"),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}  # fmt: skip


@pytest.fixture
def big(tmp_path) -> Path:
    folder = tmp_path / "big"
    folder.mkdir()
    sparse_onnx(folder / "model.onnx", 3 * GiB)
    assert (folder / "model.onnx").stat().st_blocks * 512 < 1024 * 1024  # sparse: no disk is used
    return folder


def test_a_3gib_model_is_skipped_by_size_without_reading_it(big):
    t = time.perf_counter()
    plugins = _discover(big)
    assert time.perf_counter() - t < 3
    assert "model" not in plugins.names()
    assert plugins.errors == [(f"{big / 'model.onnx'}: model.onnx is 3072 MB, over --max-model-mb 1024; "
                               "raise the limit to load it")]  # fmt: skip


def test_a_3gib_model_under_a_raised_limit_is_listed_but_not_read(big, tmp_path):
    """Measured in a fresh process: peak RSS growth across discovery, after every import is done."""
    script = f"""
import json, resource, time
from pathlib import Path
from stylestream.plugins import discover_plugins
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
plugins = discover_plugins([Path({str(big)!r})], include_user_dir=False, include_entry_points=False,
                           max_model_mb=4096)
seconds = time.perf_counter() - t
rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"names": plugins.names(), "errors": plugins.errors, "seconds": seconds,
                  "rss_growth_mb": (rss1 - rss0) / 1024}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(tmp_path),
                         check=True, timeout=120).stdout  # fmt: skip
    got = json.loads(out.strip().splitlines()[-1])
    assert "model" in got["names"] and got["errors"] == []
    assert got["seconds"] < 3
    assert got["rss_growth_mb"] < 300, got  # the file is 3072 MB


def test_plugins_command_reports_the_size_limit(tmp_path, capsys):
    folder = tmp_path / "p"
    folder.mkdir()
    sparse_onnx(folder / "big.onnx", 2 * 2**20)
    assert main(["plugins", "--plugins", str(folder), "--no-user-plugins", "--max-model-mb", "1"]) == 0
    out = capsys.readouterr().out
    assert f"{folder / 'big.onnx'}: big.onnx is 2.0 MB, over --max-model-mb 1; raise the limit to load it" in out
    assert main(["plugins", "--plugins", str(folder), "--no-user-plugins", "--max-model-mb", "3"]) == 0
    out = capsys.readouterr().out
    assert any(ln.split()[:2] == ["big", "neural"] for ln in out.splitlines()) and "skipped" not in out
    with pytest.raises(SystemExit) as e:
        main(["plugins", "--max-model-mb", "0"])
    assert e.value.code == 2
    assert "--max-model-mb: must be a positive number of megabytes, got 0" in capsys.readouterr().err


def test_pt_files_are_checked_from_the_zip_directory(tmp_path, model_dir):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(model_dir / "lite.pt", folder / "good.pt")
    torch.save({"w": torch.zeros(3)}, folder / "bare.pt")  # a state_dict, not a stylestream model
    with zipfile.ZipFile(folder / "notorch.pt", "w") as z:
        z.writestr("readme.txt", "hello")
    plugins = _discover(folder, max_model_mb=1)
    assert "good" in plugins.names()
    errors = "\n".join(plugins.errors)
    assert f"{folder / 'bare.pt'}: broken model file: not a stylestream model file" in errors
    assert f"{folder / 'notorch.pt'}: broken model file: not a torch.save archive (no data.pkl)" in errors
    assert len(plugins.errors) == 2


def test_a_zip_with_too_many_entries_is_refused_from_its_end_record(tmp_path, model_dir, monkeypatch):
    """The entry count is read from the zip's last record, before millions of entries could be parsed."""
    from stylestream.plugins import modelfiles

    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(model_dir / "lite.pt", folder / "many.pt")
    with zipfile.ZipFile(folder / "many.pt") as z:
        n = len(z.namelist())
    monkeypatch.setattr(modelfiles, "MAX_ZIP_ENTRIES", n - 1)
    plugins = _discover(folder)
    assert plugins.errors == [f"{folder / 'many.pt'}: broken model file: not a stylestream model ({n} zip entries)"]
    monkeypatch.setattr(modelfiles, "MAX_ZIP_ENTRIES", n)
    assert "many" in _discover(folder).names()


HOSTILE = {
    "resize200": (resize_onnx, "the output is 1x3x12800x9600 for a 1x3x64x48 input"),
    "gray": (gray_onnx, "the output is 1x1x64x48 for a 1x3x64x48 input"),
    "int64": (int_input_onnx, "input 'x' is int64"),
    # static inference cannot tell; the probe run at 16x16 does
    "dynamic2x": (lambda p: data_dependent_resize_onnx(p, 2.0), "a check run at 1x3x16x16 returned float32 1x3x32x32"),
}  # fmt: skip


@pytest.mark.parametrize("name", HOSTILE)
def test_graphs_that_are_not_styles_are_listed_but_refused_at_first_use(name, tmp_path):
    build, why = HOSTILE[name]
    folder = tmp_path / "p"
    folder.mkdir()
    build(folder / f"{name}.onnx")
    plugins = _discover(folder)
    assert name in plugins.names() and plugins.errors == []  # its header is fine
    frames = np.zeros((1, 480, 640, 3), np.uint8)
    with Engine(plugins) as engine:
        with pytest.raises(ValueError) as e:
            engine.process(name, frames)
        assert engine.process("sketch", frames[:, :32, :32]).shape == (1, 32, 32, 3)  # others still run
    assert str(e.value) == f"{folder / name}.onnx: not a style model: {why}; {SIGNATURE}"


def test_a_graph_known_only_at_run_time_passes_when_it_is_a_style(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    data_dependent_resize_onnx(folder / "same.onnx", 1.0)  # the factor is 1 at run time
    frames = np.random.default_rng(0).integers(0, 256, (1, 24, 40, 3), dtype=np.uint8)
    with Engine(_discover(folder)) as engine:
        assert np.array_equal(engine.process("same", frames), frames)


@pytest.mark.skipif(sys.platform != "linux", reason="the probe's memory cap is RLIMIT_AS, enforced on Linux")
def test_the_probe_run_is_memory_capped(tmp_path):
    """x1000 at 16x16 asks for 3 GB: the capped child fails to allocate instead of running it."""
    model = data_dependent_resize_onnx(tmp_path / "huge.onnx", 1000.0)
    from stylestream.runtime.onnx_check import check_onnx_model

    with pytest.raises(ValueError, match=r"a check run at 1x3x16x16 failed \(it asked for 3.1 GB\)"):
        check_onnx_model(model)


def test_stylize_with_a_hostile_model_exits_2_with_one_line(tmp_path):
    model = resize_onnx(tmp_path / "that.onnx")
    img = tmp_path / "img.png"
    Image.new("RGB", (64, 48), (120, 80, 40)).save(img)
    proc = subprocess.run([sys.executable, "-m", "stylestream", "stylize", "--style", str(model), str(img),
                           "-o", str(tmp_path / "out.png")],
                          check=False, capture_output=True, text=True, env=_env(tmp_path), timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        (f"stylestream stylize: error: {model}: not a style model: the output is 1x3x12800x9600 for a 1x3x64x48 "
         f"input; {SIGNATURE}")
    ]
    assert not (tmp_path / "out.png").exists()
