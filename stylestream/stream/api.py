"""The JSON API the page uses: styles, offer/answer, live session control."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np
from aiohttp import web

from stylestream.plugins.thumbnails import load_thumbnail_bytes
from stylestream.registry import UnknownNameError
from stylestream.stream import appkeys as keys
from stylestream.stream.middleware import json_error
from stylestream.stream.sdp import SDPError, check_offer, ice_server_json
from stylestream.stream.sessions import SessionLimitError, SessionManager
from stylestream.stream.signaling import answer_publisher

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def read_body(request: web.Request, content_type: str) -> bytes:
    """The request body, if it has the expected type and arrives in time. Requiring the type also stops
    other sites' pages from sending 'simple' (text/plain, form) requests that need no CORS preflight."""
    if request.content_type != content_type:
        raise web.HTTPUnsupportedMediaType(
            text=f"send the body as Content-Type: {content_type} (got {request.content_type or 'none'})"
        )
    try:  # read() raises 413 past the app's client_max_size
        return await asyncio.wait_for(request.read(), request.app[keys.CONFIG].body_timeout_s)
    except asyncio.TimeoutError:
        log.info("%s %s: body not received in time; closing", request.method, request.path)
        raise web.HTTPRequestTimeout(text="the request body did not arrive in time", headers={"Connection": "close"}) from None


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request, "application/json")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"the body is not valid JSON ({exc})") from None
    except RecursionError:
        raise web.HTTPBadRequest(text="the JSON body is nested too deeply") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=f"the body must be a JSON object, got {type(body).__name__}")
    return body


def manager(request: web.Request) -> SessionManager:
    return request.app[keys.SESSIONS]


def session_or_404(request: web.Request):
    s = manager(request).get(request.match_info["sid"])
    if s is None:
        raise web.HTTPNotFound(text=f"no session {request.match_info['sid']!r} (it ended or never existed)")
    return s


def bad_request(exc: Exception) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=str(exc))


@routes.get("/api/config")
async def get_config(request: web.Request) -> web.Response:
    cfg = request.app[keys.CONFIG]
    return web.json_response({
        "iceServers": [ice_server_json(u) for u in cfg.ice_servers], "codec": cfg.codec,
        "maxBitrateKbps": cfg.max_bitrate_kbps, "maxSide": cfg.max_side, "defaultStyle": cfg.default_style,
    })  # fmt: skip


@routes.get("/api/styles")
async def list_styles(request: web.Request) -> web.Response:
    out = []
    engine = request.app[keys.ENGINE]
    for info in request.app[keys.PLUGINS].infos():
        try:
            backend = engine.backend_name(info.name)
        except Exception:  # noqa: BLE001 - a backend that cannot load shows up when used, with its error
            backend = info.backend
        out.append({
            "name": info.name, "title": info.title, "kind": info.kind, "description": info.description,
            "backend": backend, "params": [p.to_json() for p in info.params],
            "thumbnail": f"/api/styles/{info.name}/thumbnail",  # a file, or rendered on first request
        })  # fmt: skip
    return web.json_response({"styles": out, "default": request.app[keys.CONFIG].default_style})


@routes.get("/api/styles/{name}/thumbnail")
async def thumbnail(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    try:
        plugin = request.app[keys.PLUGINS].get(name)
    except UnknownNameError as exc:
        raise web.HTTPNotFound(text=str(exc)) from None
    if plugin.thumbnail:
        # Re-checked on every request (inside the plugin folder, a real image): the file may have changed.
        try:
            data, ctype = await asyncio.to_thread(load_thumbnail_bytes, plugin.thumbnail, plugin.root)
            return web.Response(body=data, content_type=ctype, headers={"Cache-Control": "max-age=3600"})
        except ValueError as exc:
            log.warning("style %r: thumbnail not served: %s", name, exc)
    cache = request.app[keys.THUMBNAILS]
    if name not in cache:  # a style without a picture of its own: show it on a sample photo, once
        try:
            cache[name] = await render_thumbnail(request.app[keys.ENGINE], name)
        except Exception as exc:  # noqa: BLE001 - a broken style has no thumbnail; the page shows its initial
            log.warning("style %r: could not render a thumbnail: %s", name, exc)
            raise web.HTTPNotFound(text=f"style {name!r} has no thumbnail ({exc})") from None
    return web.Response(body=cache[name], content_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})  # fmt: skip


