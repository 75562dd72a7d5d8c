"""One call to HubSpot on behalf of the write-behind worker, at background priority.

It goes through the same `AdmittedCaller` as forwarded traffic, so it counts against the one
budget, waits behind interactive calls, and has HubSpot's 429s absorbed for it.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict

from proxy.budget.limiter import Priority
from proxy.budget.plans import CallPlan
from proxy.upstream.transport import Outgoing

Send = Callable[[CallPlan, Outgoing], Awaitable[aiohttp.ClientResponse]]  # AdmittedCaller.send
# (credential, method, path) -> the budget plan of that call by the rules in force
PlanFor = Callable[[str, str, str], CallPlan]


class BackgroundCaller:
    def __init__(self, send: Send, plan_for: PlanFor, wait_s: float) -> None:
        self._send = send
        self._plan_for = plan_for
        self._wait_s = wait_s

    async def call(
        self, credential: str, token: str, method: str, path: str, body: bytes, *, idempotent: bool
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None); raises RateLimited when no budget came in `wait_s`."""
        plan = replace(
            self._plan_for(credential, method, path),
            priority=Priority.BACKGROUND,
            deadline=time.monotonic() + self._wait_s,
            idempotent=idempotent,
        )
        headers = CIMultiDict(
            {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
        )
        resp = await self._send(plan, Outgoing(method, path, headers, body))
        try:
            raw = await resp.read()
            status = resp.status
            # The upstream client does not decompress (it relays bytes to clients as they are).
            encoded = resp.headers.get("Content-Encoding", "").lower() == "gzip"
        finally:
            resp.release()
        return status, _parse(gzip.decompress(raw) if encoded else raw)


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
