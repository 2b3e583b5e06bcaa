"""Plugin folders are hostile input: every path a plugin names must stay inside its folder, after
symlinks, and a thumbnail must be an image. Each test performs the attack on real files."""

from __future__ import annotations

import json
import os
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stylestream.plugins import Engine, NeuralPlugin, PluginSet, discover_plugins, plugin_from_model
from stylestream.plugins.paths import OutsideFolder, confined
from stylestream.plugins.thumbnails import load_thumbnail_bytes
from tests.plugins import conftest as _plugin_fixtures
from tests.plugins.hostile import EXTERNAL_WEIGHT, external_data_onnx

# the plugin tests' fixtures: tiny real models, an empty user plugin folder and cache (never ~/.local)
model_dir = _plugin_fixtures.model_dir
isolated_user_dir = _plugin_fixtures.isolated_user_dir
isolated_cache = _plugin_fixtures.isolated_cache


@pytest.fixture
def outside(tmp_path, model_dir) -> Path:
    """Files outside every plugin folder, each one valid for the role it is misused in: a real PNG
    (so only the folder check can refuse it as a thumbnail), real models, the external weight."""
    d = tmp_path / "outside"
    d.mkdir()
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(d / "secret.png")
    shutil.copy(model_dir / "lite.pt", d / "other.pt")
    shutil.copy(model_dir / "lite.onnx", d / "other.onnx")
    (d / "secret.bin").write_bytes(EXTERNAL_WEIGHT.tobytes())
    (d / "card.json").write_text(json.dumps({"name": "stolen", "description": "from outside"}))
    return d


@pytest.fixture
def plugins_dir(tmp_path) -> Path:
    d = tmp_path / "plugins"
    d.mkdir()
    return d


