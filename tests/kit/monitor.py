"""The Redis commands a piece of work makes, as Valkey's MONITOR sees them: those a client sent
(each one a round trip, or part of a pipelined one) and those scripts ran inside Valkey."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import redis.asyncio as aioredis

T = TypeVar("T")
_END = "monitor-watch-end"
# What a gateway's background work may send while requests are watched (the write-behind worker,
# job leases, the once-a-second rate-limit header flush, new pooled connections): none of it is
# per request.
BACKGROUND = frozenset({"xreadgroup", "xautoclaim", "set", "hset", "expire", "pexpire", "client",
                        "hello"})  # fmt: skip


@dataclass(frozen=True)
class Seen:
    sent: Counter[str]  # by command name (lower case; `script` for SCRIPT EXISTS/LOAD)
    in_scripts: Counter[str]

    def sent_by_requests(self) -> dict[str, int]:
        """`sent` less what the gateway's background work sends."""
        return {name: n for name, n in self.sent.items() if name not in BACKGROUND}


async def watched(redis_url: str, work: Awaitable[T]) -> tuple[T, Seen]:
    """`work`'s result and the commands Valkey ran while it ran (every client's)."""
    # No CLIENT SETINFO of its own (`driver_info=None`): the counts are the work's alone.
    client = aioredis.from_url(redis_url, driver_info=None)
    seen = Seen(Counter(), Counter())
    try:
        async with client.monitor() as monitor:
            result = await work
            await client.echo(_END)
            while True:
                command = await monitor.next_command()
                text = str(command["command"])
                name = text.split(" ", 1)[0].lower()
                if name == "echo" and _END in text:
                    break
                (seen.in_scripts if command["client_type"] == "lua" else seen.sent)[name] += 1
    finally:
        await client.aclose()
    return result, seen