async def render_thumbnail(engine: Any, style: str, size: tuple[int, int] = (160, 120)) -> bytes:
    """The style applied to a real photo that ships with a dependency (matplotlib's sample data),
    centre-cropped to `size` (W, H), as JPEG; inference goes through the engine's worker, off the loop."""
    import cv2

    from stylestream.media import default_images

    bgr = cv2.imread(str(default_images()))
    if bgr is None:
        raise FileNotFoundError(f"sample photo {default_images()} not readable")
    w, h = size
    scale = max(w / bgr.shape[1], h / bgr.shape[0])
    bgr = cv2.resize(bgr, (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    y0, x0 = (bgr.shape[0] - h) // 2, (bgr.shape[1] - w) // 2
    rgb = np.ascontiguousarray(cv2.cvtColor(bgr[y0 : y0 + h, x0 : x0 + w], cv2.COLOR_BGR2RGB))
    out = await engine.submit(style, rgb)
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return jpg.tobytes()


@routes.post("/api/offer")
async def offer(request: web.Request) -> web.Response:
    body = await read_json(request)
    missing = [k for k in ("sdp", "type") if k not in body]
    if missing:
        raise web.HTTPBadRequest(text=f"missing field(s) {missing}; send {{\"sdp\", \"type\": \"offer\", \"style\"}}")
    if body["type"] != "offer":
        raise web.HTTPBadRequest(text=f"'type' must be 'offer', got {body['type']!r}")
    mgr = manager(request)
    try:
        style, params = mgr.check_style(body.get("style", request.app[keys.CONFIG].default_style), body.get("params"))
        check_offer(body["sdp"], request.app[keys.CONFIG].max_candidates)  # reject garbage before a peer exists
        session = mgr.create("browser", style, params)
    except SessionLimitError as exc:
        return json_error(503, str(exc), {"Retry-After": "10"})
    except (ValueError, UnknownNameError) as exc:
        raise bad_request(exc) from None
    try:
        answer = await answer_publisher(session, body["sdp"], send_back=True)
    except SDPError as exc:
        await mgr.close(session.id)
        raise bad_request(exc) from None
    except BaseException:
        await mgr.close(session.id)
        raise
    return web.json_response({"sdp": answer, "type": "answer", "session": session.id})


@routes.get("/api/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """Every session with its id, i.e. its capability: the auth middleware admits only the admin token."""
    return web.json_response({"sessions": [s.to_json() for s in manager(request).sessions.values()]})


@routes.get("/api/sessions/{sid}")
async def get_session(request: web.Request) -> web.Response:
    return web.json_response(session_or_404(request).to_json())


@routes.patch("/api/sessions/{sid}")
async def patch_session(request: web.Request) -> web.Response:
    s = session_or_404(request)
    body = await read_json(request)
    unknown = set(body) - {"style", "params"}
    if unknown:
        raise web.HTTPBadRequest(text=f"unknown field(s) {sorted(unknown)}; send 'style' and/or 'params'")
    try:
        s.update(body.get("style"), body.get("params"))
    except (ValueError, UnknownNameError) as exc:
        raise bad_request(exc) from None
    return web.json_response(s.to_json())


@routes.delete("/api/sessions/{sid}")
async def delete_session(request: web.Request) -> web.Response:
    sid = request.match_info["sid"]
    if manager(request).recently_ended(sid):
        return web.json_response({"closed": sid})
    s = session_or_404(request)
    await manager(request).close(s.id)
    return web.json_response({"closed": s.id})
