"""Writes that must survive a primary failover: MULTI/EXEC, then WAIT, on one connection.

Redis replicates asynchronously: a primary that dies a moment after answering can take the
newest writes with it, and the replica promoted in its place never saw them. For a write the
gateway is about to vouch for (a write-behind item it tells the client was accepted, the mark
that a create is about to reach HubSpot), `WAIT n timeout` holds the reply until n replicas
have it, and says how many did. WAIT counts the writes of its own connection, so the
transaction and the WAIT go out together on one connection taken from the client's pool (for a
cluster: the pool of the node that serves the key). What a shortfall means is the caller's
choice (`proxy.writes.store`: an accepted write is refused with 503, an in-flight mark is sent
anyway).

Its price: the replication latency on each such write, and, while no replica answers within the
timeout, writes refused rather than accepted on a primary alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError

from proxy.store.client import CLOSED_UNDER_US

Command = tuple[str | int | bytes, ...]


class NotReplicated(ConnectionError):
    """The write is on the primary only: a failover now could lose it."""


async def transact_and_wait(
    client: aioredis.Redis, key: str, commands: Sequence[Command], replicas: int, timeout_ms: int
) -> tuple[list[Any], int]:
    """EXEC's replies and how many replicas acknowledged them within `timeout_ms`."""
    batch: list[Command] = [("MULTI",), *commands, ("EXEC",), ("WAIT", replicas, timeout_ms)]
    if isinstance(client, RedisCluster):
        await client.initialize()  # the slot map is read lazily, on the first command
        node = client.get_node_from_key(key)
        conn = node.acquire_connection()
        try:
            replies = await _send(conn, batch)
        finally:
            node.release(conn)
    else:
        pool = client.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            replies = await _send(conn, batch)
        finally:
            await pool.release(conn)
    return list(replies[-2]), int(replies[-1])


async def _send(conn: Any, batch: Sequence[Command]) -> list[Any]:
    try:
        await conn.send_packed_command(conn.pack_commands(batch))
        return [await conn.read_response() for _ in batch]
    except BaseException as exc:
        await conn.disconnect()  # replies may be left unread: never hand it out again as is
        if isinstance(exc, CLOSED_UNDER_US):
            raise ConnectionError(f"connection closed under the write: {exc!r}") from exc
        raise
