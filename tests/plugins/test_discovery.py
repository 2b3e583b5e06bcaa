import json
import shutil
import textwrap

import pytest

from stylestream.plugins import NeuralPlugin, discover_plugins, user_plugin_dirs
from stylestream.registry import UnknownNameError


def _dist(site, dist, module_code, entry_points):
    """A real installed test distribution: a module plus its .dist-info with entry_points.txt."""
    (site / f"{dist}_mod.py").write_text(textwrap.dedent(module_code))
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stylestream.plugins]\n" + entry_points)


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def test_all_three_sources(tmp_path, site, model_dir, isolated_user_dir, media):
    _dist(site, "posterize_style", """
        from stylestream.plugins import StylePlugin

        class Posterize(StylePlugin):
            name = "posterize"
            title = "Posterize"
            description = "four levels per channel"

            def apply(self, frames, params):
                return (frames // 64) * 64
    """, "posterize = posterize_style_mod:Posterize\n")
    folder = tmp_path / "styles"
    folder.mkdir()
    shutil.copy(model_dir / "lite.onnx", folder / "mosaic.onnx")
    shutil.copy(model_dir / "lite.pt", folder / "mosaic.pt")
    shutil.copy(media / "styles" / "mosaic.jpg", folder / "mosaic_thumb.jpg")
    card = {"name": "mosaic", "title": "Mosaic", "description": "tiles", "thumbnail": "mosaic_thumb.jpg",
            "format": "onnx", "source": "runs/mosaic/card.json", "verification": {"max_abs": 0.5}}
    (folder / "mosaic.json").write_text(json.dumps(card))
    shutil.copy(model_dir / "johnson.pt", isolated_user_dir / "Candy Style.pt")  # name is slugified

    plugins = discover_plugins([folder])
    assert plugins.errors == []
    names = plugins.names()
    assert names[:4] == ["original", "cartoon", "sketch", "edges"]  # built-ins first
    assert {"posterize", "mosaic", "candy-style"} <= set(names)
    infos = {i.name: i for i in plugins.infos()}
    assert infos["posterize"].source.startswith("entry point posterize_style")
    assert infos["posterize"].kind == "filter"
    mosaic = infos["mosaic"]
    assert (mosaic.kind, mosaic.title, mosaic.description) == ("neural", "Mosaic", "tiles")
    assert mosaic.thumbnail == (folder / "mosaic_thumb.jpg").resolve()
    assert mosaic.backend == "onnxruntime"  # auto on CPU prefers ORT when both files exist
    assert str(folder / "mosaic") in mosaic.source
    assert infos["candy-style"].backend == "onnxruntime"  # a .pt-only style is converted once for ORT on CPU
    assert [p["name"] for p in mosaic.to_json()["params"]] == ["strength", "stabilize", "scale"]
    json.dumps([i.to_json() for i in plugins.infos()])  # listing is JSON-serializable


def test_plugin_toml_folder(tmp_path, model_dir, media):
    folder = tmp_path / "styles" / "starry"
    folder.mkdir(parents=True)
    shutil.copy(model_dir / "johnson.onnx", folder / "net.onnx")
    shutil.copy(media / "styles" / "starry_night.jpg", folder / "thumb.jpg")
    (folder / "plugin.toml").write_text(textwrap.dedent("""
        name = "starry"
        title = "Starry Night"
        description = "van Gogh swirls"
        thumbnail = "thumb.jpg"
        model = "net.onnx"
    """))
    plugins = discover_plugins([tmp_path / "styles"], include_user_dir=False)
    assert plugins.errors == []
    plugin = plugins.get("starry")
    assert isinstance(plugin, NeuralPlugin)
    info = plugin.info(plugins.source("starry"))
    assert (info.title, info.description, info.thumbnail) == ("Starry Night", "van Gogh swirls",
                                                              (folder / "thumb.jpg").resolve())  # fmt: skip
    assert info.source == str(folder)


