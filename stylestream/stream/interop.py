"""Compatibility fixes for real WebRTC stacks that aiortc/aioice do not handle yet. Each is small,
applied once by `install()` (the server calls it), tested on its own (tests/stream/test_interop.py)
and against the real client (FFmpeg 8, GStreamer): drop a fix when the library handles the case.

1. FFmpeg 8's WHIP muxer sends STUN connectivity checks without PRIORITY (RFC 8445 §7.1.1 requires
   it). aioice reads it unconditionally when it learns a peer-reflexive candidate and raises KeyError,
   and since FFmpeg's offer has no candidates that is the only way to learn its address: DTLS never
   starts. Fix: a check without PRIORITY is taken as coming from a peer-reflexive candidate with the
   priority RFC 8445 §5.1.2 gives one (type preference 110). aioice 0.13.0.
2. aiortc offers only ECDHE-ECDSA cipher suites when it is the DTLS client. GStreamer's webrtcbin
   (1.22) has an RSA certificate, so the handshake ends in "no shared cipher". Fix: offer the ECDHE-RSA
   suites as well (same AEAD/SHA strength). aiortc 1.16.0.
3. FFmpeg 8 draws its DTLS certificate's serial number at random, and about half are negative, which
   RFC 5280 forbids. aiortc checks the peer's fingerprint on the certificate as `cryptography` parses
   it, which warns today ("will cause an exception in a future release of cryptography"): half of
   FFmpeg's WHIP sessions would then fail (as they do with the warning made an error). A
   fingerprint is the hash of the certificate's DER bytes (RFC 8122 §5), so it is computed from those,
   with nothing parsed. aiortc 1.16.0, cryptography 50."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

# SDP fingerprint hash names (RFC 8122 / aiortc's X509_DIGEST_ALGORITHMS) -> hashlib's
DIGESTS = {"sha-256": "sha256", "sha-384": "sha384", "sha-512": "sha512"}

# aiortc 1.16's list, then the same suites for RSA certificates.
ECDSA_SUITES = b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"
RSA_SUITES = b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"

_installed = False


def prflx_priority(component: int) -> int:
    """RFC 8445 §5.1.2.1: (2^24)·type preference + (2^8)·local preference + (256 − component)."""
    from aioice.candidate import candidate_priority

    return candidate_priority(component, "prflx")


def _patch_stun_priority() -> None:
    from aioice import ice

    original = ice.Connection.check_incoming
    if getattr(original, "_stylestream_compat", False):
        return

    def check_incoming(self, message, addr, protocol):  # type: ignore[no-untyped-def]
        if "PRIORITY" not in message.attributes:
            message.attributes["PRIORITY"] = prflx_priority(protocol.local_candidate.component)
        return original(self, message, addr, protocol)

    check_incoming._stylestream_compat = True  # type: ignore[attr-defined]
    ice.Connection.check_incoming = check_incoming


def _patch_dtls_ciphers() -> None:
    from aiortc.rtcdtlstransport import RTCCertificate

    original = RTCCertificate._create_ssl_context
    if getattr(original, "_stylestream_compat", False):
        return

    def create_ssl_context(self, srtp_profiles):  # type: ignore[no-untyped-def]
        ctx = original(self, srtp_profiles)
        ctx.set_cipher_list(ECDSA_SUITES + b":" + RSA_SUITES)  # before any Connection uses it
        return ctx

    create_ssl_context._stylestream_compat = True  # type: ignore[attr-defined]
    RTCCertificate._create_ssl_context = create_ssl_context


def fingerprint(der: bytes, algorithm: str) -> str:
    """'AB:CD:...' of a DER certificate, as SDP's a=fingerprint writes it (algorithm: 'sha-256', ...)."""
    return ":".join(f"{b:02X}" for b in hashlib.new(DIGESTS[algorithm], der).digest())


def fingerprints_match(der: bytes | None, fingerprints: Iterable[Any]) -> bool:
    """aiortc's rule: at least one fingerprint in a supported algorithm, and every supported one matches."""
    supported = [f for f in fingerprints if f.algorithm.lower() in DIGESTS]
    return bool(der) and bool(supported) and all(
        f.value.upper() == fingerprint(der, f.algorithm.lower()) for f in supported)  # fmt: skip


def _patch_dtls_fingerprint() -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport, State
    from OpenSSL import crypto

    original = RTCDtlsTransport._validate_peer_identity
    if getattr(original, "_stylestream_compat", False):
        return

    def validate_peer_identity(self, remoteParameters):  # type: ignore[no-untyped-def]
        cert = self._ssl.get_peer_certificate()  # pyOpenSSL's X509: not parsed by cryptography
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, cert) if cert is not None else None
        if not fingerprints_match(der, remoteParameters.fingerprints):
            self._RTCDtlsTransport__log_debug("x DTLS handshake failed (fingerprint mismatch)")
            self._set_state(State.FAILED)

    validate_peer_identity._stylestream_compat = True  # type: ignore[attr-defined]
    RTCDtlsTransport._validate_peer_identity = validate_peer_identity


def install() -> None:
    """Apply every fix (idempotent)."""
    global _installed
    if _installed:
        return
    _patch_stun_priority()
    _patch_dtls_ciphers()
    _patch_dtls_fingerprint()
    _installed = True
    log.debug("interop fixes installed: STUN checks without PRIORITY, ECDHE-RSA DTLS suites, DER fingerprints")
