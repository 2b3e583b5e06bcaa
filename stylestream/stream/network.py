"""Which addresses the server offers to peers.

aioice gathers host candidates on every interface except loopback, so even a test on one machine sends
its media to the machine's network address, and a server in Docker or behind a cloud NAT offers
addresses nobody outside can reach. `--ice-interface NAME` limits gathering to the named interfaces
(`lo` keeps a single-machine test or benchmark on loopback); `--public-ip ADDR` announces ADDR in place
of the host address (a 1:1 NAT mapping, as media servers call it)."""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable

import ifaddr

log = logging.getLogger(__name__)

_original_get_host_addresses = None
_interfaces: tuple[str, ...] = ()


def interface_names() -> list[str]:
    return sorted({a.nice_name for a in ifaddr.get_adapters()} | {a.name for a in ifaddr.get_adapters()})


def interface_addresses(names: Iterable[str], use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    """Addresses of the named interfaces (IPv6 link-local ones left out, as aioice does)."""
    wanted = set(names)
    out = []
    for adapter in ifaddr.get_adapters():
        if adapter.name not in wanted and adapter.nice_name not in wanted:
            continue
        for ip in adapter.ips:
            if isinstance(ip.ip, str):
                if use_ipv4:
                    out.append(ip.ip)
            elif use_ipv6 and ip.ip[2] == 0 and not ipaddress.ip_address(ip.ip[0]).is_link_local:
                out.append(ip.ip[0])
    return out


def use_interfaces(names: Iterable[str]) -> None:
    """Gather ICE host candidates only on `names` (empty: aioice's default, every interface but lo).
    Process-wide, as aioice's gathering is: one server per process."""
    global _original_get_host_addresses, _interfaces
    from aioice import ice

    names = tuple(names)
    unknown = [n for n in names if n not in interface_names()]
    if unknown:
        raise ValueError(f"--ice-interface {unknown[0]!r}: no such network interface "
                         f"(this machine has {', '.join(interface_names())})")  # fmt: skip
    if _original_get_host_addresses is None:
        _original_get_host_addresses = ice.get_host_addresses
    _interfaces = names
    if not names:
        ice.get_host_addresses = _original_get_host_addresses
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return interface_addresses(_interfaces, use_ipv4, use_ipv6)

    ice.get_host_addresses = get_host_addresses
    log.info("ICE candidates only on %s: %s", ", ".join(names), ", ".join(interface_addresses(names)))


_HOST_CANDIDATE = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ host.*)$")


def announce_public_ip(sdp: str, public_ip: str | None) -> str:
    """Replace the address of every host candidate (and the c= lines) in our answer with `public_ip`."""
    if not public_ip:
        return sdp
    out = []
    for line in sdp.split("\r\n"):
        m = _HOST_CANDIDATE.match(line)
        if m:
            line = m.group(1) + public_ip + m.group(3)
        elif line.startswith("c=IN IP"):
            line = f"c=IN IP{6 if ':' in public_ip else 4} {public_ip}"
        out.append(line)
    return "\r\n".join(out)


def check_public_ip(addr: str) -> None:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise ValueError(f"--public-ip {addr!r} must be an IP address, e.g. 203.0.113.7") from None
