"""Typed keys for what the app holds (aiohttp's AppKey)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from stylestream.stream.config import ServerConfig
from stylestream.stream.metrics import Metrics
from stylestream.stream.sessions import SessionManager

CONFIG = web.AppKey("config", ServerConfig)
PLUGINS = web.AppKey("plugins", Any)
ENGINE = web.AppKey("engine", Any)
THUMBNAILS = web.AppKey("thumbnails", dict)  # style name -> rendered JPEG bytes
METRICS = web.AppKey("metrics", Metrics)
SESSIONS = web.AppKey("sessions", SessionManager)
POLICY = web.AppKey("policy", Any)  # middleware.AccessPolicy (imported there; avoids a cycle)
