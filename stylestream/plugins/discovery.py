"""Finding styles: built-ins, Python entry points (group `stylestream.plugins`) and plugin folders.

A plugin folder holds
  NAME.pt / .onnx / .engine / .torchscript   -> the neural style NAME (several formats = one style; the
                                                served suffixes of the formats table, export/formats.py),
  NAME.json beside them (an export's model card: name, title, description, thumbnail, ...),
  SUBFOLDER/plugin.toml (+ its model files)   -> one style described by the toml,
  SUBFOLDER/ without plugin.toml               -> scanned like the folder itself (e.g. an export dir).
A folder in a format stylestream does not serve (a Triton repository) is reported with the reason.
Broken plugins and name clashes are reported in `PluginSet.errors` (file + why) and skipped; they
never stop the others from loading. The first source to claim a name keeps it: built-ins, then entry
points, then folders in the order given, then the user folder.

Plugin folders are untrusted input: every path a plugin names (model files, thumbnail, card, ONNX
external data) must resolve inside its own folder after symlinks, or the plugin is skipped; model
files are checked by name, size and header only (modelfiles.py), their weights load on first use."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from stylestream.card import read_card
from stylestream.export.formats import format_of, served_suffix_text, served_suffixes
from stylestream.plugins.base import PluginInfo, StylePlugin
from stylestream.plugins.filters import BUILTINS
from stylestream.plugins.modelfiles import DEFAULT_MAX_MODEL_MB, ModelTooLarge, check_model_file
from stylestream.plugins.neural import NeuralPlugin
from stylestream.plugins.paths import OutsideFolder, confined
from stylestream.plugins.thumbnails import load_thumbnail_bytes
from stylestream.registry import Registry
from stylestream.runtime.triton_repository import add_triton_styles

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "stylestream.plugins"
ENV_VAR = "STYLESTREAM_PLUGINS"
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
MAX_META_BYTES = 1024 * 1024  # plugin.toml / NAME.json


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


class _Skipped(Exception):
    """A plugin was refused; the reason is already in PluginSet.errors."""


def _skip(plugins: PluginSet, where: Path, why: str) -> _Skipped:
    plugins._error(where, why)
    return _Skipped()


def _confined(plugins: PluginSet, folder: Path, rel: Any, what: str, where: Path) -> Path:
    """confined(), with a path outside the folder refusing the whole plugin: such a plugin is hostile."""
    try:
        return confined(folder, rel, what)
    except ValueError as exc:  # OutsideFolder, or not a file name at all
        raise _skip(plugins, where, f"{exc}; plugin skipped") from None


def _read_small(path: Path, what: str) -> str:
    """A card or plugin.toml: a few hundred bytes, so a huge one is refused rather than read."""
    size = path.stat().st_size
    if size > MAX_META_BYTES:
        raise ValueError(f"{what} is {size} bytes, over the {MAX_META_BYTES // 1024} KiB limit")
    return path.read_text(encoding="utf-8")


def _read_card(path: Path) -> dict[str, Any]:
    return read_card(path, max_bytes=MAX_META_BYTES)  # the one card reader, size-limited: untrusted folder


def _thumbnail(folder: Path, rel: Any, where: Path, plugins: PluginSet) -> Path | None:
    """The style's thumbnail, or None (reason in errors) when it is missing or not an image; a path
    outside the plugin folder refuses the plugin (_Skipped)."""
    if not rel:
        return None
    try:
        thumb = confined(folder, rel, "thumbnail")
        if not thumb.is_file():
            raise ValueError(f"thumbnail {rel!r} not found")
        load_thumbnail_bytes(thumb)
    except OutsideFolder as exc:
        raise _skip(plugins, where, f"{exc}; plugin skipped") from None
    except ValueError as exc:
        plugins._error(where, f"{exc} (style loaded without it)")
        return None
    return thumb


def _valid_models(folder: Path, models: dict[str, Path], plugins: PluginSet,
                  max_mb: float) -> dict[str, Path]:  # fmt: skip
    """The model files that pass the header check; a broken or oversized one is reported and dropped,
    one that reaches outside the folder (a symlink, ONNX external data) refuses the plugin."""
    ok = {}
    for fmt, path in models.items():
        _confined(plugins, folder, path.absolute(), "model", path)  # a symlink may point anywhere
        try:
            check_model_file(path, folder, max_mb)
            ok[fmt] = path
        except OutsideFolder as exc:
            raise _skip(plugins, path, f"{exc}; plugin skipped") from None
        except ModelTooLarge as exc:
            plugins._error(path, str(exc))
        except Exception as exc:  # noqa: BLE001 -- any broken file is reported, never fatal
            plugins._error(path, f"broken model file: {exc}")
    return ok


def _report_unserved(folder: Path, plugins: PluginSet) -> None:
    """Sub-folders in a format no runtime backend serves (a Triton repository): said, not skipped silently."""
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        fmt = format_of(sub)
        if fmt is not None and fmt.backend is None:
            plugins._error(sub, fmt.not_served)


def _scan_models(folder: Path, plugins: PluginSet, max_mb: float) -> None:
    """Top-level model files of a folder, grouped by stem; NAME.json beside is the model card."""
    _report_unserved(folder, plugins)
    served = served_suffixes()
    stems: dict[str, dict[str, Path]] = {}
    for f in sorted(folder.iterdir()):
        # files, and model folders a backend serves (NAME.mlpackage: Core ML)
        is_model = f.is_file() or (f.is_dir() and format_of(f) is not None)
        if is_model and not f.name.startswith(".") and f.suffix in served:
            stems.setdefault(f.stem, {})[served[f.suffix].name] = f
    for stem, models in stems.items():
        try:
            _add_model_style(folder, stem, models, plugins, max_mb)
        except _Skipped:
            continue


def _add_model_style(folder: Path, stem: str, models: dict[str, Path], plugins: PluginSet,
                     max_mb: float) -> None:  # fmt: skip
    card: dict[str, Any] = {}
    card_path = folder / f"{stem}.json"
    if card_path.is_file():
        _confined(plugins, folder, card_path.name, "model card", card_path)
        try:
            card = _read_card(card_path)
        except (OSError, ValueError) as exc:
            raise _skip(plugins, card_path, f"unreadable model card ({exc}); style skipped") from None
    models = _valid_models(folder, models, plugins, max_mb)
    if not models:
        return
    name = str(card.get("name") or slugify(stem))
    thumb = _thumbnail(folder, card.get("thumbnail"), card_path, plugins)
    exts = sorted(p.suffix[1:] for p in models.values())
    source = str(folder / f"{stem}.{exts[0]}") if len(exts) == 1 else f"{folder / stem}.{{{','.join(exts)}}}"
    plugins.add(NeuralPlugin(name, models, str(card.get("title") or ""), str(card.get("description") or ""),
                             thumb, card, root=folder), source)  # fmt: skip


def _toml_models(folder: Path, meta: dict[str, Any], toml_path: Path, plugins: PluginSet) -> dict[str, Path]:
    """The model files plugin.toml names (`model`/`models`, relative to its folder), or all in the folder."""
    served = served_suffixes()
    refs = meta.get("model") or meta.get("models")
    if refs is None:
        files = [f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix in served]
    else:
        refs = [refs] if isinstance(refs, str) else refs
        if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
            raise _skip(plugins, toml_path, "`model`/`models` must be a file name or a list of file names")
        for r in refs:
            _confined(plugins, folder, r, "model", toml_path)
        files = [folder / r for r in refs]
    missing = [f.name for f in files if not f.is_file()]
    if missing or not files:
        why = f"model file(s) {missing} not found" if missing else f"no model file ({served_suffix_text()})"
        raise _skip(plugins, toml_path, why)
    models: dict[str, Path] = {}
    for f in files:
        if f.suffix not in served:
            raise _skip(plugins, toml_path, f"{f.name}: unsupported model format (use {served_suffix_text()})")
        models[served[f.suffix].name] = f
    return models


def _load_toml_plugin(folder: Path, plugins: PluginSet, max_mb: float) -> None:
    toml_path = folder / "plugin.toml"
    _confined(plugins, folder, toml_path.name, "plugin.toml", toml_path)
    try:
        meta = tomllib.loads(_read_small(toml_path, "plugin.toml"))
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        raise _skip(plugins, toml_path, f"invalid plugin.toml ({exc})") from None
    models = _valid_models(folder, _toml_models(folder, meta, toml_path, plugins), plugins, max_mb)
    if not models:
        return
    name = str(meta.get("name") or slugify(folder.name))
    thumb = _thumbnail(folder, meta.get("thumbnail"), toml_path, plugins)
    plugins.add(NeuralPlugin(name, models, str(meta.get("title") or ""), str(meta.get("description") or ""),
                             thumb, meta, root=folder), str(folder))  # fmt: skip


def scan_folder(folder: Path, plugins: PluginSet, max_model_mb: float = DEFAULT_MAX_MODEL_MB) -> None:
    _scan_models(folder, plugins, max_model_mb)
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            # a sub-folder is a plugin folder of its own: a symlink to elsewhere would widen what it may name
            _confined(plugins, folder, sub.name, "folder", sub)
            if format_of(sub) is not None:  # a folder-format model (reported by _scan_models above)
                continue
            if (sub / "plugin.toml").is_file():
                _load_toml_plugin(sub, plugins, max_model_mb)
            else:
                _scan_models(sub, plugins, max_model_mb)
        except _Skipped:
            continue


def is_model_path(path: str | os.PathLike) -> bool:
    """Whether `--style X` names a model (a served file suffix, or a model folder such as a Triton
    repository) rather than a style name."""
    return Path(path).suffix in served_suffixes() or format_of(Path(path)) is not None


def plugin_from_model(path: str | os.PathLike, name: str | None = None,
                      max_model_mb: float = DEFAULT_MAX_MODEL_MB) -> NeuralPlugin:  # fmt: skip
    """A neural style straight from a model file (`stylize --style model.onnx`), card beside it if any.
    The file itself was named by the user; what it names (external data) must stay in its folder."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is not None and fmt.backend is None:  # e.g. a Triton repository: say who serves it
        raise ValueError(f"{path}: {fmt.not_served}")
    if fmt is None or path.suffix not in served_suffixes():
        raise ValueError(f"{path}: not a model file (expected {served_suffix_text()})")
    if not (path.is_file() or path.is_dir()):  # (format_of found a folder format's marker in a folder)
        raise ValueError(f"{path}: model file not found")
    real = path.resolve()
    try:
        check_model_file(real, real.parent, max_model_mb)
    except (OutsideFolder, ModelTooLarge) as exc:
        raise ValueError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 -- reported as one clear error
        raise ValueError(f"{path}: broken model file: {exc}") from None
    card: dict[str, Any] = {}
    card_path = real.with_suffix(".json")
    if card_path.is_file():
        try:
            confined(real.parent, card_path.name, "model card")
            card = _read_card(card_path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{card_path}: unreadable model card ({exc})") from None
    return NeuralPlugin(name or str(card.get("name") or slugify(path.stem)), {fmt.name: real},
                        str(card.get("title") or ""), str(card.get("description") or ""), None, card,
                        root=real.parent)  # fmt: skip


def discover_plugins(dirs: Iterable[str | os.PathLike] | None = None, include_user_dir: bool = True,
                     include_entry_points: bool = True, max_model_mb: float = DEFAULT_MAX_MODEL_MB,
                     triton_url: str | None = None) -> PluginSet:  # fmt: skip
    """Every style: built-ins, entry points, `dirs` (each must exist), the user folder (if present), then
    the style models of the Triton server at `triton_url` (TritonUnreachable, a ValueError, if it is down).
    Model files are checked by name, size and header only (weights load on first use); files over
    `max_model_mb` and plugins naming paths outside their folder are skipped, with the reason in errors."""
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
            scan_folder(folder, plugins, max_model_mb)
        except OSError as exc:
            plugins._error(folder, f"cannot read plugin folder ({exc})")
    if triton_url:
        add_triton_styles(plugins, triton_url)
    return plugins
