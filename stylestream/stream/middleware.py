"""HTTP plumbing shared by every route: the access policy (Host check, cross-origin rules, bearer
tokens) and JSON errors. The threat model these implement is in README's "Security" section."""

from __future__ import annotations

import hmac
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from stylestream.stream import appkeys as keys
from stylestream.stream.config import ServerConfig, is_loopback

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Everything but the page, its static files and /healthz needs the token when one is set.
PROTECTED_PREFIXES = ("/api/", "/whip", "/whep", "/metrics")
# What pages on other origins may call, when the policy allows them at all.
CORS_PREFIXES = ("/api/", "/whip", "/whep")
# Listing every session reveals every capability: only the admin token may.
ADMIN_ONLY = {("GET", "/api/sessions")}
WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}
LOCAL_NAMES = {"localhost", "127.0.0.1", "::1"}

ALLOW_HEADERS = "Authorization, Content-Type, If-Match, ETag"
EXPOSE_HEADERS = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, WWW-Authenticate"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def machine_names() -> set[str]:
    """This machine's host names and interface addresses (what clients on the LAN call it)."""
    names = {socket.gethostname(), socket.getfqdn()}
    try:
        import ifaddr  # aioice's dependency: always installed with aiortc

        for adapter in ifaddr.get_adapters():
            for ip in adapter.ips:
                names.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    except Exception:
        log.debug("could not list network interfaces", exc_info=True)
    return {n.lower() for n in names if n}


def host_name(host_header: str) -> str:
    """'Example.org:8080' -> 'example.org'; '[::1]:8080' -> '::1'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class AccessPolicy:
    """Who may call what, decided once from the server's settings."""

    def __init__(self, config: ServerConfig) -> None:
        self.tokens = [f"Bearer {t}".encode() for t in (config.token, config.admin_token) if t]
        self.token_required = config.auth_required
        self.admin = f"Bearer {config.admin_token}".encode() if config.admin_token else None
        self.cors_origins = {o.rstrip("/") for o in config.cors_origins}
        self.allowed_hosts = self._hosts(config)

    @staticmethod
    def _hosts(config: ServerConfig) -> set[str] | None:
        """The Host names accepted (None: any). A page on another site can make a browser resolve its own
        name to this server (DNS rebinding); checking Host stops that from reaching a token-less server."""
        extra = {host_name(h) for h in config.allowed_hosts}
        if "*" in config.allowed_hosts:
            return None
        bound = config.host.strip("[]").lower()
        if bound in {h.strip("[]") for h in WILDCARD_HOSTS}:
            if config.auth_required:
                return None  # behind Docker/NAT the name is unknowable; a rebinding page cannot send the token
            return LOCAL_NAMES | machine_names() | extra
        return LOCAL_NAMES | {bound} | extra | ({"localhost"} if is_loopback(bound) else set())

    def host_ok(self, request: web.Request) -> bool:
        return self.allowed_hosts is None or host_name(request.host) in self.allowed_hosts

    def cross_origin(self, request: web.Request) -> str | None:
        """The page origin if this is a cross-origin browser request, else None."""
        origin = request.headers.get("Origin")
        if origin is None:
            return None  # not a browser (OBS, FFmpeg, curl) or a same-origin GET
        parts = urlsplit(origin)
        if parts.netloc and parts.netloc.lower() == request.host.lower():
            return None
        return origin.rstrip("/")

    def origin_allowed(self, origin: str, path: str) -> bool:
        """Other sites' pages may call the server only where a bearer token is required (a page cannot
        borrow it) or when the user named their origin with --cors-origin."""
        if origin in self.cors_origins or "*" in self.cors_origins:
            return True
        return self.token_required and path.startswith(CORS_PREFIXES)

    def authorized(self, request: web.Request) -> bool:
        got = request.headers.get("Authorization", "").encode()
        return any(hmac.compare_digest(got, t) for t in self.tokens)

    def is_admin(self, request: web.Request) -> bool:
        got = request.headers.get("Authorization", "").encode()
        return self.admin is not None and hmac.compare_digest(got, self.admin)


