"""Finding styles: built-ins, Python entry points (group `stylestream.plugins`) and plugin folders.

A plugin folder holds
  NAME.pt / NAME.onnx / NAME.engine      -> the neural style NAME (several formats = one style),
  NAME.json beside them (an export's model card: name, title, description, thumbnail, ...),
  SUBFOLDER/plugin.toml (+ its model files)   -> one style described by the toml,
  SUBFOLDER/ without plugin.toml               -> scanned like the folder itself (e.g. an export dir).
Broken plugins and name clashes are reported in `PluginSet.errors` (file + why) and skipped; they
never stop the others from loading. The first source to claim a name keeps it: built-ins, then entry
points, then folders in the order given, then the user folder."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from stylestream.plugins.backends import FORMATS
from stylestream.plugins.base import PluginInfo, StylePlugin
from stylestream.plugins.filters import BUILTINS
from stylestream.plugins.neural import NeuralPlugin
from stylestream.registry import Registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "stylestream.plugins"
ENV_VAR = "STYLESTREAM_PLUGINS"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_") or "style"


def user_plugin_dirs() -> list[Path]:
    """$STYLESTREAM_PLUGINS (os.pathsep-separated) or $XDG_DATA_HOME/stylestream/plugins
    (~/.local/share/stylestream/plugins)."""
    env = os.environ.get(ENV_VAR)
    if env is not None:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return [Path(data) / "stylestream" / "plugins"]


class PluginSet:
    """The styles found, by name (a Registry, so an unknown name lists the available ones)."""

    def __init__(self) -> None:
        self._registry: Registry[StylePlugin] = Registry("style")
        self.errors: list[str] = []

    def add(self, plugin: StylePlugin, source: str) -> bool:
        name = plugin.name
        if not isinstance(name, str) or not _SLUG.match(name):
            self._error(source, f"style name {name!r} is not a slug (lowercase letters, digits, - and _)")
            return False
        if name in self._registry:
            taken = self._registry.entry(name).meta["source"]
            self._error(source, f"style {name!r} is already provided by {taken}; skipped")
            return False
        self._registry.add(name, plugin, plugin.description, source=source)
        plugin.source = source
        return True

    def _error(self, source: str | Path, why: str) -> None:
        msg = f"{source}: {why}"
        log.warning("plugin skipped: %s", msg)
        self.errors.append(msg)

    def names(self) -> list[str]:
        return self._registry.names()

    def get(self, name: str) -> StylePlugin:
        """Raises stylestream.registry.UnknownNameError listing the available styles."""
        return self._registry[name]

    def source(self, name: str) -> str:
        return self._registry.entry(name).meta["source"]

    def infos(self) -> list[PluginInfo]:
        return [e.obj.info(e.meta["source"]) for e in self._registry]

    @property
    def registry(self) -> Registry[StylePlugin]:
        return self._registry

    def __contains__(self, name: object) -> bool:
        return name in self._registry

    def __iter__(self) -> Iterator[StylePlugin]:
        return (e.obj for e in self._registry)

    def __len__(self) -> int:
        return len(self._registry)

    def close(self) -> None:
        for p in self:
            p.close()


# ----------------------------------------------------------------------------------- entry points


def _plugins_from_object(obj: Any) -> list[StylePlugin]:
    """An entry point may name a StylePlugin subclass, an instance, or a factory returning one or many."""
    if isinstance(obj, type) and issubclass(obj, StylePlugin):
        return [obj()]
    if isinstance(obj, StylePlugin):
        return [obj]
    if callable(obj):
        got = obj()
        items = [got] if isinstance(got, StylePlugin) else list(got)
        bad = [x for x in items if not isinstance(x, StylePlugin)]
        if bad:
            raise TypeError(f"factory returned {type(bad[0]).__name__}, not a StylePlugin")
        return items
    raise TypeError(f"{type(obj).__name__} is not a StylePlugin subclass, instance or factory")


def load_entry_points(plugins: PluginSet) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep.dist, "name", None) or "?"
        source = f"entry point {dist} ({ep.name} = {ep.value})"
        try:
            found = _plugins_from_object(ep.load())
        except Exception as exc:  # noqa: BLE001 -- a third-party bug must not stop the others
            plugins._error(source, f"failed to load: {type(exc).__name__}: {exc}")
            continue
        for p in found:
            plugins.add(p, source)


# ---------------------------------------------------------------------------------------- folders


def check_model_file(path: Path) -> None:
    """Cheap validity check at discovery, so a corrupt file is reported up front, not on first frame."""
    if path.stat().st_size == 0:
        raise ValueError("empty file")
    if path.suffix == ".pt":
        from stylestream.models.io import read_model_file

        read_model_file(path)
    elif path.suffix == ".onnx":
        import onnx

        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 -- protobuf errors vary
            raise ValueError(f"not a readable ONNX file ({type(exc).__name__})") from None
        if len(model.graph.input) != 1 or len(model.graph.output) != 1:
            raise ValueError("a style model needs exactly one input and one output")


def _read_card(path: Path) -> dict[str, Any]:
    card = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(card, dict):
        raise ValueError("a model card must be a JSON object")  # noqa: TRY004 -- bad content, not a bad call
    return card


def _thumbnail(base: Path, rel: Any, where: Path, plugins: PluginSet) -> Path | None:
    if not rel:
        return None
    thumb = (base / str(rel)).resolve()
    if not thumb.is_file():
        plugins._error(where, f"thumbnail {rel!r} not found (style loaded without it)")
        return None
    return thumb


def _valid_models(models: dict[str, Path], plugins: PluginSet) -> dict[str, Path]:
    ok = {}
    for fmt, path in models.items():
        try:
            check_model_file(path)
            ok[fmt] = path
        except Exception as exc:  # noqa: BLE001 -- any broken file is reported, never fatal
            plugins._error(path, f"broken model file: {exc}")
    return ok


def _scan_models(folder: Path, plugins: PluginSet) -> None:
    """Top-level model files of a folder, grouped by stem; NAME.json beside is the model card."""
    stems: dict[str, dict[str, Path]] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix in FORMATS:
            stems.setdefault(f.stem, {})[FORMATS[f.suffix]] = f
    for stem, models in stems.items():
        card: dict[str, Any] = {}
        card_path = folder / f"{stem}.json"
        if card_path.is_file():
            try:
                card = _read_card(card_path)
            except (OSError, ValueError) as exc:
                plugins._error(card_path, f"unreadable model card ({exc}); style skipped")
                continue
        models = _valid_models(models, plugins)
        if not models:
            continue
        name = str(card.get("name") or slugify(stem))
        thumb = _thumbnail(card_path.parent, card.get("thumbnail"), card_path, plugins)
        exts = sorted(p.suffix[1:] for p in models.values())
        source = str(folder / f"{stem}.{exts[0]}") if len(exts) == 1 else f"{folder / stem}.{{{','.join(exts)}}}"
        plugins.add(NeuralPlugin(name, models, str(card.get("title") or ""), str(card.get("description") or ""),
                                 thumb, card), source)  # fmt: skip


def _load_toml_plugin(folder: Path, plugins: PluginSet) -> None:
    toml_path = folder / "plugin.toml"
    try:
        meta = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        plugins._error(toml_path, f"invalid plugin.toml ({exc})")
        return
    refs = meta.get("model") or meta.get("models")
    if refs is None:
        files = [f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix in FORMATS]
    else:
        files = [folder / r for r in ([refs] if isinstance(refs, str) else refs)]
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        why = f"model file(s) {missing} not found" if missing else "no NAME.pt/.onnx/.engine model file"
        plugins._error(toml_path, why)
        return
    models: dict[str, Path] = {}
    for f in files:
        if f.suffix not in FORMATS:
            plugins._error(toml_path, f"{f.name}: unsupported model format (use .pt, .onnx or .engine)")
            return
        models[FORMATS[f.suffix]] = f
    models = _valid_models(models, plugins)
    if not models:
        return
    name = str(meta.get("name") or slugify(folder.name))
    thumb = _thumbnail(folder, meta.get("thumbnail"), toml_path, plugins)
    plugins.add(NeuralPlugin(name, models, str(meta.get("title") or ""), str(meta.get("description") or ""),
                             thumb, meta), str(folder))  # fmt: skip


def scan_folder(folder: Path, plugins: PluginSet) -> None:
    _scan_models(folder, plugins)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (sub / "plugin.toml").is_file():
            _load_toml_plugin(sub, plugins)
        else:
            _scan_models(sub, plugins)


def plugin_from_model(path: str | os.PathLike, name: str | None = None) -> NeuralPlugin:
    """A neural style straight from a model file (`stylize --style model.onnx`), card beside it if any."""
    path = Path(path)
    if path.suffix not in FORMATS:
        raise ValueError(f"{path}: not a model file (expected .pt, .onnx or .engine)")
    if not path.is_file():
        raise ValueError(f"{path}: model file not found")
    try:
        check_model_file(path)
    except Exception as exc:  # noqa: BLE001 -- reported as one clear error
        raise ValueError(f"{path}: broken model file: {exc}") from None
    card_path = path.with_suffix(".json")
    card = _read_card(card_path) if card_path.is_file() else {}
    return NeuralPlugin(name or str(card.get("name") or slugify(path.stem)), {FORMATS[path.suffix]: path},
                        str(card.get("title") or ""), str(card.get("description") or ""), None, card)  # fmt: skip


def discover_plugins(dirs: Iterable[str | os.PathLike] | None = None, include_user_dir: bool = True,
                     include_entry_points: bool = True) -> PluginSet:  # fmt: skip
    """Every style: built-ins, entry points, `dirs` (each must exist), then the user folder (if present)."""
    plugins = PluginSet()
    for entry in BUILTINS:
        plugins.add(entry.obj(), "builtin")
    if include_entry_points:
        load_entry_points(plugins)
    folders = [(Path(d).expanduser(), True) for d in (dirs or [])]
    if include_user_dir:
        folders += [(d, False) for d in user_plugin_dirs()]
    for folder, explicit in folders:
        if not folder.is_dir():
            if explicit or os.environ.get(ENV_VAR):
                plugins._error(folder, "plugin folder not found")
            continue
        try:
            scan_folder(folder, plugins)
        except OSError as exc:
            plugins._error(folder, f"cannot read plugin folder ({exc})")
    return plugins
