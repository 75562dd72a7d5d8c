"""Singleflight: concurrent identical reads share one upstream call.

Twenty students opening the same exam page at 9:00 send the same GET; HubSpot needs to answer it
once. The first caller of a key (credential, method, path and query, body) sends the call; the
others that arrive while it is in flight wait for that answer and each gets its own copy (their
own `X-Request-Id` is set when the copy is sent back). Only CRM reads are shared: object GETs and
searches, whose answer does not depend on who asked, within one credential (invariant 4: the
credential is part of the key). They are small JSON answers, read whole to be shared (one past the
buffering cap is relayed to the first caller only; the others send their own); anything
else keeps the streaming path.

The upstream call runs in a task of its own, so a leader whose client hangs up does not take
its followers' answer down with it; when every caller has hung up, the call is cancelled and
leaves the budget queue, as a lone call would.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, Final

from aiohttp import web
from multidict import CIMultiDict

from proxy.hubspot import protocol as hubspot
from proxy.metrics import Metrics
from proxy.upstream.answer import Answer

FlightKey = tuple[str, str, str, str]  # credential, method, path and query, body digest
CRM_PREFIX: Final = "/crm/"


def flight_key(
    credential: str | None, method: str, path_qs: str, path: str, body: bytes
) -> FlightKey | None:
    """The key under which identical reads meet; None for calls that must go out alone."""
    if not credential or not path.startswith(CRM_PREFIX):
        return None  # no token: nothing may be shared (invariant 4)
    if method != "GET" and not hubspot.is_search(method, path):
        return None
    return credential, method, path_qs, hashlib.sha256(body).hexdigest()


def _copy(answer: Answer) -> Answer:
    """Each caller's own answer: rules may overlay the body or headers of theirs."""
    return replace(answer, headers=CIMultiDict(answer.headers))


# A leader's answer past the buffering cap is relayed to its own client as it streams in.
Shared = Answer | web.StreamResponse


@dataclass
class _Flight:
    task: asyncio.Task[Shared]
    waiters: int = 0


class Singleflight:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._flights: dict[FlightKey, _Flight] = {}

    async def share(
        self, key: FlightKey, send: Callable[[], Coroutine[Any, Any, Shared]]
    ) -> Shared | None:
        """HubSpot's answer to the call under `key`: sent now, or the one already in flight.

        None for a follower whose leader's answer was too large to share (it was relayed to the
        leader's client): the follower sends its own call."""
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _Flight(asyncio.create_task(send()))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda done: self._landed(key, done))
        else:
            self._metrics.singleflight_hits.labels("call").inc()
        flight.waiters += 1
        try:
            answer = await asyncio.shield(flight.task)
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # every caller hung up: the call leaves the queue
        if isinstance(answer, Answer):
            return _copy(answer)
        return answer if leader else None

    def _landed(self, key: FlightKey, task: asyncio.Task[Shared]) -> None:
        flight = self._flights.get(key)
        if flight is not None and flight.task is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # raised to every waiter; marked seen for when none is left
