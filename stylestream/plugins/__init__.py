"""Styles as plugins and the engine that runs them.

    plugins = discover_plugins(["my_styles/"])      # built-ins + entry points + folders + user folder
    engine = Engine(plugins, backend="auto", device="auto", max_side=640)
    out = engine.process("cartoon", frames)          # uint8 RGB (N, H, W, 3) -> same
    out = await engine.submit("mosaic", frame)       # (H, W, 3), batched across callers
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stylestream.runtime import BACKENDS, BackendUnavailable, pick_backend  # light: no ML library

if TYPE_CHECKING:
    from stylestream.plugins.base import STRENGTH, Param, PluginInfo, StylePlugin
    from stylestream.plugins.discovery import (
        ENTRY_POINT_GROUP,
        PluginSet,
        discover_plugins,
        plugin_from_model,
        user_plugin_dirs,
    )
    from stylestream.plugins.engine import Engine, EngineClosed
    from stylestream.plugins.filters import BUILTINS
    from stylestream.plugins.neural import SCALE, NeuralPlugin

# Loaded on first use, so that light modules of this package (options, the command modules) can be
# imported to build `stylestream --help` without OpenCV.
_HOMES = {
    "base": ["STRENGTH", "Param", "PluginInfo", "StylePlugin"],
    "discovery": ["ENTRY_POINT_GROUP", "PluginSet", "discover_plugins", "plugin_from_model", "user_plugin_dirs"],
    "engine": ["Engine", "EngineClosed"],
    "filters": ["BUILTINS"],
    "neural": ["SCALE", "NeuralPlugin"],
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BACKENDS", "BUILTINS", "ENTRY_POINT_GROUP", "SCALE", "STRENGTH", "BackendUnavailable", "Engine",
    "EngineClosed", "NeuralPlugin", "Param", "PluginInfo", "PluginSet", "StylePlugin", "discover_plugins",
    "pick_backend", "plugin_from_model", "user_plugin_dirs",
]  # fmt: skip
