"""`stylestream serve`: the WebRTC server and its page."""

from __future__ import annotations

import argparse
from pathlib import Path

from stylestream.plugins.options import add_engine_arguments, add_plugin_arguments
from stylestream.stream.config import VIDEO_CODECS, ServerConfig

TOKEN_ENV = "STYLESTREAM_TOKEN"
ADMIN_TOKEN_ENV = "STYLESTREAM_ADMIN_TOKEN"

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
    add_plugin_arguments(p)
    add_engine_arguments(p)
    auth = p.add_argument_group("access (see README: Security)")
    auth.add_argument("--token", default=None,
                      help="require 'Authorization: Bearer TOKEN' on the API, WHIP, WHEP and /metrics (also "
                           f"${TOKEN_ENV} or --token-file, which keep it out of `ps`). Binding a non-loopback "
                           "address without one generates a random token and prints the page URL carrying it")
    auth.add_argument("--token-file", type=Path, default=None, metavar="FILE", help="read the token from FILE")
    auth.add_argument("--no-auth", action="store_true",
                      help="serve a non-loopback address with NO token: anyone who reaches the port can "
                           "stream and watch")
    auth.add_argument("--admin-token", default=None, metavar="TOKEN",
                      help=f"a second token (or ${ADMIN_TOKEN_ENV}) that may list every session "
                           "(GET /api/sessions); without it nobody can")
    auth.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                      help="another name clients use for this server (Host header check against DNS "
                           "rebinding), e.g. behind a proxy; '*' accepts any (repeatable)")
    auth.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                      help="let pages from ORIGIN (https://player.example.org) call the API, WHIP and WHEP "
                           "(repeatable; with a token every origin may, as pages must send it)")
    auth.add_argument("--max-candidates", type=int, default=d.max_candidates, metavar="N",
                      help="ICE candidates accepted per offer or trickle PATCH (default: %(default)s)")
    auth.add_argument("--max-connections-per-ip", type=int, default=d.max_connections_per_ip, metavar="N",
                      help="open HTTP connections per client address (default: %(default)s)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, metavar="N",
                   help="most concurrent streams; more get 503 (default: %(default)s)")
    p.add_argument("--cert", type=Path, default=None, metavar="FILE", help="TLS certificate (PEM) for HTTPS")
    p.add_argument("--key", type=Path, default=None, metavar="FILE", help="TLS private key (PEM) for HTTPS")
    p.add_argument("--ice-server", action="append", default=[], metavar="URL",
                   help="STUN/TURN server for peers behind NAT, e.g. stun:stun.example.org:3478 or "
                        "turn:USER:PASS@turn.example.org:3478 (repeatable)")  # fmt: skip
    p.add_argument("--target-fps", type=float, default=ServerConfig().target_fps, metavar="FPS",
                   help="hold this output frame rate per session by adapting the processing size between "
                        "128 px and the input size (or --max-side); output keeps the input size; 0: off "
                        "(default: %(default)g)")
    p.add_argument("--ice-interface", action="append", default=[], metavar="NAME",
                   help="offer ICE candidates only on this network interface (repeatable); 'lo' keeps a "
                        "single-machine setup on loopback (default: every interface but lo)")
    p.add_argument("--public-ip", default=None, metavar="ADDR",
                   help="announce ADDR instead of the host address (1:1 NAT: Docker port mapping, a cloud "
                        "VM's public address); forward the UDP ports to this machine")
    p.add_argument("--codec", choices=VIDEO_CODECS.names(), default=d.codec,
                   help="preferred video codec (default: %(default)s); H.264 is always accepted for OBS")
    p.add_argument("--max-bitrate", type=int, default=None, metavar="KBPS",
                   help="video bitrate ceiling both ways in kbps (aiortc's default: VP8 1500, H.264 3000)")
    p.add_argument("--style", default=d.default_style, help="style for peers that name none (default: %(default)s)")


