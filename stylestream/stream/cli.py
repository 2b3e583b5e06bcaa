"""`stylestream serve`: the WebRTC server and its page."""

from __future__ import annotations

import argparse
from pathlib import Path

from stylestream.stream.config import VIDEO_CODECS, ServerConfig

HELP = "serve the live-stylization page, WHIP ingest and WHEP playback over WebRTC"
DESCRIPTION = """\
Open http://HOST:PORT/ in a browser, allow the camera, pick a style: you see yourself stylized live.
OBS Studio 30+ can publish to http://HOST:PORT/whip?style=NAME (WHIP, H.264); any WHEP player, or
OBS's Browser Source with http://HOST:PORT/view/SESSION, plays a session's stylized output.
Browsers allow the camera only on localhost or HTTPS: use --cert/--key to serve other machines."""
EPILOG = "codecs:\n" + VIDEO_CODECS.help_text()


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ServerConfig()
    p.add_argument("--host", default=d.host, help="address to bind (default: %(default)s, this machine only)")
    p.add_argument("--port", type=int, default=d.port, help="port (default: %(default)s)")
    p.add_argument("--plugins", action="append", type=Path, default=[], metavar="DIR",
                   help="a folder of style plugins (repeatable); the user plugin folder is always scanned")
    from stylestream.plugins.backends import BACKENDS  # light: the table only

    p.add_argument("--backend", default=d.backend, choices=["auto", *BACKENDS.names()],
                   help="inference backend for neural styles (default: auto = fastest available)")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default: auto)")
    p.add_argument("--max-side", type=int, default=None, metavar="N",
                   help="scale incoming frames down so the longer side is at most N pixels (aspect kept)")
    p.add_argument("--token", default=None,
                   help="require 'Authorization: Bearer TOKEN' on the API, WHIP, WHEP and /metrics")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, metavar="N",
                   help="most concurrent streams; more get 503 (default: %(default)s)")
    p.add_argument("--cert", type=Path, default=None, metavar="FILE", help="TLS certificate (PEM) for HTTPS")
    p.add_argument("--key", type=Path, default=None, metavar="FILE", help="TLS private key (PEM) for HTTPS")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for peers behind NAT, e.g. stun:stun.example.org:3478 or "
                        "turn:USER:PASS@turn.example.org:3478 (repeatable)")  # fmt: skip
    p.add_argument("--codec", choices=VIDEO_CODECS.names(), default=d.codec,
                   help="preferred video codec (default: %(default)s); H.264 is always accepted for OBS")
    p.add_argument("--max-bitrate", type=int, default=None, metavar="KBPS",
                   help="video bitrate ceiling both ways in kbps (aiortc's default: VP8 1500, H.264 3000)")
    p.add_argument("--style", default=d.default_style, help="style for peers that name none (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host, port=args.port, plugin_dirs=list(args.plugins), backend=args.backend,
        device=args.device, max_side=args.max_side, token=args.token, max_sessions=args.max_sessions,
        cert=args.cert, key=args.key, ice_servers=list(args.ice_server), codec=args.codec,
        max_bitrate_kbps=args.max_bitrate, default_style=args.style,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import logging
    import ssl

    from aiohttp import web

    from stylestream.cli import CLIError
    from stylestream.registry import UnknownNameError
    from stylestream.stream.appkeys import PLUGINS
    from stylestream.stream.server import create_app

    config = config_from_args(args)
    try:
        app = create_app(config)
    except (ValueError, UnknownNameError) as exc:
        raise CLIError(str(exc)) from None
    plugins = app[PLUGINS]
    for err in plugins.errors:
        print(f"warning: plugin skipped: {err}")
    ssl_context = None
    if config.cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(config.cert, config.key)
        except (ssl.SSLError, OSError) as exc:
            raise CLIError(f"cannot load --cert/--key: {exc}") from None
    scheme = "https" if ssl_context else "http"
    host = "localhost" if config.host in ("127.0.0.1", "::1") else config.host
    print(f"stylestream: {len(plugins.names())} styles ({', '.join(plugins.names())})")
    print(f"stylestream: open {scheme}://{host}:{config.port}/  (WHIP: {scheme}://{host}:{config.port}/whip)")
    if config.token:
        print("stylestream: a token is required (the page asks for it)")
    if args.verbose < 2:  # per-request and per-ICE-check lines only with -vv
        for name in ("aiohttp.access", "aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        # run_app turns SIGINT/SIGTERM into a clean shutdown: on_shutdown closes every peer connection.
        web.run_app(app, host=config.host, port=config.port, ssl_context=ssl_context, print=None)
    except OSError as exc:
        raise CLIError(f"cannot listen on {config.host}:{config.port}: {exc}") from None
    return 0
