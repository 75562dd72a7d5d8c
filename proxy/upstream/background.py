"""The gateway's own calls to HubSpot: write-behind batches, index loads, counter seeds, jobs.

They go through the same `AdmittedCaller` as forwarded traffic, so they count against the one
budget, wait behind interactive calls (background priority unless told otherwise) and have
HubSpot's 429s absorbed for them. The token is given by the caller: the client's own while it
waits, or the one kept in the vault for work done after it has gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import orjson
from multidict import CIMultiDict

from proxy.budget.model import Priority
from proxy.budget.plans import CallPlan
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.answer import Answer
from proxy.upstream.transport import Outgoing

# (credential, method, path) -> the budget plan of that call by the rules in force
PlanFor = Callable[[str, str, str], CallPlan]


def json_body(body: object) -> bytes:
    return b"" if body is None else orjson.dumps(body)


class BackgroundClient:
    def __init__(self, caller: AdmittedCaller, plan_for: PlanFor) -> None:
        self._caller = caller
        self._plan_for = plan_for

    async def call(
        self,
        credential: str,
        token: str,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        priority: Priority | None = Priority.BACKGROUND,
        wait_s: float | None = None,
        idempotent: bool | None = None,
    ) -> Answer:
        """HubSpot's answer, decoded; raises RateLimited when no budget came within the wait.

        `priority=None` and `wait_s=None` keep the route's own, by the rules; `idempotent`
        overrides the method's (a lookup POST may be retried after a 5xx)."""
        plan = self._plan(credential, method, path, priority, wait_s, idempotent)
        headers = CIMultiDict({"Authorization": f"Bearer {token}", "Accept": "application/json"})
        if body:
            headers["Content-Type"] = "application/json"
        return await self._caller.fetch(plan, Outgoing(method, path, headers, body))

    def _plan(
        self,
        credential: str,
        method: str,
        path: str,
        priority: Priority | None,
        wait_s: float | None,
        idempotent: bool | None,
    ) -> CallPlan:
        plan = self._plan_for(credential, method, path)
        if priority is not None:
            plan = replace(plan, priority=priority)
        if wait_s is not None:
            plan = replace(plan, deadline=time.monotonic() + wait_s)
        if idempotent is not None:
            plan = replace(plan, idempotent=idempotent)
        return plan
