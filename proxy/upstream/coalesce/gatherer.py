"""Groups of compatible calls that leave together as one batch call when budget is short.

Every departure takes a paced slot (`pacing`). A call that finds no open group of its kind, and
no group of its kind waiting, takes the pace slot if it is free now (a non-waiting try) and
leaves at once, alone, with no added latency. Otherwise it opens a group and leads it: the
group gathers for the route's `max_hold` (none by default: only while it waits), then the
leader waits for the group's paced slot while more calls join, up to `max_batch`. When the slot
comes the group leaves with everything gathered: alone as the original single call, or as one
batch call whose answer is cut back into each caller's single answer (`split`). A call the
batch answer does not settle exactly is handed back to its caller, who sends it on its own
within its own deadline.

When a group's slot cannot come before its earliest member's deadline, that member gets the 429
and the others join the next group of their kind (`Regroup`) rather than each sending alone: at
saturation a call alone spends a whole departure on one caller, the very waste that kept the
budget behind (N=3000: 57 of 191 paced departures went out alone before this).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Final

from aiohttp import web

from proxy.budget.model import Priority
from proxy.budget.plans import CallPlan
from proxy.hubspot import protocol as hubspot
from proxy.metrics import Metrics
from proxy.upstream.admitted import AdmittedCaller, RateLimited
from proxy.upstream.answer import Answer
from proxy.upstream.coalesce.departure import Alone, Departure, Member, Regroup, Ride, settle
from proxy.upstream.coalesce.pacing import pace_first

__all__ = ["Coalescer", "Ride"]

# Operations whose batch call may be resent after a 5xx or a timeout: applying them twice is
# harmless. A create may have been applied before failing, so it is never resent.
IDEMPOTENT: Final = frozenset({"read", "associate"})


SendAlone = Callable[[bool], Awaitable[Answer | web.StreamResponse]]


@dataclass
class _Group:
    key: tuple[str, ...]
    leader: Ride
    hold_s: float
    members: list[Member] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)
    # The batch call's deadline, once it asks for its slot: the earliest of its members'.
    deadline: float | None = None
    left: bool = False  # its slot came (or never will): no member leaves it any more


class Coalescer:
    def __init__(self, caller: AdmittedCaller, metrics: Metrics) -> None:
        self._caller = caller
        self._metrics = metrics
        self._departure = Departure(caller, metrics)
        self._open: dict[tuple[str, ...], _Group] = {}
        self._waiting: Counter[tuple[str, ...]] = Counter()  # groups not yet left, by kind
        self._record_turns: dict[tuple[str, ...], asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def send(self, ride: Ride, alone: SendAlone) -> Answer | web.StreamResponse:
        """HubSpot's answer to the single call, exactly as if it had gone out alone; a call that
        rides in no batch is sent by `alone` (told whether its slot is already reserved)."""
        if ride.admission is not None:
            await self._caller.admit(ride.admission)  # RateLimited (429) past its deadline
        async with self._record_turn(ride):
            outcome = await self._coalesced(ride)
            while isinstance(outcome, Regroup):  # ends: each failed slot settles a member's 429
                self._metrics.coalesce_regrouped.labels(ride.call.operation).inc()
                outcome = await self._coalesced(ride)
            if isinstance(outcome, Alone):
                self._metrics.coalesce_alone.labels(ride.call.operation, outcome.reason).inc()
                return await alone(outcome.admitted)
            return outcome

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

    async def _coalesced(self, ride: Ride) -> Answer | Alone | Regroup:
        key = (ride.plan.credential, *ride.call.group)
        group = self._open.get(key)
        if group is None:
            # A group of this kind waiting for its slot: a new call waits for the next one too.
            lone = replace(ride.plan, buckets=ride.lone_buckets)
            if self._waiting[key] > 0 or not await self._caller.try_admit(lone):
                group = self._open.get(key) or self._open_group(key, ride)
            else:
                return Alone(admitted=True, reason="idle")
        member = Member(ride, time.monotonic(), asyncio.get_running_loop().create_future())
        group.members.append(member)
        if group.deadline is not None and ride.plan.deadline < group.deadline:
            self._leave_if_late(group, member)
        if len(group.members) >= ride.max_batch:
            self._seal(group)
        return await asyncio.shield(member.answer)

    def _leave_if_late(self, group: _Group, member: Member) -> None:
        """The group may wait longer than this call may: the call rides with it unless its own
        deadline comes first, and then gets its 429 and leaves the group. Sent alone instead, it
        would spend a departure of its own on one caller (N=3000: 199 contact reads did)."""

        def late() -> None:
            if member.answer.done() or group.left or member not in group.members:
                return
            group.members.remove(member)
            retry_after_s = (group.deadline or 0.0) - time.monotonic()
            settle(member, RateLimited(hubspot.POLICY_TEN_SECONDLY, max(1.0, retry_after_s)))

        wait_s = max(0.0, member.ride.plan.deadline - time.monotonic())
        timer = asyncio.get_running_loop().call_later(wait_s, late)
        member.answer.add_done_callback(lambda _: timer.cancel())

    def _open_group(self, key: tuple[str, ...], leader: Ride) -> _Group:
        group = _Group(key, leader, leader.max_hold_s)
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
            group.left = True
            self._seal(group)
            self._waiting[group.key] -= 1
            if self._waiting[group.key] <= 0:
                del self._waiting[group.key]
        if admitted is not None:
            await self._departure.leave(group.members, admitted)

    async def _admitted(self, group: _Group) -> CallPlan | None:
        """Hold the group open (if the route says so), then wait for its paced slot while more
        calls join."""
        if group.hold_s > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(group.full.wait(), group.hold_s)
        plan = _batch_plan(group)
        group.deadline = plan.deadline
        try:
            for buckets in pace_first(plan.buckets):
                await self._caller.admit(replace(plan, buckets=buckets))
        except Exception as exc:  # RateLimited, mostly: the earliest deadline is gone
            later: Regroup | Alone = (
                Regroup()
                if isinstance(exc, RateLimited)
                else Alone(admitted=False, reason="admission failed")
            )
            for member in group.members:
                # the members whose deadline is gone get the 429; the others may still meet theirs
                late = member.ride.plan.deadline <= plan.deadline
                settle(member, exc if late else later)
            return None
        return plan


def _batch_plan(group: _Group) -> CallPlan:
    leader = group.leader.plan
    priority = min((m.ride.plan.priority for m in group.members), default=leader.priority)
    deadline = min((m.ride.plan.deadline for m in group.members), default=leader.deadline)
    return CallPlan(
        credential=leader.credential,
        buckets=group.leader.batch_buckets,
        priority=Priority(priority),
        deadline=deadline,
        idempotent=group.leader.call.operation in IDEMPOTENT,
        daily_reset_ms=leader.daily_reset_ms,
        trace=leader.trace,
    )
