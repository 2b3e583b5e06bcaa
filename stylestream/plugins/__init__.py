"""Styles as plugins and the engine that runs them.

    plugins = discover_plugins(["my_styles/"])      # built-ins + entry points + folders + user folder
    engine = Engine(plugins, backend="auto", device="auto", max_side=640)
    out = engine.process("cartoon", frames)          # uint8 RGB (N, H, W, 3) -> same
    out = await engine.submit("mosaic", frame)       # (H, W, 3), batched across callers
"""

from __future__ import annotations

from stylestream.plugins.backends import BACKENDS, BackendUnavailable, pick_backend
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

__all__ = [
    "BACKENDS", "BUILTINS", "ENTRY_POINT_GROUP", "SCALE", "STRENGTH", "BackendUnavailable", "Engine",
    "EngineClosed", "NeuralPlugin", "Param", "PluginInfo", "PluginSet", "StylePlugin", "discover_plugins",
    "pick_backend", "plugin_from_model", "user_plugin_dirs",
]  # fmt: skip
