"""Run a simulator on a real port from tests: in the current event loop, or in a thread.

async with SimServer(SimConfig(general_limit=20, general_window_s=2)) as sim:
    ... sim.url ...          # e.g. http://127.0.0.1:41234

with BackgroundSim(SimConfig()) as sim:   # for synchronous clients (the HubSpot SDK)
    HubSpot(access_token="t", host=sim.url)
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any

from aiohttp import web

from .app import create_app
from .config import SimConfig
from .state import STATE, SimState
from .stats import token_hash


class SimServer:
    """The simulator bound to `host:port` (0: a free port) inside the running event loop."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.app = create_app(config)
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def state(self) -> SimState:
        return self.app[STATE]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token_stats(self, token: str) -> dict[str, Any]:
        """Like `GET /__sim/stats?token=`, without a request."""
        state, hashed = self.state, token_hash(token)
        usage = state.budget(hashed).usage(state.clock(), state.config)
        return state.stats.for_hash(hashed).to_json(usage)

    async def start(self) -> SimServer:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SimServer:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class BackgroundSim:
    """A SimServer on its own event loop in a daemon thread, for synchronous callers."""

    def __init__(self, config: SimConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.server = SimServer(config, host, port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self) -> SimState:
        """Read it only while no request is in flight: it belongs to the server's thread."""
        return self.server.state

    def start(self) -> BackgroundSim:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BackgroundSim:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
