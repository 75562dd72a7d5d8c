"""Groups of compatible calls that leave together as one batch call when budget is short.

A call finds no open group of its kind: if no call of that kind left within the hold window and
a slot is free now (a non-waiting try), it leaves at once, alone, with no added latency.
Otherwise it opens a group and leads it: the group gathers for at most `max_hold`, then the
leader waits for admission while more calls join, up to `max_batch`. When the slot comes the
group leaves: alone as the original single call, or as one batch call whose answer is cut back
into each caller's single answer (`split`). A call the batch answer does not settle exactly is
handed back to its caller, who sends it on its own within its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Final

import orjson
from multidict import CIMultiDict

from proxy.budget.model import BucketSpec, Priority
from proxy.budget.plans import CallPlan
from proxy.errors import GatewayError, UpstreamUnreachable
from proxy.metrics import Metrics
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.coalesce.calls import BatchableCall
from proxy.upstream.coalesce.pacing import hold_s
from proxy.upstream.coalesce.shapes import BatchCall, batch_call
from proxy.upstream.coalesce.split import AMBIGUOUS, Made, Single, split_answer
from proxy.upstream.forward import Buffered, read_whole
from proxy.upstream.rate_headers import RateLimitSnapshot, parse_headers
from proxy.upstream.transport import Outgoing

log = logging.getLogger("proxy.coalesce")

# A 4xx naming the whole batch: some input is bad, so halves are tried to find it.
SPLITTABLE: Final = frozenset({400, 409, 413, 422})
# Answers every single call of the group would have had too (same token, same HubSpot trouble).
SHARED: Final = frozenset({401, 403})
# Operations whose batch call may be resent after a 5xx or a timeout: applying them twice is
# harmless. A create may have been applied before failing, so it is never resent.
IDEMPOTENT: Final = frozenset({"read", "associate"})


@dataclass(frozen=True)
class Ride:
    """One single call offered for coalescing, with its route's `coalesce:` settings."""

    call: BatchableCall
    plan: CallPlan
    out: Outgoing
    max_batch: int
    max_hold_s: float
    batch_buckets: Sequence[BucketSpec]  # what the batch call draws from


@dataclass
class _Member:
    ride: Ride
    joined: float
    answer: asyncio.Future[Buffered | None]  # None: send it on your own


@dataclass
class _Group:
    key: tuple[str, ...]
    leader: Ride
    hold_s: float
    members: list[_Member] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)