def _toml(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "plugin.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _secrets(outside: Path) -> list[bytes]:
    return [f.read_bytes() for f in sorted(outside.iterdir())]


def _assert_nothing_leaks(plugins: PluginSet, outside: Path) -> None:
    """No API hands out an outside file: no listed path points there, and every thumbnail that
    load_thumbnail_bytes serves is not an outside file's bytes."""
    listing = json.dumps([i.to_json() for i in plugins.infos()])
    assert str(outside) not in listing
    secrets = _secrets(outside)
    for plugin in plugins:
        if plugin.thumbnail is not None:
            data, _ = load_thumbnail_bytes(plugin.thumbnail, plugin.root)
            assert data not in secrets
        for path in getattr(plugin, "models", {}).values():
            assert not Path(path).resolve().is_relative_to(outside.resolve())


def _discover(folder: Path) -> PluginSet:
    return discover_plugins([folder], include_user_dir=False, include_entry_points=False)


# ------------------------------------------------------------------- each way out of the folder


def _toml_thumbnail_absolute(plugins_dir, outside, model_dir):
    folder = plugins_dir / "evil"
    shutil.copy(model_dir / "lite.onnx", _toml(folder, f"""
        name = "evil"
        model = "net.onnx"
        thumbnail = "{outside / 'secret.png'}"
    """).parent / "net.onnx")  # fmt: skip
    return folder / "plugin.toml", f"thumbnail '{outside / 'secret.png'}' is outside the plugin folder {folder}"


def _card_thumbnail_relative(plugins_dir, outside, model_dir):
    shutil.copy(model_dir / "lite.onnx", plugins_dir / "evil.onnx")
    rel = "../../../../.." + str(outside / "secret.png")  # as deep as needed, then down to the secret
    (plugins_dir / "evil.json").write_text(json.dumps({"name": "evil", "thumbnail": rel}))
    return plugins_dir / "evil.json", f"thumbnail '{rel}' is outside the plugin folder {plugins_dir}"


def _toml_model_parent(plugins_dir, outside, model_dir):
    folder = plugins_dir / "evil"
    shutil.copy(outside / "other.pt", plugins_dir / "other.pt")  # beside the plugin's folder (a style itself)
    toml = _toml(folder, 'name = "evil"\nmodel = "../other.pt"\n')
    return toml, f"model '../other.pt' is outside the plugin folder {folder}"


def _toml_model_absolute(plugins_dir, outside, model_dir):
    folder = plugins_dir / "evil"
    toml = _toml(folder, f'name = "evil"\nmodels = ["{outside / "other.onnx"}"]\n')
    return toml, f"model '{outside / 'other.onnx'}' is outside the plugin folder {folder}"


def _model_symlink(plugins_dir, outside, model_dir):
    (plugins_dir / "evil.onnx").symlink_to(outside / "other.onnx")
    return plugins_dir / "evil.onnx", "is outside the plugin folder"


def _thumbnail_symlink(plugins_dir, outside, model_dir):
    folder = plugins_dir / "evil"
    toml = _toml(folder, 'name = "evil"\nmodel = "net.onnx"\nthumbnail = "thumb.png"\n')
    shutil.copy(model_dir / "lite.onnx", folder / "net.onnx")
    (folder / "thumb.png").symlink_to(outside / "secret.png")
    return toml, f"thumbnail 'thumb.png' is outside the plugin folder {folder}"


def _external_data(plugins_dir, outside, model_dir):
    folder = plugins_dir / "evil"
    folder.mkdir()
    shutil.copy(outside / "secret.bin", plugins_dir / "secret.bin")
    external_data_onnx(folder / "evil.onnx", "../secret.bin")
    return folder / "evil.onnx", f"external data '../secret.bin' is outside the plugin folder {folder}"


def _card_symlink(plugins_dir, outside, model_dir):
    shutil.copy(model_dir / "lite.onnx", plugins_dir / "evil.onnx")
    (plugins_dir / "evil.json").symlink_to(outside / "card.json")
    return plugins_dir / "evil.json", f"model card 'evil.json' is outside the plugin folder {plugins_dir}"


def _folder_symlink(plugins_dir, outside, model_dir):
    """A sub-folder is a plugin folder of its own: a link to elsewhere would make elsewhere the limit."""
    (plugins_dir / "evil").symlink_to(outside, target_is_directory=True)
    return plugins_dir / "evil", f"folder 'evil' is outside the plugin folder {plugins_dir}"


ATTACKS = [_toml_thumbnail_absolute, _card_thumbnail_relative, _toml_model_parent, _toml_model_absolute,
           _model_symlink, _thumbnail_symlink, _external_data, _card_symlink, _folder_symlink]  # fmt: skip


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda f: f.__name__.strip("_"))
def test_paths_outside_the_plugin_folder_skip_the_plugin(attack, plugins_dir, outside, model_dir):
    shutil.copy(model_dir / "lite.onnx", plugins_dir / "honest.onnx")  # a good neighbour still loads
    where, why = attack(plugins_dir, outside, model_dir)
    plugins = _discover(plugins_dir)
    assert "honest" in plugins.names()
    assert not {"evil", "stolen"} & set(plugins.names())
    assert len(plugins.errors) == 1, plugins.errors
    assert plugins.errors[0].startswith(f"{where}: ")
    assert why in plugins.errors[0] and plugins.errors[0].endswith("; plugin skipped")
    _assert_nothing_leaks(plugins, outside)


def test_bad_paths_in_plugin_toml_are_reported_not_fatal(plugins_dir, model_dir):
    _toml(plugins_dir / "num", 'name = "num"\nmodel = 5\n')
    _toml(plugins_dir / "nul", 'name = "nul"\nmodel = "net.onnx"\nthumbnail = 7\n')
    shutil.copy(model_dir / "lite.onnx", plugins_dir / "nul" / "net.onnx")
    plugins = _discover(plugins_dir)
    errors = "\n".join(plugins.errors)
    assert "num" not in plugins.names()
    assert "`model`/`models` must be a file name or a list of file names" in errors
    assert "nul" in plugins.names() and plugins.get("nul").thumbnail is None
    assert "thumbnail 7 is not a file name (style loaded without it)" in errors


def test_a_thumbnail_that_is_not_an_image_is_dropped(plugins_dir, model_dir):
    folder = plugins_dir / "starry"
    _toml(folder, 'name = "starry"\nmodel = "net.onnx"\nthumbnail = "thumb.png"\n')
    shutil.copy(model_dir / "lite.onnx", folder / "net.onnx")
    (folder / "thumb.png").write_text("root:x:0:0:root:/root:/bin/bash\n")  # text renamed .png
    plugins = _discover(plugins_dir)
    assert plugins.get("starry").thumbnail is None  # the style loads, without its picture
    assert plugins.errors == [(f"{folder / 'plugin.toml'}: thumbnail 'thumb.png' is not a PNG, JPEG, WebP or GIF "
                               "image (style loaded without it)")]  # fmt: skip
    with pytest.raises(ValueError, match="is not a PNG, JPEG, WebP or GIF image"):
        load_thumbnail_bytes(folder / "thumb.png")


