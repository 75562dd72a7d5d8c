"""A group's departure: its one call to HubSpot, and each member's answer from it.

A group of one sends its own single call. A larger group sends one batch call: a batch HubSpot
refuses whole is bisected (halves re-admitted; a last lone input goes alone), an answer every
single call would have had too (401/403, 5xx) reaches each member as is, and a 200/201/207 is
cut back into each member's single answer (`split`). A member the answer does not settle is
handed back to its caller (None), who sends it alone within its own deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, Final, Literal

import orjson
from multidict import CIMultiDict

from proxy.budget.model import BucketSpec
from proxy.budget.plans import CallPlan
from proxy.errors import GatewayError, UpstreamUnreachable
from proxy.metrics import Metrics
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.answer import Answer
from proxy.upstream.coalesce.calls import BatchableCall
from proxy.upstream.coalesce.pacing import same_slot
from proxy.upstream.coalesce.shapes import BatchCall, batch_call
from proxy.upstream.coalesce.split import AMBIGUOUS, Made, Single, split_answer
from proxy.upstream.transport import Outgoing

log = logging.getLogger("proxy.coalesce")

# A 4xx naming the whole batch: some input is bad, so halves are tried to find it.
SPLITTABLE: Final = frozenset({400, 409, 413, 422})
# Answers every single call of the group would have had too (same token, same HubSpot trouble).
SHARED: Final = frozenset({401, 403})


@dataclass(frozen=True)
class Ride:
    """One single call offered for coalescing, with its route's `coalesce:` settings."""

    call: BatchableCall
    plan: CallPlan
    out: Outgoing
    max_batch: int
    max_hold_s: float
    batch_buckets: Sequence[BucketSpec]  # what the batch call draws from
    lone_buckets: Sequence[BucketSpec]  # what a call leaving alone at once must find free
    # The rider's own units of buckets that count flows, not calls (`admissions`): taken by
    # each rider before it gathers, since a batch call draws them once for all its riders.
    admission: CallPlan | None = None


# Why a call of a coalescing route went out alone (`hubspot_proxy_coalesce_alone_total`'s label).
AloneReason = Literal["idle", "one", "unsettled", "bisected", "admission failed"]


@dataclass(frozen=True)
class Alone:
    """Not coalesced: the caller sends its call on its own, as a single call would go (its
    answer relayed past the buffering cap, like any forwarded answer). `admitted`: the slot it
    leaves in is already reserved; `reason`: why, for `hubspot_proxy_coalesce_alone_total`."""

    admitted: bool
    reason: AloneReason


@dataclass(frozen=True)
class Regroup:
    """The group's slot came too late for its earliest member; this member's deadline is later,
    so it joins the next group of its kind instead of spending a call of its own."""


@dataclass
class Member:
    ride: Ride
    joined: float
    answer: asyncio.Future[Answer | Alone | Regroup]


class Departure:
    def __init__(self, caller: AdmittedCaller, metrics: Metrics) -> None:
        self._caller = caller
        self._metrics = metrics

    async def leave(self, members: list[Member], plan: CallPlan) -> None:
        """Send what the group holds, within the slot `plan` was admitted for."""
        now = time.monotonic()
        operation = members[0].ride.call.operation
        for member in members:
            self._metrics.coalesce_hold.labels(operation).observe(now - member.joined)
        try:
            if len(members) == 1 and same_slot(plan.buckets, members[0].ride.plan.buckets):
                settle(members[0], Alone(admitted=True, reason="one"))
                return
            await self._batch(members, plan, admitted=True)
        except GatewayError as exc:
            for member in members:
                settle(member, exc)
        except Exception as exc:  # never leave a caller waiting forever
            log.exception("coalesced batch failed")
            for member in members:
                settle(member, exc)

    async def _batch(self, members: list[Member], plan: CallPlan, *, admitted: bool) -> None:
        """Send `members` as one batch call; a batch HubSpot refuses whole is bisected."""
        if len(members) == 1 and not admitted:  # a bisected batch's last input: alone
            settle(members[0], Alone(admitted=False, reason="bisected"))
            return
        if not admitted:
            await self._caller.admit(plan)
        calls = [m.ride.call for m in members]
        operation = calls[0].operation
        self._metrics.coalesced_batch_size.labels(operation).observe(len(members))
        batch = batch_call(calls)
        leader = members[0].ride.out
        out = Outgoing("POST", calls[0].batch_path, _batch_headers(leader), batch.body)
        answer = await self._caller.fetch_entire(plan, out, admitted=True)
        if answer.status in SPLITTABLE:
            half = len(members) // 2
            await self._batch(members[:half], plan, admitted=False)
            await self._batch(members[half:], plan, admitted=False)
            return
        if answer.status in SHARED or answer.status >= 500:
            for member in members:
                settle(member, replace(answer, headers=CIMultiDict(answer.headers)))
            return
        singles = _split(calls, batch, answer)
        for member, single in zip(members, singles, strict=True):
            settle(member, _single_answer(single, answer))
        settled = sum(isinstance(single, Made) for single in singles)
        self._metrics.coalesce_calls_saved.labels(operation).inc(max(0, settled - 1))


def _batch_headers(leader: Outgoing) -> CIMultiDict[str]:
    headers = CIMultiDict(leader.headers)
    headers.popall("Content-Type", None)
    headers["Content-Type"] = "application/json"
    return headers


def _split(calls: list[BatchableCall], batch: BatchCall, answer: Answer) -> list[Single]:
    if answer.status not in (200, 201, 207):
        return [None] * len(calls)  # e.g. a 404 for the batch endpoint: the singles may work
    try:
        body: Any = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        body = None
    return split_answer(calls, batch, answer.status, body)


def _single_answer(single: Single, batch: Answer) -> Answer | GatewayError | Alone:
    """The single answer, with the batch answer's headers (rate-limit headers included)."""
    if single is None:
        return Alone(admitted=False, reason="unsettled")  # HubSpot's own answer, e.g. its 400
    if single is AMBIGUOUS:
        return UpstreamUnreachable("HubSpot's answer did not say whether this record was created")
    assert isinstance(single, Made)
    headers = CIMultiDict(batch.headers)
    headers.popall("Content-Encoding", None)
    reason = HTTPStatus(single.status).phrase
    return Answer(single.status, reason, headers, orjson.dumps(single.body))


def settle(member: Member, outcome: Answer | Alone | Regroup | BaseException) -> None:
    if member.answer.done():
        return
    if isinstance(outcome, BaseException):
        member.answer.set_exception(outcome)
    else:
        member.answer.set_result(outcome)
