"""Calls of one Lua script by many callers, sent together.

A cache hit is one script call; under load each went out alone, on its own pooled connection,
and the process spent more time packing, sending and waking for replies than answering. Here
the calls made while one round trip is out wait for it to come back, then leave together as
one pipeline (`scripts.run_script_calls`), in arrival order: a burst of concurrent callers
costs a few round trips instead of one each, and a lone caller leaves at once, as before.
Each caller gets its own reply, or its own error (a failed round trip fails each of its calls).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

MAX_TRIP: Final = 64

# Keys as str, or as bytes made once for a call sent often (redis-py then encodes nothing).
Keys = Sequence[str | bytes]
Call = tuple[Keys, Sequence[Any]]
# Sends the calls as one round trip; a reply may be an exception (that call's own error).
Send = Callable[[Sequence[Call]], Awaitable[list[Any]]]


class Trips:
    def __init__(self, send: Send, max_trip: int = MAX_TRIP) -> None:
        self._send = send
        self._max = max_trip
        self._waiting: list[tuple[Keys, Sequence[Any], asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    def call(self, keys: Keys, args: Sequence[Any]) -> asyncio.Future[Any]:
        """Queue one call; its reply (or error) arrives on the future."""
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((keys, args, reply))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._flush())
        return reply

    async def _flush(self) -> None:
        try:
            while self._waiting:
                trip, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
                live = [c for c in trip if not c[2].done()]  # a cancelled caller is not asked
                if live:
                    await self._answer(live)
        except asyncio.CancelledError:
            for _, _, reply in self._waiting:  # closing: nobody will send these
                reply.cancel()
            self._waiting.clear()
            raise
        finally:
            self._sender = None

    async def _answer(self, trip: list[tuple[Keys, Sequence[Any], asyncio.Future[Any]]]) -> None:
        try:
            replies = await self._send([(keys, args) for keys, args, _ in trip])
        except asyncio.CancelledError:
            for _, _, reply in trip:
                reply.cancel()
            raise
        except Exception as exc:  # each caller judges the error as it would its own call
            replies = [exc] * len(trip)
        for (_, _, reply), got in zip(trip, replies, strict=True):
            if reply.done():
                continue
            if isinstance(got, Exception):
                reply.set_exception(got)
            else:
                reply.set_result(got)
