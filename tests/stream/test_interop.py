"""The compatibility fixes of stylestream.stream.interop, each on its own (the real clients that need them
are tests/stream/test_real_clients.py: FFmpeg 8, GStreamer)."""

from __future__ import annotations

import warnings

import pytest
from aiortc import RTCCertificate, RTCDtlsFingerprint
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning
from OpenSSL import crypto

from stylestream.stream import interop


def _serial_zero_certificate() -> bytes:
    """A self-signed certificate with serial number 0 (RFC 5280 wants > 0; FFmpeg 8 sends negative ones half the time);
    cryptography refuses to build one, so pyOpenSSL's older API makes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        key = crypto.PKey()
        key.generate_key(crypto.TYPE_RSA, 2048)
        cert = crypto.X509()
        cert.set_serial_number(0)
        cert.get_subject().CN = "ffmpeg"
        cert.set_issuer(cert.get_subject())
        cert.gmtime_adj_notBefore(0)
        cert.gmtime_adj_notAfter(3600)
        cert.set_pubkey(key)
        cert.sign(key, "sha256")
    return crypto.dump_certificate(crypto.FILETYPE_ASN1, cert)


def test_fingerprints_of_a_serial_zero_certificate_need_no_parse():
    der = _serial_zero_certificate()
    with pytest.warns(CryptographyDeprecationWarning, match="serial number"):  # what aiortc's own check hits
        x509.load_der_x509_certificate(der)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fix parses nothing, so nothing can warn (or, later, raise)
        good = RTCDtlsFingerprint("sha-256", interop.fingerprint(der, "sha-256").lower())
        other = RTCDtlsFingerprint("sha-256", interop.fingerprint(der + b"x", "sha-256"))
        assert interop.fingerprints_match(der, [good])
        assert interop.fingerprints_match(der, [good, RTCDtlsFingerprint("md5", "00:11")])  # unknown: ignored
        assert not interop.fingerprints_match(der, [good, other])  # every supported one must match
        assert not interop.fingerprints_match(der, [RTCDtlsFingerprint("md5", "00:11")])  # none supported
        assert not interop.fingerprints_match(None, [good])  # no certificate


def test_fingerprints_equal_aiortcs_own_for_its_certificates():
    cert = RTCCertificate.generateCertificate()
    der = cert._cert.public_bytes(serialization.Encoding.DER)
    for f in cert.getFingerprints():
        assert interop.fingerprint(der, f.algorithm) == f.value


def test_install_patches_aiortc_once():
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    interop.install()
    patched = RTCDtlsTransport._validate_peer_identity
    interop.install()
    assert RTCDtlsTransport._validate_peer_identity is patched and patched._stylestream_compat
    from aiortc.rtcdtlstransport import SRTP_PROFILES

    ctx = RTCCertificate.generateCertificate()._create_ssl_context(SRTP_PROFILES)
    from OpenSSL import SSL

    suites = SSL.Connection(ctx).get_cipher_list()
    assert "ECDHE-RSA-AES128-GCM-SHA256" in suites and "ECDHE-ECDSA-AES128-GCM-SHA256" in suites
