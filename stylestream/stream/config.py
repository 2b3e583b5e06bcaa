"""Everything `stylestream serve` can be told, as one dataclass, plus the table of video codecs."""

from __future__ import annotations

import ipaddress
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
    max_model_mb: float = 1024  # plugin model files over this are skipped at discovery
    backend: str = "auto"
    triton_url: str | None = None  # a Triton server: its style models are styles; --backend triton uses it
    device: str = "auto"
    max_side: int | None = None  # the largest processing size (longer side); output keeps the input size
    target_fps: float = 24.0  # hold this output frame rate by adapting the processing size; 0: off
    token: str | None = None  # required on the API, WHIP, WHEP and /metrics when set
    no_auth: bool = False  # the user's explicit choice to serve a non-loopback address with no token
    admin_token: str | None = None  # needed to list every session (GET /api/sessions)
    allowed_hosts: list[str] = field(default_factory=list)  # extra names for the Host check ("*": any)
    cors_origins: list[str] = field(default_factory=list)  # origins whose pages may call the server
    max_sessions: int = 8
    max_viewers: int = 4  # WHEP viewers per session
    cert: Path | None = None
    key: Path | None = None
    ice_servers: list[str] = field(default_factory=list)
    ice_interfaces: list[str] = field(default_factory=list)  # gather host candidates only here (e.g. lo)
    public_ip: str | None = None  # announce this address instead of the host one (1:1 NAT)
    codec: str = "vp8"
    max_bitrate_kbps: int | None = None
    default_style: str = "original"
    max_body_bytes: int = 256 * 1024  # an SDP is a few KiB; anything near this is not one
    max_candidates: int = 50  # ICE candidates per offer / per trickle PATCH (a browser sends < 20)
    max_connections_per_ip: int = 64  # open HTTP connections from one client address
    header_timeout_s: float = 10.0  # a connection whose request head has not arrived by then is closed
    body_timeout_s: float = 10.0  # same for a request body (slow uploads hold a connection)
    connect_timeout_s: float = 30.0  # a session whose peer never connects is closed after this
    disconnect_grace_s: float = 5.0  # ICE "disconnected" may recover; "failed" closes at once

    @property
    def loopback_only(self) -> bool:
        """True when only this machine can reach the server (the bound address is a loopback one)."""
        return is_loopback(self.host)

    @property
    def auth_required(self) -> bool:
        return bool(self.token)

    def validate(self) -> None:
        """Raise ValueError with a user-facing message for inconsistent settings."""
        VIDEO_CODECS.entry(self.codec)  # UnknownNameError lists the codecs
        if self.token is not None and not self.token.strip():
            raise ValueError("the token is empty: give a non-empty --token, or --no-auth for an open server")
        if self.token and self.no_auth:
            raise ValueError("--no-auth and a token contradict each other: give one of them")
        if not self.loopback_only and not self.token and not self.no_auth:
            raise ValueError(
                f"refusing to serve {self.host} (reachable from other machines) without a token: give --token, "
                "--token-file or $STYLESTREAM_TOKEN, or --no-auth to serve everyone who can reach the port"
            )
        if self.admin_token is not None and len(self.admin_token) < 16:
            raise ValueError("--admin-token must be at least 16 characters (it can list and end every session)")
        if self.admin_token and self.admin_token == self.token:
            raise ValueError("--admin-token must differ from --token (every user has the token)")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"--cors-origin {origin!r} must be an origin like https://player.example.org")
        if self.max_candidates < 1:
            raise ValueError(f"--max-candidates must be at least 1, got {self.max_candidates}")
        if self.max_connections_per_ip < 1:
            raise ValueError(f"--max-connections-per-ip must be at least 1, got {self.max_connections_per_ip}")
        if (self.cert is None) != (self.key is None):
            raise ValueError("--cert and --key go together: give both to serve HTTPS, or neither")
        for p in (self.cert, self.key):
            if p is not None and not Path(p).is_file():
                raise ValueError(f"TLS file {p} does not exist")
        if self.max_sessions < 1:
            raise ValueError(f"--max-sessions must be at least 1, got {self.max_sessions}")
        if not 0 <= self.target_fps <= 120:
            raise ValueError(f"--target-fps must be 0 (off) to 120, got {self.target_fps}")
        if self.max_side is not None and self.max_side < 16:
            raise ValueError(f"--max-side must be at least 16 pixels, got {self.max_side}")
        if self.max_bitrate_kbps is not None and not 100 <= self.max_bitrate_kbps <= 50_000:
            raise ValueError(f"--max-bitrate is in kbps and must be 100..50000, got {self.max_bitrate_kbps}")
        if self.public_ip is not None:
            from stylestream.stream.network import check_public_ip

            check_public_ip(self.public_ip)
        for url in self.ice_servers:
            if not url.split(":", 1)[0] in ("stun", "stuns", "turn", "turns"):
                raise ValueError(f"ICE server {url!r} must start with stun:, stuns:, turn: or turns:")


def is_loopback(host: str) -> bool:
    """'localhost', 127.0.0.0/8 and ::1; anything else (a name, 0.0.0.0, a LAN address) is reachable."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
