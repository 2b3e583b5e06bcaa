"""Everything `stylestream serve` can be told, as one dataclass, plus the table of video codecs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from stylestream.registry import Registry

# name -> WebRTC mime type; the first entry is the default. OBS's WHIP output sends H.264 only, so both
# are always accepted: the choice only says which one the server prefers when an offer carries both.
VIDEO_CODECS: Registry[str] = Registry("codec")
VIDEO_CODECS.add("vp8", "video/VP8", "VP8 (aiortc's default; every browser)")
VIDEO_CODECS.add("h264", "video/H264", "H.264 (OBS WHIP, hardware decoders)")


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    plugin_dirs: list[Path] = field(default_factory=list)
    include_user_plugins: bool = True
    backend: str = "auto"
    device: str = "auto"
    max_side: int | None = None
    token: str | None = None
    max_sessions: int = 8
    max_viewers: int = 4  # WHEP viewers per session
    cert: Path | None = None
    key: Path | None = None
    ice_servers: list[str] = field(default_factory=list)
    codec: str = "vp8"
    max_bitrate_kbps: int | None = None
    default_style: str = "original"
    max_body_bytes: int = 256 * 1024  # an SDP is a few KiB; anything near this is not one
    connect_timeout_s: float = 30.0  # a session whose peer never connects is closed after this
    disconnect_grace_s: float = 5.0  # ICE "disconnected" may recover; "failed" closes at once

    def validate(self) -> None:
        """Raise ValueError with a user-facing message for inconsistent settings."""
        VIDEO_CODECS.entry(self.codec)  # UnknownNameError lists the codecs
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together: give both to serve HTTPS, or neither")
        for p in (self.cert, self.key):
            if p is not None and not Path(p).is_file():
                raise ValueError(f"TLS file {p} does not exist")
        if self.max_sessions < 1:
            raise ValueError(f"--max-sessions must be at least 1, got {self.max_sessions}")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"--max-side must be at least 16 pixels, got {self.max_side}")
        if self.max_bitrate_kbps is not None and not 100 <= self.max_bitrate_kbps <= 50_000:
            raise ValueError(f"--max-bitrate is in kbps and must be 100..50000, got {self.max_bitrate_kbps}")
        for url in self.ice_servers:
            if not url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"ICE server {url!r} must start with stun:, stuns:, turn: or turns:")
