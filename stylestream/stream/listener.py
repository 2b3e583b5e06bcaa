"""Putting the app on a socket with limits a public server needs and aiohttp leaves to the user:
a cap on open connections per client address, and a deadline for a request head to arrive (slow
clients that trickle headers one byte at a time would otherwise hold connections for ever).

`start(app, config)` is used by `stylestream serve` and by the tests, so both run the same listener."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from dataclasses import dataclass

from aiohttp import web

from stylestream.stream.config import ServerConfig

log = logging.getLogger(__name__)


class ConnectionLimiter:
    """Open connections per client address; beyond `limit` new ones are closed at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()
        self.refused = 0

    def acquire(self, addr: str) -> bool:
        if self.open[addr] >= self.limit:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:  # one line, not one per connection
                log.warning("%s has %d connections open (the limit); refusing more (%d refused so far)",
                            addr, self.limit, self.refused)  # fmt: skip
            return False
        self.open[addr] += 1
        return True

    def release(self, addr: str) -> None:
        self.open[addr] -= 1
        if self.open[addr] <= 0:
            del self.open[addr]


class _Guarded(asyncio.Protocol):
    """Wraps aiohttp's per-connection protocol to count connections per address."""

    def __init__(self, inner: asyncio.Protocol, limiter: ConnectionLimiter) -> None:
        self.inner = inner
        self.limiter = limiter
        self.addr: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        addr = str(peer[0]) if peer else "?"
        if not self.limiter.acquire(addr):
            transport.abort()
            return
        self.addr = addr
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.addr is not None:
            self.limiter.release(self.addr)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.addr is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.addr is not None else None

    def pause_writing(self) -> None:
        if self.addr is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.addr is not None:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """aiohttp's TCP site with the connection cap in front of its protocol."""

    __slots__ = ("limiter",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limiter: ConnectionLimiter,
                 ssl_context: ssl.SSLContext | None = None) -> None:  # fmt: skip
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self.limiter = limiter

    async def start(self) -> None:
        self._runner._reg_site(self)  # what BaseSite.start does
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Guarded(server(), self.limiter), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog, reuse_address=self._reuse_address,
        )  # fmt: skip
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


@dataclass
class Listening:
    runner: web.AppRunner
    site: GuardedSite
    port: int
    limiter: ConnectionLimiter

    async def close(self) -> None:
        await self.runner.cleanup()


async def start(app: web.Application, config: ServerConfig, *, port: int | None = None,
                ssl_context: ssl.SSLContext | None = None) -> Listening:  # fmt: skip
    """Bind and serve `app`; raises OSError when the address is busy or not ours. aiohttp's keep-alive
    deadline also runs from the moment a connection opens, so `header_timeout_s` closes connections whose
    request head has not arrived (its own default is an hour)."""
    runner = web.AppRunner(app, keepalive_timeout=config.header_timeout_s, shutdown_timeout=5.0)
    await runner.setup()
    limiter = ConnectionLimiter(config.max_connections_per_ip)
    site = GuardedSite(runner, config.host, config.port if port is None else port, limiter, ssl_context)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Listening(runner, site, site.port, limiter)
