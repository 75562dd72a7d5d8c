"""A lane's admission requests to Redis, sent together.

Callers of one lane (a credential and bucket set, see `limiter`) ask Redis for a slot in
(priority, arrival) order: that is how higher classes get the budget first. Waiting for each
reply before the next caller may ask held one lane to one admission per Redis round trip, so
a busy credential queued behind its own round trips. Instead each caller hands its request
to the lane's batch and gives up its turn at once; the requests that gathered while a batch
was out leave together, in (priority, arrival) order, as one pipeline of `admit.lua` calls:
the same calls in the same order as one by one, in one round trip.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.budget.model import BucketSpec

MAX_BATCH: Final = 64
# Of a window's limit, the share one round trip may reserve. The calls a batch admits leave
# together, and the last of them reaches HubSpot later than its slot by the time the process
# takes to send the others; the window's guard (`plans.guarded_window_ms`) absorbs that only
# while a batch is a small part of the window. Realistic limits (search: 5 a second) thus ask
# one at a time, as before; limits that never bind batch up to MAX_BATCH.
WINDOW_SHARE: Final = 10


def batch_cap(specs: Sequence[BucketSpec]) -> int:
    """How many asks of a lane with these buckets one round trip may carry."""
    windows = [spec.limit // WINDOW_SHARE for spec in specs if spec.kind == "window"]
    return max(1, min([MAX_BATCH, *windows]))


# Keys and args as redis-py takes them; a lane's are bytes, made once (`Limiter._bucket_args`).
Key = str | bytes
Arg = str | int | bytes


@dataclass(order=True)
class Ask:
    priority: int
    seq: int
    keys: Sequence[Key] = field(compare=False)
    args: Sequence[Arg] = field(compare=False)
    reply: asyncio.Future[Any] = field(compare=False)
    # Told the reply its caller, gone (its `reply` cancelled), never read: what the script
    # reserved for it is given back there. The caller awaits `reply` itself, without a shield.
    orphaned: Callable[[Any], object] | None = field(default=None, compare=False)


Send = Callable[[Sequence[Ask]], Awaitable[list[Any]]]
Spawn = Callable[[Coroutine[Any, Any, None]], object]


class AskBatch:
    def __init__(self, send: Send, spawn: Spawn, max_batch: int = MAX_BATCH) -> None:
        """`send` makes the round trip (bounded in time by the caller's own timeout); `spawn`
        runs the sender as a task the limiter waits for on close."""
        self._send = send
        self._spawn = spawn
        self._max = max_batch
        # (priority, seq, ask): compared as tuples, in C; seq is unique, so never by the ask
        self._waiting: list[tuple[int, int, Ask]] = []
        self._out = False

    def ask(
        self,
        priority: int,
        seq: int,
        keys: Sequence[Key],
        args: Sequence[Arg],
        orphaned: Callable[[Any], object] | None = None,
    ) -> Ask:
        """Queue one admit call; its reply (or the round trip's error) arrives on `reply`, or
        at `orphaned` when the caller cancelled `reply` before it came."""
        loop = asyncio.get_running_loop()
        ask = Ask(priority, seq, keys, args, loop.create_future(), orphaned)
        heapq.heappush(self._waiting, (priority, seq, ask))
        if not self._out:
            self._out = True
            self._spawn(self._flush())
        return ask

    async def _flush(self) -> None:
        try:
            while self._waiting:
                count = min(len(self._waiting), self._max)
                asks = [heapq.heappop(self._waiting)[2] for _ in range(count)]
                await self._answer(asks)
        except asyncio.CancelledError:
            for _, _, ask in self._waiting:  # closing: nobody will send these
                ask.reply.cancel()
            self._waiting.clear()
            raise
        finally:
            self._out = False

    async def _answer(self, asks: list[Ask]) -> None:
        try:
            replies = await self._send(asks)
        except asyncio.CancelledError:
            for ask in asks:
                ask.reply.cancel()
            raise
        except Exception as exc:  # each caller judges the error as it would its own call
            for ask in asks:
                if not ask.reply.done():
                    ask.reply.set_exception(exc)
            return
        for ask, reply in zip(asks, replies, strict=True):
            if not ask.reply.done():
                ask.reply.set_result(reply)
            elif ask.reply.cancelled() and ask.orphaned is not None:
                ask.orphaned(reply)
