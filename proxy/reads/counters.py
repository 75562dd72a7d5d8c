"""Exam booking counters kept in Redis (PRD 1C): the store and its one script.

The count of an exam is authoritative here, not in HubSpot: HubSpot's copy is eventually
consistent, and clients computing `total_bookings + 1` from a stale read would overbook. A count
starts from HubSpot's value the first time the gateway sees the exam (seed), then moves only with
the bookings the gateway sees linked and cancelled. Which bookings are counted is a set, so a
booking counted twice (a retried association) or cancelled twice changes the count once.

Redis layout (under the credential's hash tag; 90-day TTL by default, refreshed on change):

    ctr:{type}:{id}              HASH count, capacity
    ctr:{type}:{id}:members      SET of counted booking ids
    ctr:{type}:{id}:pending      ZSET of seats reserved ahead of a booking (expiring)
    ctrlink:{booking type}:{id}  the counter object a booking is counted in (for cancellations)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from proxy.rules.loader import CounterRule
from proxy.store.keys import key, part
from proxy.store.rule_store import IMPATIENT, PATIENT, UNAVAILABLE, RuleRedis, Unavailable
from proxy.store.scripts import run_script_batch, script

RESERVATION_HOLD_MS: Final = 10 * 60_000  # a reserved seat not taken by a booking comes back


def count_value(value: Any) -> int | None:
    """A count property as HubSpot sends it ("12", "12.0", 12); None when it is not a count."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() and number >= 0 else None


class CounterKeys:
    @staticmethod
    def base(cred: str, rule: CounterRule, object_id: str) -> str:
        return key(cred, "ctr", part(rule.object_type), part(object_id))

    @staticmethod
    def link(cred: str, rule: CounterRule, booking_id: str) -> str:
        return key(cred, "ctrlink", part(rule.booking_object_type), part(booking_id))

    @classmethod
    def all(cls, cred: str, rule: CounterRule, object_id: str, booking_id: str) -> list[str]:
        base = cls.base(cred, rule, object_id)
        return [base, base + ":members", base + ":pending", cls.link(cred, rule, booking_id)]


@dataclass(frozen=True)
class CounterState:
    status: str  # ok | unchanged | unseeded | full | nocapacity
    count: int | None
    capacity: int | None


@dataclass(frozen=True)
class Op:
    """One call of the script for one counter object."""

    object_id: str
    op: str = "read"
    seed: int | None = None
    capacity: int | None = None
    booking_id: str = ""
    reservation_id: str = ""
    limit: int | None = None  # reserve: the caller's capacity for this call (not stored)


def _opt(value: int | None) -> str:
    return "" if value is None else str(value)


def counter_state(reply: Sequence[Any]) -> CounterState:
    status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    return CounterState(status, count_value(_text(reply[1])), count_value(_text(reply[2])))


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class Counters:
    def __init__(self, store: RuleRedis) -> None:
        self.store = store
        client = store.client
        self._script = script(client, "counter_core", "counter_ops") if client else None

    def script_args(self, cred: str, rule: CounterRule, op: Op) -> tuple[list[str], list[str]]:
        keys = CounterKeys.all(cred, rule, op.object_id, op.booking_id or "-")
        args = [
            op.op,
            str(rule.ttl_ms),
            _opt(op.seed),
            _opt(op.capacity),
            op.booking_id,
            op.object_id,
            op.reservation_id,
            str(RESERVATION_HOLD_MS),
            _opt(op.limit),
        ]
        return keys, args

    async def apply(
        self, cred: str, rule: CounterRule, op: Op, *, patient: bool = False
    ) -> CounterState | Unavailable:
        """`patient` (`rule_store.PATIENT`): only for an op safe to ask twice, since
        a call that timed out may have run: a reserve with its reservation id (the script holds
        it once), a release that names its booking or reservation."""
        found = await self.apply_many(cred, rule, [op], patient=patient)
        return found if isinstance(found, Unavailable) else found[0]

    async def apply_many(
        self, cred: str, rule: CounterRule, ops: Sequence[Op], *, patient: bool = False
    ) -> list[CounterState] | Unavailable:
        """Run the script for each op, in one round trip."""
        script = self._script
        if script is None:
            return UNAVAILABLE

        async def run(r: aioredis.Redis) -> list[CounterState]:
            calls = [self.script_args(cred, rule, op) for op in ops]
            return [counter_state(reply) for reply in await run_script_batch(r, script, calls)]

        if not ops:
            return []
        return await self.store.run("counters", run, patience=PATIENT if patient else IMPATIENT)

    async def linked(
        self, cred: str, rule: CounterRule, booking_id: str
    ) -> str | Unavailable | None:
        """The counter object a booking was counted in, if the gateway counted it."""
        link = CounterKeys.link(cred, rule, booking_id)
        got = await self.store.run("counters", lambda r: r.get(link))
        return got if isinstance(got, Unavailable) or got is None else _text(got)

    def unlink_later(self, cred: str, rule: CounterRule, booking_id: str) -> None:
        """`apply_later` for a cancellation whose counter could not even be looked up."""
        link = CounterKeys.link(cred, rule, booking_id)
        script = self._script

        async def replay(r: aioredis.Redis) -> None:
            target = await r.get(link)
            if target is None or script is None:
                return  # never counted here: nothing to undo
            op = Op(str(_text(target)), "remove", booking_id=booking_id)
            keys, args = self.script_args(cred, rule, op)
            await script(keys=keys, args=args, client=r)

        self.store.repair_later(f"counter:{link}", replay)

    def apply_later(self, cred: str, rule: CounterRule, op: Op) -> None:
        """A change HubSpot already holds could not be recorded (Redis busy or down): record it
        once Redis answers again. Never drop the count instead: re-seeding it from HubSpot's
        eventually consistent copy is how counts went wrong. Changes are per booking (a set
        member), so replaying one is harmless; the latest change of a booking wins."""
        keys, args = self.script_args(cred, rule, op)
        script = self._script

        async def replay(r: aioredis.Redis) -> None:
            if script is not None:
                await script(keys=keys, args=args, client=r)

        self.store.repair_later(f"counter:{keys[0]}:{op.booking_id}:{op.reservation_id}", replay)