def test_broken_plugins_are_reported_and_skipped(tmp_path, site, model_dir):
    _dist(site, "broken_dist", "raise ImportError('needs libfoo')\n", "bad = broken_dist_mod:Thing\n")
    folder = tmp_path / "styles"
    folder.mkdir()
    shutil.copy(model_dir / "lite.onnx", folder / "good.onnx")
    (folder / "corrupt.onnx").write_bytes(b"\x08\x01garbage" * 50)
    (folder / "truncated.pt").write_bytes((model_dir / "lite.pt").read_bytes()[:500])
    shutil.copy(model_dir / "lite.onnx", folder / "cartoon.onnx")  # clashes with the built-in
    (folder / "badcard.onnx").write_bytes((model_dir / "lite.onnx").read_bytes())
    (folder / "badcard.json").write_text("{not json")
    toml_dir = folder / "notoml"
    toml_dir.mkdir()
    (toml_dir / "plugin.toml").write_text('name = "x"\nmodel = "missing.onnx"\n')

    plugins = discover_plugins([folder, tmp_path / "nope"], include_user_dir=False)
    assert "good" in plugins.names()
    for gone in ("corrupt", "truncated", "badcard", "x"):
        assert gone not in plugins.names()
    assert plugins.source("cartoon") == "builtin"
    errors = "\n".join(plugins.errors)
    assert "entry point broken_dist" in errors and "needs libfoo" in errors
    assert f"{folder / 'corrupt.onnx'}: broken model file" in errors
    assert f"{folder / 'truncated.pt'}: broken model file" in errors
    assert f"{folder / 'cartoon.onnx'}: style 'cartoon' is already provided by builtin" in errors
    assert f"{folder / 'badcard.json'}: unreadable model card" in errors
    assert "missing.onnx" in errors and str(toml_dir / "plugin.toml") in errors
    assert f"{tmp_path / 'nope'}: plugin folder not found" in errors
    assert len(plugins.errors) == 7


def test_unknown_style_lists_available():
    plugins = discover_plugins()
    with pytest.raises(UnknownNameError, match="unknown style 'mosiac'; choose one of: original, cartoon"):
        plugins.get("mosiac")


def test_user_dir_default_and_env(monkeypatch, tmp_path):
    monkeypatch.delenv("STYLESTREAM_PLUGINS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert user_plugin_dirs() == [tmp_path / "data" / "stylestream" / "plugins"]
    assert discover_plugins().errors == []  # a missing default folder is not an error
    monkeypatch.setenv("STYLESTREAM_PLUGINS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert user_plugin_dirs() == [tmp_path / "a", tmp_path / "b"]


def test_info_knows_its_source_without_being_told(model_dir):
    plugins = discover_plugins([model_dir], include_user_dir=False)
    assert plugins.get("lite").info().source == f"{model_dir / 'lite'}.{{onnx,pt}}"
    assert plugins.get("sketch").info().source == "builtin"


def test_onnx_headers_are_checked_without_loading(tmp_path, model_dir):
    """The ONNX walk reads field tags and lengths only; garbage, a cut-off file and a model without a
    graph are each reported by what is wrong."""
    import onnx

    folder = tmp_path / "styles"
    folder.mkdir()
    good = (model_dir / "lite.onnx").read_bytes()
    (folder / "cut.onnx").write_bytes(good[: len(good) // 2])
    no_graph = onnx.load(str(model_dir / "lite.onnx"))
    no_graph.ClearField("graph")
    (folder / "nograph.onnx").write_bytes(no_graph.SerializeToString())
    (folder / "text.onnx").write_text("ir_version: 8\n")
    (folder / "empty.engine").write_bytes(b"")
    (folder / "opaque.engine").write_bytes(b"\x00" * 64)  # an engine is only sized at discovery
    plugins = discover_plugins([folder], include_user_dir=False)
    errors = sorted(e.removeprefix(f"{folder}/") for e in plugins.errors)
    assert errors == [
        "cut.onnx: broken model file: truncated (ModelProto.graph runs past the end of the file)",
        "empty.engine: broken model file: empty file",
        "nograph.onnx: broken model file: not an ONNX model (no graph)",
        "text.onnx: broken model file: not an ONNX model (unexpected protobuf field 13 in ModelProto)",
    ]
    assert "opaque" in plugins.names()  # TensorRT itself says whether it can deserialize it, on first use
