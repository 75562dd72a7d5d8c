"""How long a request sat in the kernel before its handler ran, read from the socket (Linux)."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.http.incoming import kernel_wait_s

pytestmark = pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="TCP_INFO is Linux's")


async def _waited(server_start: Any, connect: Any, hold_s: float) -> float | None:
    """The reading on the server's side of a connection whose request sat `hold_s`."""
    seen: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(hold_s)  # the data is in the socket's buffer, not read yet
        seen.set_result(kernel_wait_s(SimpleNamespace(transport=writer.transport)))  # type: ignore[arg-type]
        writer.close()

    server = await server_start(handle)
    async with server:
        _, writer = await connect(server)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        try:
            return await seen
        finally:
            writer.close()


async def test_a_request_that_sat_in_the_socket_shows_how_long() -> None:
    async def tcp_server(handle: Any) -> asyncio.Server:
        return await asyncio.start_server(handle, "127.0.0.1", 0)

    async def tcp_connect(server: asyncio.Server) -> Any:
        return await asyncio.open_connection(*server.sockets[0].getsockname()[:2])

    quick = await _waited(tcp_server, tcp_connect, 0.0)
    held = await _waited(tcp_server, tcp_connect, 0.3)
    assert quick is not None and quick < 0.2
    assert held is not None and 0.25 <= held < 5


async def test_no_reading_where_the_socket_is_not_tcp() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "s")

        async def unix_server(handle: Any) -> asyncio.Server:
            return await asyncio.start_unix_server(handle, path)

        async def unix_connect(server: asyncio.Server) -> Any:
            return await asyncio.open_unix_connection(path)

        assert await _waited(unix_server, unix_connect, 0.0) is None
    assert kernel_wait_s(SimpleNamespace(transport=None)) is None  # type: ignore[arg-type]
