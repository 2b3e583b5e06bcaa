"""`create_app(config)`: the aiohttp application behind `stylestream serve`.

Routes: `/` (the page), `/view/{session}` (a WHEP player page for OBS's Browser Source), `/api/...`
(styles, offer/answer, sessions), `/whip`, `/whep/{session}`, `/healthz`, `/metrics`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from stylestream.stream import api, interop, network, whip
from stylestream.stream import appkeys as keys
from stylestream.stream.config import ServerConfig
from stylestream.stream.metrics import CONTENT_TYPE, Metrics
from stylestream.stream.middleware import MIDDLEWARES, AccessPolicy
from stylestream.stream.sessions import SessionManager

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def set_max_bitrate(kbps: int) -> None:
    """aiortc has no bitrate API; its encoders clamp the REMB target to module constants."""
    from aiortc.codecs import h264, vpx

    bps = kbps * 1000
    for mod in (vpx, h264):
        mod.MAX_BITRATE = bps
        mod.MIN_BITRATE = min(mod.MIN_BITRATE, bps)
        mod.DEFAULT_BITRATE = min(max(mod.DEFAULT_BITRATE, bps // 2), bps)


def create_app(config: ServerConfig | None = None, *, plugins: Any = None, engine: Any = None) -> web.Application:
    """Build the server. `plugins` (a PluginSet) and `engine` (an Engine) are made from `config` when
    not given; what the app made it also closes on cleanup."""
    config = config or ServerConfig()
    config.validate()
    interop.install()  # real clients' quirks aiortc/aioice do not handle yet (FFmpeg, GStreamer)
    if config.ice_interfaces:
        network.use_interfaces(config.ice_interfaces)
    owned: list[Any] = []
    if plugins is None:
        from stylestream.plugins import discover_plugins

        plugins = discover_plugins(config.plugin_dirs or None, include_user_dir=config.include_user_plugins,
                                   max_model_mb=config.max_model_mb, triton_url=config.triton_url)  # fmt: skip
        owned.append(plugins)
    if engine is None:
        from stylestream import devices
        from stylestream.plugins import Engine
        from stylestream.plugins.options import backend_options

        devices.reserve_cores(1)  # aiortc's decoders and encoders need a core; inference takes the rest
        # No max_side here: each session's pipeline sets the processing size (adaptive, capped by it).
        engine = Engine(plugins, backend=config.backend, device=config.device,
                        backend_options=backend_options(config.backend, config.triton_url))
        owned.insert(0, engine)
    plugins.get(config.default_style)  # fail at start-up, not on the first visitor
    if config.max_bitrate_kbps:
        set_max_bitrate(config.max_bitrate_kbps)

    app = web.Application(middlewares=list(MIDDLEWARES), client_max_size=config.max_body_bytes)
    metrics = Metrics()
    metrics.watch_engine(engine)
    app[keys.CONFIG] = config
    app[keys.POLICY] = AccessPolicy(config)
    app[keys.PLUGINS] = plugins
    app[keys.ENGINE] = engine
    app[keys.THUMBNAILS] = {}
    app[keys.METRICS] = metrics
    app[keys.SESSIONS] = SessionManager(config, engine, plugins, metrics)

    app.router.add_get("/", page("index.html"))
    app.router.add_get("/view/{sid}", page("view.html"))
    app.router.add_static("/static", STATIC)
    app.router.add_get("/favicon.ico", no_favicon)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_text)
    app.add_routes(api.routes)
    app.add_routes(whip.routes)

    async def close_sessions(app: web.Application) -> None:
        n = len(app[keys.SESSIONS].sessions)
        await app[keys.SESSIONS].close_all()
        if n:
            log.info("closed %d session(s) on shutdown", n)

    async def close_owned(app: web.Application) -> None:
        for obj in owned:
            obj.close()

    app.on_shutdown.append(close_sessions)
    app.on_cleanup.append(close_owned)
    return app


def page(name: str):
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return handler


async def no_favicon(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Cache-Control": "max-age=86400"})  # browsers ask; say "none"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, "sessions": len(request.app[keys.SESSIONS].sessions)})


async def metrics_text(request: web.Request) -> web.Response:
    return web.Response(body=request.app[keys.METRICS].render(), headers={"Content-Type": CONTENT_TYPE})
