"""SDP checks and small rewrites, so a bad offer gets a clear 400 before aiortc sees it, and
interop quirks (OBS's candidate-less offers, codec choice, bitrate hints) are handled in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from aiortc import RTCIceServer, RTCRtpSender, RTCRtpTransceiver
from aiortc.sdp import SessionDescription

from stylestream.stream.config import VIDEO_CODECS


class SDPError(ValueError):
    """An offer the server cannot use; the message says what is wrong with it."""


@dataclass
class OfferSummary:
    video_directions: list[str]  # direction of each video m-line, as the offerer sees it
    video_codecs: list[str]  # mime types offered for video, lower-case
    has_candidates: bool
    audio_directions: list[str] = field(default_factory=list)  # of each audio m-line, as offered


MAX_MEDIA_SECTIONS = 16  # a camera offer has 1-3 (video, audio, data); each one costs a transport


def count_candidates(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines() if line.startswith("a=candidate:"))


def check_offer(sdp: object, max_candidates: int = 50) -> OfferSummary:
    """Parse an offer and say what it carries, or raise SDPError. The counts are checked before parsing:
    thousands of candidates would block the event loop while parsed and then be probed one by one."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SDPError("the SDP offer is missing or empty")
    if not sdp.lstrip().startswith("v=0"):
        raise SDPError("malformed SDP: an SDP offer starts with 'v=0'")
    n = count_candidates(sdp)
    if n > max_candidates:
        raise SDPError(f"the offer carries {n} ICE candidates; at most {max_candidates} are accepted")
    sections = sum(1 for line in sdp.splitlines() if line.startswith("m="))
    if sections > MAX_MEDIA_SECTIONS:
        raise SDPError(f"the offer has {sections} media sections; at most {MAX_MEDIA_SECTIONS} are accepted")
    try:
        desc = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises assorted errors on garbage
        raise SDPError(f"malformed SDP: {exc.__class__.__name__}: {exc}") from None
    videos = [m for m in desc.media if m.kind == "video"]
    if not videos:
        raise SDPError("the offer has no video m-line; send a camera track (m=video)")
    for m in desc.media:
        if m.kind in ("audio", "video") and (not m.ice.usernameFragment or not m.ice.password):
            raise SDPError("malformed SDP: missing a=ice-ufrag / a=ice-pwd")
        if m.kind in ("audio", "video") and m.dtls is None:
            raise SDPError("malformed SDP: missing a=fingerprint (DTLS is required)")
    codecs = sorted({c.mimeType.lower() for m in videos for c in m.rtp.codecs})
    return OfferSummary(
        video_directions=[m.direction or "sendrecv" for m in videos],
        video_codecs=codecs,
        has_candidates="a=candidate:" in sdp,
        audio_directions=[m.direction or "sendrecv" for m in desc.media if m.kind == "audio"],
    )


def repair_bundle(sdp: str) -> str:
    """FFmpeg 8's WHIP muxer, sending video only, still says `a=group:BUNDLE 0 1` while its one m-line
    is `a=mid:1`; aiortc then fails in createAnswer. Keep in each group only the mids that exist (drop a
    group left empty). Two m-lines with the same mid cannot be repaired: SDPError."""
    lines = sdp.splitlines()
    mids = [line[6:].strip() for line in lines if line.startswith("a=mid:")]
    dup = sorted({m for m in mids if mids.count(m) > 1})
    if dup:
        raise SDPError(f"malformed SDP: mid {dup[0]!r} is used by more than one m-line")
    out, changed = [], False
    for line in lines:
        if line.startswith("a=group:BUNDLE"):
            named = line.split()[1:]
            kept = [m for m in named if m in mids]
            if kept != named:
                changed = True
                if not kept:
                    continue
                line = "a=group:BUNDLE " + " ".join(kept)
        out.append(line)
    return "\r\n".join(out) + "\r\n" if changed else sdp


def accept_candidateless(sdp: str) -> str:
    """OBS 30.2+ offers no ICE candidates. If such an offer also says end-of-candidates, aioice would
    give up before the client's checks arrive; dropping that line lets it learn peer-reflexive ones."""
    if "a=candidate:" in sdp:
        return sdp
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith("a=end-of-candidates"))


def prefer_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Put `codec` first among the video codecs; the others stay acceptable (OBS sends only H.264)."""
    mime = VIDEO_CODECS[codec].lower()
    caps = RTCRtpSender.getCapabilities("video").codecs
    first = [c for c in caps if c.mimeType.lower() == mime]
    rest = [c for c in caps if c.mimeType.lower() != mime]
    transceiver.setCodecPreferences(first + rest)


def with_bitrate(sdp: str, kbps: int | None) -> str:
    """Tell the peer the video bitrate we accept: `b=AS` caps it, and Chromium's `x-google-*` fmtp
    hints start it high enough that a 640x480 camera is not first sent at 480x360."""
    if not kbps:
        return sdp
    hint = f"x-google-start-bitrate={kbps * 3 // 4};x-google-min-bitrate={kbps // 4};x-google-max-bitrate={kbps}"
    sections: list[list[str]] = [[]]
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    out: list[str] = sections[0]
    for sec in sections[1:]:
        if not sec[0].startswith("m=video"):
            out += sec
            continue
        rtx = {m.group(1) for line in sec if (m := re.match(r"a=rtpmap:(\d+) rtx/", line))}
        pts = [m.group(1) for line in sec if (m := re.match(r"a=rtpmap:(\d+) ", line)) and m.group(1) not in rtx]
        has_fmtp = set()
        for line in sec:
            m = re.match(r"a=fmtp:(\d+) ", line)
            if m and m.group(1) in pts:
                has_fmtp.add(m.group(1))
                line = f"{line};{hint}"
            out.append(line)
            if line.startswith("c="):
                out.append(f"b=AS:{kbps}")
        out += [f"a=fmtp:{pt} {hint}" for pt in pts if pt not in has_fmtp]
    return "\r\n".join(out) + "\r\n"


def ice_server(url: str) -> RTCIceServer:
    """'stun:host:port' or 'turn:user:password@host:port' -> RTCIceServer."""
    scheme, rest = url.split(":", 1)
    if "@" in rest:
        creds, host = rest.rsplit("@", 1)
        user, _, password = creds.partition(":")
        return RTCIceServer(urls=f"{scheme}:{host}", username=user, credential=password)
    return RTCIceServer(urls=url)


def ice_server_json(url: str) -> dict[str, str]:
    s = ice_server(url)
    d = {"urls": s.urls}
    if s.username:
        d.update(username=s.username, credential=s.credential or "")
    return d