class Coalescer:
    def __init__(self, caller: AdmittedCaller, metrics: Metrics) -> None:
        self._caller = caller
        self._metrics = metrics
        self._open: dict[tuple[str, ...], _Group] = {}
        self._left: dict[tuple[str, ...], float] = {}  # when a call of each kind last left
        self._waiting: Counter[tuple[str, ...]] = Counter()  # groups not yet left, by kind
        self._seen: dict[str, RateLimitSnapshot] = {}  # HubSpot's last budget headers
        self._record_turns: dict[tuple[str, ...], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, ride: Ride) -> Buffered:
        """HubSpot's answer to the single call, exactly as if it had gone out alone."""
        async with self._record_turn(ride):
            answer = await self._coalesced(ride)
            if answer is None:
                answer = await read_whole(await self._caller.send(ride.plan, ride.out))
        seen = parse_headers(answer.headers)
        if seen.max is not None and seen.remaining is not None:
            self._seen[ride.plan.credential] = seen
        return answer

    async def aclose(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _record_turn(self, ride: Ride) -> AsyncIterator[None]:
        """Updates of one record leave one at a time, in arrival order: a second PATCH of an id
        waits for the first's answer, so it rides in a later batch (HubSpot refuses an id twice)."""
        if ride.call.operation != "update":
            yield
            return
        key = (ride.plan.credential, *ride.call.group, ride.call.object_id)
        while (ahead := self._record_turns.get(key)) is not None:
            await asyncio.shield(ahead)
        mine = asyncio.get_running_loop().create_future()
        self._record_turns[key] = mine
        try:
            yield
        finally:
            del self._record_turns[key]
            mine.set_result(None)

    async def _coalesced(self, ride: Ride) -> Buffered | None:
        key = (ride.plan.credential, *ride.call.group)
        group = self._open.get(key)
        if group is None:
            if self._pressed(key, ride) or not await self._caller.try_admit(ride.plan):
                group = self._open.get(key) or self._open_group(key, ride)
            else:
                self._left[key] = time.monotonic()
                return await read_whole(await self._caller.send(ride.plan, ride.out, admitted=True))
        if ride.plan.deadline < group.leader.plan.deadline:
            return None  # the group may wait longer than this call may: it waits on its own
        member = _Member(ride, time.monotonic(), asyncio.get_running_loop().create_future())
        group.members.append(member)
        if len(group.members) >= ride.max_batch:
            self._seal(group)
        return await asyncio.shield(member.answer)

    def _hold_s(self, ride: Ride) -> float:
        return hold_s(ride.max_hold_s, self._seen.get(ride.plan.credential))

    def _pressed(self, key: tuple[str, ...], ride: Ride) -> bool:
        """Calls of this kind keep coming (one left within the hold window) or wait for budget
        (a group has not left yet): a new one gathers instead of spending a slot alone."""
        recent = time.monotonic() - self._left.get(key, -math.inf) < self._hold_s(ride)
        return recent or self._waiting[key] > 0

    def _open_group(self, key: tuple[str, ...], leader: Ride) -> _Group:
        group = _Group(key, leader, self._hold_s(leader))
        self._open[key] = group
        self._waiting[key] += 1
        task = asyncio.ensure_future(self._run(group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return group

    def _seal(self, group: _Group) -> None:
        if self._open.get(group.key) is group:
            del self._open[group.key]
        group.full.set()

    async def _run(self, group: _Group) -> None:
        try:
            admitted = await self._admitted(group)
        finally:
            self._seal(group)
            self._waiting[group.key] -= 1
            if self._waiting[group.key] <= 0:
                del self._waiting[group.key]
        if admitted is not None:
            self._left[group.key] = time.monotonic()
            await self._leave(group.members, admitted)

    async def _admitted(self, group: _Group) -> CallPlan | None:
        """Hold the group open, then wait for its slot while more calls join."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(group.full.wait(), group.hold_s)
        plan = _batch_plan(group)
        try:
            await self._caller.admit(plan)
        except Exception as exc:  # RateLimited, mostly: the leader's deadline is gone
            leader, *others = group.members
            _settle(leader, exc)
            for member in others:
                _settle(member, None)  # each may still meet its own deadline alone
            return None
        return plan

    async def _leave(self, members: list[_Member], plan: CallPlan) -> None:
        now = time.monotonic()
        operation = members[0].ride.call.operation
        for member in members:
            self._metrics.coalesce_hold.labels(operation).observe(now - member.joined)
        try:
            if len(members) == 1 and plan.buckets == members[0].ride.plan.buckets:
                ride = members[0].ride
                alone = await self._caller.send(ride.plan, ride.out, admitted=True)
                _settle(members[0], await read_whole(alone))
                return
            await self._batch(members, plan, admitted=True)
        except GatewayError as exc:
            for member in members:
                _settle(member, exc)
        except Exception as exc:  # never leave a caller waiting forever
            log.exception("coalesced batch failed")
            for member in members:
                _settle(member, exc)

    async def _batch(self, members: list[_Member], plan: CallPlan, *, admitted: bool) -> None:
        """Send `members` as one batch call; a batch HubSpot refuses whole is bisected."""
        if len(members) == 1 and not admitted:  # a bisected batch's last input: alone
            _settle(members[0], None)
            return
        if not admitted:
            await self._caller.admit(plan)
        calls = [m.ride.call for m in members]
        operation = calls[0].operation
        self._metrics.coalesced_batch_size.labels(operation).observe(len(members))
        batch = batch_call(calls)
        leader = members[0].ride.out
        out = Outgoing("POST", calls[0].batch_path, _batch_headers(leader), batch.body)
        answer = await read_whole(await self._caller.send(plan, out, admitted=True))
        if answer.status in SPLITTABLE:
            half = len(members) // 2
            await self._batch(members[:half], plan, admitted=False)
            await self._batch(members[half:], plan, admitted=False)
            return
        if answer.status in SHARED or answer.status >= 500:
            for member in members:
                _settle(member, replace(answer, headers=CIMultiDict(answer.headers)))
            return
        singles = _split(calls, batch, answer)
        for member, single in zip(members, singles, strict=True):
            _settle(member, _single_answer(single, answer))
        settled = sum(isinstance(single, Made) for single in singles)
        self._metrics.coalesce_calls_saved.labels(operation).inc(max(0, settled - 1))


def _batch_plan(group: _Group) -> CallPlan:
    leader = group.leader.plan
    priority = min((m.ride.plan.priority for m in group.members), default=leader.priority)
    return CallPlan(
        credential=leader.credential,
        buckets=group.leader.batch_buckets,
        priority=Priority(priority),
        deadline=leader.deadline,
        idempotent=group.leader.call.operation in IDEMPOTENT,
        daily_reset_ms=leader.daily_reset_ms,
        trace=leader.trace,
    )


def _batch_headers(leader: Outgoing) -> CIMultiDict[str]:
    headers = CIMultiDict(leader.headers)
    headers.popall("Content-Type", None)
    headers["Content-Type"] = "application/json"
    return headers


def _split(calls: list[BatchableCall], batch: BatchCall, answer: Buffered) -> list[Single]:
    if answer.status not in (200, 201, 207):
        return [None] * len(calls)  # e.g. a 404 for the batch endpoint: the singles may work
    try:
        body: Any = orjson.loads(answer.body)
    except orjson.JSONDecodeError:
        body = None
    return split_answer(calls, batch, answer.status, body)


def _single_answer(single: Single, batch: Buffered) -> Buffered | GatewayError | None:
    """The single answer, with the batch answer's headers (rate-limit headers included)."""
    if single is None:
        return None
    if single is AMBIGUOUS:
        return UpstreamUnreachable("HubSpot's answer did not say whether this record was created")
    assert isinstance(single, Made)
    headers = CIMultiDict(batch.headers)
    headers.popall("Content-Encoding", None)
    reason = HTTPStatus(single.status).phrase
    return Buffered(single.status, reason, headers, orjson.dumps(single.body))


def _settle(member: _Member, outcome: Buffered | BaseException | None) -> None:
    if member.answer.done():
        return
    if isinstance(outcome, BaseException):
        member.answer.set_exception(outcome)
    else:
        member.answer.set_result(outcome)
