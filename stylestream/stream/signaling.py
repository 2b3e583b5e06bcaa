"""Offer/answer for the three kinds of peer: the page (camera in, stylized out on one connection),
a WHIP publisher (in only) and a WHEP viewer (out only)."""

from __future__ import annotations

import json
import logging

from aiortc import RTCSessionDescription

from stylestream.stream import sdp as sdps
from stylestream.stream.config import ServerConfig
from stylestream.stream.network import announce_public_ip
from stylestream.stream.sdp import SDPError, check_offer, prefer_codec, with_bitrate
from stylestream.stream.sessions import Session

log = logging.getLogger(__name__)


async def answer_publisher(session: Session, sdp: str, send_back: bool) -> str:
    """Accept the peer's camera on `session.pc`; with `send_back` the stylized video returns on the same
    connection (the page), otherwise it is only for WHEP viewers (WHIP). Returns the answer SDP."""
    config: ServerConfig = session.manager.config
    summary = check_offer(sdp, config.max_candidates)
    if send_back and summary.video_directions[0] != "sendrecv":
        raise SDPError(
            f"the offer's video is {summary.video_directions[0]}; the page must send its camera and "
            "receive the stylized video on the same m-line (sendrecv)"
        )
    if not send_back and summary.video_directions[0] not in ("sendonly", "sendrecv"):
        raise SDPError(f"a WHIP offer must send video, but its video is {summary.video_directions[0]}")
    pc = session.pc
    transceiver = pc.addTransceiver("video", direction="sendrecv" if send_back else "recvonly")
    prefer_codec(transceiver, config.codec)
    # The page's own sound comes back beside its stylized video (delayed to match), if it sends any.
    audio_back = pc.addTransceiver("audio", direction="sendrecv") if send_back and "sendrecv" in (
        summary.audio_directions[:1]) else None  # fmt: skip
    pc.on("track", session.attach_source)
    pc.on("datachannel", lambda channel: _control_channel(session, channel))
    await _set_offer(pc, sdp)
    if session.pipeline is None:
        raise SDPError("the offer carries no video track to stylize")
    if send_back:
        transceiver.sender.replaceTrack(session.output_track())
    if audio_back is not None and session.audio is not None:
        audio_back.sender.replaceTrack(session.audio.track())
    await _answer(pc)
    return _finish(pc.localDescription.sdp, config)


async def answer_viewer(session: Session, sdp: str) -> tuple[str, str]:
    """A WHEP viewer of `session`'s stylized output. Returns (viewer id, answer SDP)."""
    summary = check_offer(sdp, session.manager.config.max_candidates)
    if summary.video_directions[0] not in ("recvonly", "sendrecv"):
        raise SDPError(f"a WHEP offer must receive video, but its video is {summary.video_directions[0]}")
    vid, pc = session.add_viewer()
    try:
        transceiver = pc.addTransceiver(session.output_track(), direction="sendonly")
        prefer_codec(transceiver, session.manager.config.codec)
        if session.audio is not None and summary.audio_directions[:1] in (["recvonly"], ["sendrecv"]):
            pc.addTransceiver(session.audio.track(), direction="sendonly")  # the publisher's sound
        await _set_offer(pc, sdp)
        await _answer(pc)
    except BaseException:
        await session.remove_viewer(vid)
        raise
    return vid, _finish(pc.localDescription.sdp, session.manager.config)


def _finish(answer: str, config: ServerConfig) -> str:
    return announce_public_ip(with_bitrate(answer, config.max_bitrate_kbps), config.public_ip)


async def _set_offer(pc, sdp: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdps.accept_candidateless(sdps.repair_bundle(sdp)), "offer"))
    except SDPError:
        raise
    except Exception as exc:  # noqa: BLE001 - aiortc: ValueError, OperationError, InvalidAccessError ...
        raise SDPError(f"cannot use this offer: {exc.__class__.__name__}: {exc}") from None


async def _answer(pc) -> None:
    """Create and apply the answer. aiortc accepts some offers it then cannot answer (a media section
    with no direction, a BUNDLE group naming absent mids): that is the offer's fault, so a 400."""
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except Exception as exc:  # noqa: BLE001 - aiortc: ValueError, AttributeError, InvalidStateError ...
        log.info("cannot answer an offer: %s: %s", exc.__class__.__name__, exc)
        raise SDPError(f"cannot answer this offer: {exc.__class__.__name__}: {exc}") from None


def _control_channel(session: Session, channel) -> None:
    """The page may switch style over a data channel: {"style": ..., "params": {...}} -> {"type": "ok"}."""
    session.channel = channel

    @channel.on("message")
    def _message(message: object) -> None:
        try:
            body = json.loads(message) if isinstance(message, str) else None
            if not isinstance(body, dict):
                raise ValueError("send a JSON object like {\"style\": NAME, \"params\": {...}}")  # noqa: TRY004
            session.update(body.get("style"), body.get("params"))
            session.send_event({"type": "ok", "style": session.style, "params": session.params})
        except (ValueError, KeyError) as exc:
            session.send_event({"type": "error", "message": str(exc)})