def read_token(args: argparse.Namespace) -> str | None:
    """--token, else --token-file, else $STYLESTREAM_TOKEN."""
    import os

    from stylestream.cli import CLIError

    given = [n for n, v in (("--token", args.token), ("--token-file", args.token_file)) if v]
    if len(given) > 1:
        raise CLIError("give the token once: --token or --token-file")
    if args.token_file:
        try:
            token = args.token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read --token-file {args.token_file}: {exc}") from None
        if not token:
            raise CLIError(f"--token-file {args.token_file} is empty")
        return token
    return args.token or os.environ.get(TOKEN_ENV) or None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    import os

    return ServerConfig(
        host=args.host, port=args.port, plugin_dirs=list(args.plugins), include_user_plugins=not args.no_user_plugins,
        max_model_mb=args.max_model_mb,
        backend=args.backend, triton_url=args.triton_url,
        device=args.device, max_side=args.max_side, token=read_token(args), no_auth=args.no_auth,
        admin_token=args.admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
        allowed_hosts=list(args.allowed_host), cors_origins=list(args.cors_origin),
        max_candidates=args.max_candidates, max_connections_per_ip=args.max_connections_per_ip,
        max_sessions=args.max_sessions, cert=args.cert, key=args.key, ice_servers=list(args.ice_server),
        ice_interfaces=list(args.ice_interface), public_ip=args.public_ip, target_fps=args.target_fps,
        codec=args.codec, max_bitrate_kbps=args.max_bitrate, default_style=args.style,
    )  # fmt: skip


def secure_by_default(config: ServerConfig) -> bool:
    """A server other machines can reach is never open by accident: with no token and no --no-auth, make
    one up (the page URL printed at start carries it, as notebook servers do). True if generated."""
    import secrets

    if config.loopback_only or config.token or config.no_auth:
        return False
    config.token = secrets.token_urlsafe(24)
    return True


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import ssl

    from stylestream.cli import CLIError
    from stylestream.registry import UnknownNameError
    from stylestream.stream.appkeys import PLUGINS
    from stylestream.stream.server import create_app

    config = config_from_args(args)
    generated = secure_by_default(config)
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
    if args.verbose < 2:  # per-request and per-ICE-check lines only with -vv
        for name in ("aiohttp.access", "aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)
    print(f"stylestream: {len(plugins.names())} styles ({', '.join(plugins.names())})", flush=True)
    try:
        asyncio.run(_serve(app, config, ssl_context, generated))
    except OSError as exc:
        raise CLIError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    return 0


async def _serve(app, config: ServerConfig, ssl_context, generated_token: bool) -> None:
    """Bind, then say where to go (only once the port is ours), then serve until SIGINT/SIGTERM; the
    app's on_shutdown closes every peer connection."""
    import asyncio
    import signal

    from stylestream.stream import listener

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    listening = await listener.start(app, config, ssl_context=ssl_context)
    try:
        scheme = "https" if ssl_context else "http"
        host = "localhost" if config.loopback_only else config.host
        if host in ("0.0.0.0", "::"):
            import socket

            host = socket.gethostname()
        base = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{listening.port}"
        if generated_token:
            print(f"stylestream: no --token given for {config.host}, so one was generated: open\n"
                  f"    {base}/#token={config.token}\n"
                  f"  (WHIP: {base}/whip with 'Authorization: Bearer {config.token}'; "
                  f"set ${TOKEN_ENV} or --token-file to keep one across restarts)", flush=True)  # fmt: skip
        else:
            print(f"stylestream: open {base}/  (WHIP: {base}/whip)", flush=True)
            if config.token:
                print("stylestream: a token is required (the page asks for it)", flush=True)
            elif config.no_auth and not config.loopback_only:
                print(f"stylestream: WARNING: --no-auth: anyone who can reach {config.host}:{listening.port} "
                      "can stream through this server and watch its sessions", flush=True)  # fmt: skip
        await stop.wait()
    finally:
        await listening.close()
