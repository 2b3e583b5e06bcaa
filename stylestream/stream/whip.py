"""WHIP ingest (RFC 9725: OBS Studio 30+ publishes here) and WHEP egress (a viewer, e.g. OBS's
Browser Source via /view/{session}, plays a session's stylized output). Bodies are raw SDP."""

from __future__ import annotations

import re

from aiohttp import web
from aiortc.sdp import candidate_from_sdp

from stylestream.registry import UnknownNameError
from stylestream.stream import appkeys as keys
from stylestream.stream.api import manager, read_body, session_or_404
from stylestream.stream.middleware import json_error
from stylestream.stream.sdp import SDPError, count_candidates, ice_server_json
from stylestream.stream.sessions import SessionLimitError
from stylestream.stream.signaling import answer_publisher, answer_viewer

routes = web.RouteTableDef()

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"


async def read_sdp(request: web.Request) -> str:
    raw = await read_body(request, SDP)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="the SDP offer is not UTF-8 text") from None


def ice_links(request: web.Request) -> dict[str, str]:
    links = []
    for url in request.app[keys.CONFIG].ice_servers:
        s = ice_server_json(url)
        link = f'<{s["urls"]}>; rel="ice-server"'
        if "username" in s:
            link += f'; username="{s["username"]}"; credential="{s["credential"]}"; credential-type="password"'
        links.append(link)
    return {"Link": ", ".join(links)} if links else {}


def created(location: str, etag: str, answer: str, request: web.Request) -> web.Response:
    return web.Response(
        status=201, body=answer.encode(), content_type=SDP,
        headers={"Location": location, "ETag": f'"{etag}"', "Accept-Patch": SDPFRAG, **ice_links(request)},
    )  # fmt: skip


@routes.options("/whip")
async def whip_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Post": SDP, **ice_links(request)})


@routes.post("/whip")
async def whip_publish(request: web.Request) -> web.Response:
    sdp = await read_sdp(request)
    mgr = manager(request)
    try:
        style, params = mgr.check_style(request.query.get("style", request.app[keys.CONFIG].default_style))
        session = mgr.create("whip", style, params)
    except SessionLimitError as exc:
        return json_error(503, str(exc), {"Retry-After": "10"})
    except (ValueError, UnknownNameError) as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    try:
        answer = await answer_publisher(session, sdp, send_back=False)
    except SDPError as exc:
        await mgr.close(session.id)
        raise web.HTTPBadRequest(text=str(exc)) from None
    except BaseException:
        await mgr.close(session.id)
        raise
    return created(f"/whip/{session.id}", session.id, answer, request)


@routes.options("/whip/{sid}")
async def whip_resource_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Patch": SDPFRAG})


@routes.delete("/whip/{sid}")
async def whip_delete(request: web.Request) -> web.Response:
    if manager(request).recently_ended(request.match_info["sid"]):
        return web.Response(status=200)  # the peer closed first; the session ended with it
    s = session_or_404(request)
    await manager(request).close(s.id)
    return web.Response(status=200)


@routes.patch("/whip/{sid}")
async def whip_trickle(request: web.Request) -> web.Response:
    s = session_or_404(request)
    return await trickle(request, s.pc, s.id)


async def trickle(request: web.Request, pc, etag: str) -> web.Response:
    """Trickle ICE (RFC 9725 §4.3): add the client's late candidates to `pc`. ICE restarts are not
    supported (405: start anew)."""
    match = request.headers.get("If-Match")
    if match not in (None, "*", f'"{etag}"'):
        raise web.HTTPPreconditionFailed(text="If-Match does not match this resource's ETag")
    frag = (await read_body(request, SDPFRAG)).decode("utf-8", errors="replace")
    limit = request.app[keys.CONFIG].max_candidates
    if count_candidates(frag) > limit:
        raise web.HTTPBadRequest(text=f"too many ICE candidates in one PATCH (limit {limit}, --max-candidates)")
    remote = pc.remoteDescription.sdp if pc.remoteDescription else ""
    if set(re.findall(r"a=ice-ufrag:(\S+)", frag)) - set(re.findall(r"a=ice-ufrag:(\S+)", remote)):
        # RFC 9725 §4.3.2 lets a server decline ICE restarts; aiortc cannot restart ICE on a connection.
        return json_error(405, "ICE restart is not supported (new ICE credentials): DELETE this resource and "
                               "start a new session; trickle PATCHes with the current credentials work",
                          {"Allow": "PATCH, DELETE, OPTIONS"})  # fmt: skip
    mid = None
    for line in frag.splitlines():
        if line.startswith("a=mid:"):
            mid = line[6:].strip()
        elif line.startswith("a=candidate:"):
            try:
                cand = candidate_from_sdp(line[2:])
            except Exception:  # noqa: BLE001 - aiortc's parser raises assorted errors
                raise web.HTTPBadRequest(text=f"malformed candidate line: {line[:80]!r}") from None
            cand.sdpMid = mid
            cand.sdpMLineIndex = None if mid is not None else 0
            try:
                await pc.addIceCandidate(cand)
            except Exception as exc:  # noqa: BLE001 - e.g. an unknown mid, a closed connection
                raise web.HTTPBadRequest(text=f"cannot use candidate {line[:80]!r}: {exc}") from None
    return web.Response(status=204)


@routes.options("/whep/{sid}")
async def whep_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Post": SDP})


@routes.post("/whep/{sid}")
async def whep_play(request: web.Request) -> web.Response:
    s = session_or_404(request)
    sdp = await read_sdp(request)
    try:
        vid, answer = await answer_viewer(s, sdp)
    except SessionLimitError as exc:
        return json_error(503, str(exc), {"Retry-After": "10"})
    except SDPError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None
    return created(f"/whep/{s.id}/{vid}", vid, answer, request)


@routes.options("/whep/{sid}/{vid}")
async def whep_resource_options(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Patch": SDPFRAG})


@routes.patch("/whep/{sid}/{vid}")
async def whep_trickle(request: web.Request) -> web.Response:
    s = session_or_404(request)
    vid = request.match_info["vid"]
    pc = s.viewers.get(vid)
    if pc is None:
        raise web.HTTPNotFound(text="no such viewer in this session")
    return await trickle(request, pc, vid)


@routes.delete("/whep/{sid}/{vid}")
async def whep_stop(request: web.Request) -> web.Response:
    if manager(request).recently_ended(request.match_info["vid"]) or manager(request).recently_ended(
        request.match_info["sid"]
    ):
        return web.Response(status=200)  # the player closed first (or the session ended): already gone
    s = session_or_404(request)
    if not await s.remove_viewer(request.match_info["vid"]):
        raise web.HTTPNotFound(text="no such viewer in this session")
    return web.Response(status=200)