def test_load_thumbnail_bytes_serves_only_checked_images(plugins_dir, outside, model_dir, tmp_path):
    folder = plugins_dir / "starry"
    _toml(folder, 'name = "starry"\nmodel = "net.onnx"\nthumbnail = "thumb.png"\n')
    shutil.copy(model_dir / "lite.onnx", folder / "net.onnx")
    shutil.copy(outside / "secret.png", folder / "thumb.png")
    plugin = _discover(plugins_dir).get("starry")
    assert plugin.root == folder and plugin.thumbnail == (folder / "thumb.png").resolve()
    data, ctype = load_thumbnail_bytes(plugin.thumbnail, plugin.root)
    assert (data, ctype) == ((folder / "thumb.png").read_bytes(), "image/png")

    # the file becomes a link out of the folder after discovery: serving re-checks, and refuses
    (folder / "thumb.png").unlink()
    (folder / "thumb.png").symlink_to(outside / "secret.png")
    with pytest.raises(OutsideFolder, match=f"thumbnail '.*thumb.png' is outside the plugin folder {folder}"):
        load_thumbnail_bytes(plugin.thumbnail, plugin.root)

    bomb = tmp_path / "bomb.png"  # 64 MP declared, a few KB on disk
    Image.new("1", (8000, 8000)).save(bomb)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(ValueError, match="thumbnail 'bomb.png' has 64 MP, over the 40 MP limit"):
        load_thumbnail_bytes(bomb)


def test_confined():
    root = Path(__file__).parent
    assert confined(root, "test_plugin_files.py") == Path(__file__).resolve()
    assert confined(root, Path(__file__)) == Path(__file__).resolve()  # absolute, but inside
    for rel in ("../conftest.py", "/etc/passwd", "sub/../../x"):
        with pytest.raises(OutsideFolder, match=f"path '{rel}' is outside the plugin folder {root}"):
            confined(root, rel)
    with pytest.raises(ValueError, match="is not a file name"):
        confined(root, "")


def test_external_data_is_refused_at_first_use_too(tmp_path, outside):
    """Discovery is not the only guard: a style built by code, or a file swapped after discovery, is
    checked again before ONNX Runtime reads anything it names."""
    folder = tmp_path / "p"
    folder.mkdir()
    model = external_data_onnx(folder / "evil.onnx", str(outside / "secret.bin"))
    with pytest.raises(ValueError, match=re.escape(f"evil.onnx: external data '{outside}/secret.bin' is outside")):
        plugin_from_model(model)
    plugins = PluginSet()
    plugins.add(NeuralPlugin("evil", {"onnx": model}, root=folder), str(folder))
    frames = np.zeros((1, 16, 16, 3), np.uint8)
    with Engine(plugins) as engine, pytest.raises(ValueError, match="is outside the plugin folder"):
        engine.process("evil", frames)

    # inside the folder, the same model runs: the weight multiplies each channel
    (folder / "w.bin").write_bytes(EXTERNAL_WEIGHT.tobytes())
    external_data_onnx(folder / "good.onnx", "w.bin")
    plugins = _discover(folder)
    assert "good" in plugins.names() and "evil" not in plugins.names()
    with Engine(plugins) as engine:
        out = engine.process("good", np.full((1, 16, 16, 3), 100, np.uint8))
    assert out[0, 0, 0].tolist() == [100, 50, 200]


def test_model_swapped_for_a_link_after_discovery_is_refused(tmp_path, outside, model_dir):
    folder = tmp_path / "p"
    folder.mkdir()
    shutil.copy(model_dir / "lite.onnx", folder / "late.onnx")
    plugins = _discover(folder)
    (folder / "late.onnx").unlink()
    os.symlink(outside / "other.onnx", folder / "late.onnx")
    with Engine(plugins) as engine, pytest.raises(OutsideFolder, match="late.onnx' is outside the plugin folder"):
        engine.process("late", np.zeros((1, 16, 16, 3), np.uint8))
