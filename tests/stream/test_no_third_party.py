"""Issue: contact no third party unasked. A whole session (server + client on this machine) sends no
packet and resolves no name outside loopback and this machine's own addresses, and connects within
2 s with no STUN server. aiortc's default (a public STUN server) is shown to be caught, so the
check can fail."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from asyncio import selector_events
from contextlib import contextmanager

import ifaddr
from aiohttp import ClientSession
from aiortc import RTCPeerConnection, VideoStreamTrack

from tests.stream.rtc_client import ClipTrack, Peer, running_server, wait_gathered


def own_addresses() -> set[str]:
    out = set()
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            out.add(ip.ip if isinstance(ip.ip, str) else ip.ip[0])
    return out


class NetRecorder:
    """Every destination a UDP datagram, TCP connection or name lookup goes to, at the socket layer
    (what aioice and aiohttp use). Names that are not local are refused instead of looked up, so a
    violation never leaves the machine even while it is being detected."""

    def __init__(self) -> None:
        self.mine = own_addresses()
        self.destinations: list[str] = []
        self.datagrams = 0  # UDP datagrams seen (media, STUN): proves the hook is where aioice sends

    def local(self, host: str) -> bool:
        if host in ("localhost", ""):
            return True
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False  # a name
        return ip.is_loopback or str(ip) in self.mine

    def outside(self) -> list[str]:
        return [d for d in self.destinations if not self.local(d)]

    @contextmanager
    def recording(self):
        orig_sendto = selector_events._SelectorDatagramTransport.sendto
        orig_gai, orig_ghbn = socket.getaddrinfo, socket.gethostbyname
        orig_connect = socket.socket.connect
        orig_sock_sendto = socket.socket.sendto
        rec = self

        def sendto(self, data, addr=None):
            if addr is not None:
                rec.destinations.append(str(addr[0]))
            rec.datagrams += 1
            return orig_sendto(self, data, addr)

        def guard(host) -> None:
            host = host.decode() if isinstance(host, bytes) else str(host or "")
            rec.destinations.append(host)
            if not rec.local(host):
                raise socket.gaierror(socket.EAI_NONAME, f"lookup of {host} refused by the test")

        def getaddrinfo(host, *a, **kw):
            guard(host)
            return orig_gai(host, *a, **kw)

        def gethostbyname(host):
            guard(host)
            return orig_ghbn(host)

        def connect(self, address):
            if isinstance(address, tuple):
                rec.destinations.append(str(address[0]))
            return orig_connect(self, address)

        def sock_sendto(self, data, *args):
            rec.destinations.append(str(args[-1][0]))
            return orig_sock_sendto(self, data, *args)

        selector_events._SelectorDatagramTransport.sendto = sendto
        socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
        socket.socket.connect, socket.socket.sendto = connect, sock_sendto
        try:
            yield self
        finally:
            selector_events._SelectorDatagramTransport.sendto = orig_sendto
            socket.getaddrinfo, socket.gethostbyname = orig_gai, orig_ghbn
            socket.socket.connect, socket.socket.sendto = orig_connect, orig_sock_sendto


def test_a_full_session_contacts_nobody_outside_this_machine(clip):
    rec = NetRecorder()

    async def main() -> float:
        async with running_server() as (base, _app), ClientSession() as http:
            peer = Peer(ClipTrack(clip))
            t0 = time.monotonic()
            await peer.connect(http, base, "edges")
            while peer.pc.connectionState != "connected":
                assert time.monotonic() - t0 < 10, "never connected"
                await asyncio.sleep(0.02)
            connect_s = time.monotonic() - t0
            while len(peer.received.frames) < 10:
                await asyncio.sleep(0.05)
            async with http.get(f"{base}/api/config") as r:
                assert (await r.json())["iceServers"] == [], "the page would be told of ICE servers"
            await peer.close()
            return connect_s

    with rec.recording():
        connect_s = asyncio.run(main())
    assert rec.datagrams > 10, "the recorder saw no media traffic: it is not hooked where aioice sends"
    assert rec.outside() == [], f"contacted outside this machine: {sorted(set(rec.outside()))}"
    assert connect_s < 2.0, f"connecting took {connect_s:.2f} s with no STUN server configured"


def test_the_recorder_catches_aiortcs_default_stun_server():
    """The negative control: aiortc's own default configuration is flagged (nothing is sent: the
    recorder refuses the lookup)."""
    rec = NetRecorder()

    async def gather() -> None:
        pc = RTCPeerConnection()  # the point of this test: aiortc's default
        pc.addTransceiver(VideoStreamTrack(), direction="sendrecv")
        await pc.setLocalDescription(await pc.createOffer())
        await wait_gathered(pc)
        await pc.close()

    with rec.recording():
        asyncio.run(gather())
    assert any("stun" in d for d in rec.outside()), rec.destinations
