"""A real `stylestream serve` app (same listener as the CLI) on its own event loop in a thread, so
attack tests can use plain sockets and blocking clients against it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any

from stylestream.stream import listener
from stylestream.stream.config import ServerConfig
from stylestream.stream.server import create_app


class ServerThread:
    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig(include_user_plugins=False)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.app = create_app(self.config)
        self.listening = self.call(listener.start(self.app, self.config, port=0))
        self.port = self.listening.port
        self.base = f"http://127.0.0.1:{self.port}"

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.listening.close())
        self.call(self._cancel_leftovers())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @staticmethod
    async def _cancel_leftovers() -> None:
        """aiortc leaves tasks behind after close; end them here, or they are reported as "destroyed but
        pending" when collected, in whichever later test happens to be running."""
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> ServerThread:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