def policy(request: web.Request) -> AccessPolicy:
    return request.app[keys.POLICY]


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not policy(request).host_ok(request):
        name = host_name(request.host)
        return json_error(403, f"Host {name!r} is not a name of this server; if clients reach it by that name, "
                               f"start it with --allowed-host {name}")  # fmt: skip
    return await handler(request)


async def allowed_methods(request: web.Request) -> set[str]:
    methods: set[str] = set()
    for resource in request.app.router.resources():
        _, allowed = await resource.resolve(request)
        methods |= allowed
    return methods


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers CORS preflights for every URL and marks allowed cross-origin responses; refuses
    state-changing requests from origins that are not allowed (even 'simple' ones, which browsers send
    without a preflight)."""
    pol = policy(request)
    origin = pol.cross_origin(request)
    if origin is None:
        return await handler(request)
    allowed = pol.origin_allowed(origin, request.path)
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if not allowed:
        if preflight or request.method not in SAFE_METHODS:
            return json_error(403, f"cross-origin requests from {origin} are not allowed: start the server with "
                                   f"--cors-origin {origin} (or a --token, which pages must then send)")  # fmt: skip
        return await handler(request)  # a GET: the browser will not let the other page read the answer
    headers = {"Access-Control-Allow-Origin": origin, "Vary": "Origin", "Access-Control-Expose-Headers": EXPOSE_HEADERS}
    if preflight:
        methods = await allowed_methods(request)
        if not methods:
            return json_error(404, f"no such URL {request.path}", headers)
        extra = {}
        if "POST" in methods and request.path.startswith(("/whip", "/whep")):
            extra["Accept-Post"] = "application/sdp"
        if "PATCH" in methods and request.path.startswith(("/whip/", "/whep/")):
            extra["Accept-Patch"] = "application/trickle-ice-sdpfrag"
        return web.Response(status=204, headers={
            **headers, **extra, "Access-Control-Allow-Methods": ", ".join(sorted(methods | {"OPTIONS"})),
            "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": "600",
        })  # fmt: skip
    resp = await handler(request)
    resp.headers.update(headers)
    return resp


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure is `{"error": "..."}`; nothing a client sends can make the server crash."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        if exc.status == 413:
            text = f"request body too large (limit {request.app[keys.CONFIG].max_body_bytes} bytes)"
        headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
        return json_error(exc.status, text, headers)
    except ConnectionError as exc:  # the client went away mid-request: nothing to answer, one log line
        log.info("%s %s: client disconnected (%s)", request.method, request.path, exc.__class__.__name__)
        return json_error(400, "client disconnected")
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal server error (see the server log)")


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    pol = policy(request)
    if request.method == "OPTIONS" or not request.path.startswith(PROTECTED_PREFIXES):
        return await handler(request)
    if (request.method, request.path.rstrip("/")) in ADMIN_ONLY:
        if pol.admin is None:
            return json_error(403, "listing every session needs the server's --admin-token; "
                                   "your own session is at /api/sessions/ID")  # fmt: skip
        if not pol.is_admin(request):
            return json_error(401, "this needs the admin token: send 'Authorization: Bearer ADMIN_TOKEN'",
                              {"WWW-Authenticate": 'Bearer realm="stylestream-admin"'})  # fmt: skip
        return await handler(request)
    if pol.token_required and not pol.authorized(request):
        return json_error(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' (the server's --token)",
                          {"WWW-Authenticate": 'Bearer realm="stylestream"'})  # fmt: skip
    return await handler(request)


# Outermost first: the Host check, then CORS (so errors carry CORS headers), JSON errors, auth.
MIDDLEWARES = (check_host, cors, errors_as_json, auth)
