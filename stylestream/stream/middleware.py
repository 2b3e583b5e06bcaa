"""HTTP plumbing shared by every route: JSON errors, bearer-token auth, CORS for WHIP/WHEP."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from stylestream.stream import appkeys as keys

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Everything but the page, its static files and /healthz needs the token when one is set.
PROTECTED_PREFIXES = ("/api/", "/whip", "/whep", "/metrics")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After",
}


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


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
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal server error (see the server log)")


def make_auth(token: str | None) -> Callable:
    expected = f"Bearer {token}".encode() if token else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is None or request.method == "OPTIONS" or not request.path.startswith(PROTECTED_PREFIXES):
            return await handler(request)
        got = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(got, expected):
            return json_error(
                401, "missing or wrong token: send 'Authorization: Bearer TOKEN' (the server's --token)",
                {"WWW-Authenticate": 'Bearer realm="stylestream"', **CORS_HEADERS},
            )  # fmt: skip
        return await handler(request)

    return auth


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """WHIP/WHEP clients may be pages on other origins (players, OBS Browser Source)."""
    resp = await handler(request)
    if request.path.startswith(("/whip", "/whep")):
        resp.headers.update(CORS_HEADERS)
    return resp
