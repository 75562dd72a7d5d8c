"""What the traffic does to exam counters: overlay reads, absorb client writes, follow bookings.

- Reads of the exam (GET, batch read, search) get the count property replaced by Redis's count;
  a count not known yet is seeded from HubSpot's value in that very answer.
- A client PATCH of the count (read-modify-write from a possibly stale read) is forwarded with
  the authoritative count instead of the client's, and answered with it too.
- A booking linked to an exam (the configured association, or property on create) counts once;
  cancelling (active property to a cancelled value), deleting or unlinking it un-counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

from proxy.reads.counters import Counters, CounterState, Op, count_value, counter_state
from proxy.reads.object_cache import OverlayRead
from proxy.rules.loader import AssociationSource, CounterRule
from proxy.store.rule_store import Unavailable
from proxy.store.scripts import CounterChange

log = logging.getLogger("proxy.counter_rules")

# (credential, counter rule, object id) -> HubSpot's (count, capacity) of the object, or None.
FetchCounts = Callable[[str, CounterRule, str], Awaitable[tuple[int | None, int | None] | None]]


def _props(obj: Any) -> dict[str, Any] | None:
    props = obj.get("properties") if isinstance(obj, dict) else None
    return props if isinstance(props, dict) else None


def booking_exam_pairs(
    rule: CounterRule, pairs: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """(booking, exam) for each (from, to) of an association the rule counts."""
    exam_first = isinstance(rule.source, AssociationSource) and (
        rule.source.from_type == rule.object_type
    )
    return [(to, fr) if exam_first else (fr, to) for fr, to in pairs]


READS_KEPT: Final = 4096


class CounterRuntime:
    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self._reads: dict[tuple[str, int, str], tuple[CounterRule, OverlayRead]] = {}

    def accept_change(
        self,
        cred: str,
        rule: CounterRule,
        booking_id: str,
        object_id: str,
        seen: tuple[int | None, int | None] | None = None,
    ) -> CounterChange:
        """The count of one booking, to be stored with the write that links it (and its undo);
        `seen`: HubSpot's (count, capacity), for a counter not seeded yet."""
        count, capacity = seen or (None, None)
        op = Op(object_id, "add", seed=count, capacity=capacity, booking_id=booking_id)
        keys, args = self.counters.script_args(cred, rule, op)
        _, undo = self.counters.script_args(
            cred, rule, Op(object_id, "remove", booking_id=booking_id)
        )
        return CounterChange(tuple(keys), tuple(args), tuple(undo))

    async def overlay(
        self, cred: str, rule: CounterRule, objects: Iterable[Any], *, seed: bool = True
    ) -> bool:
        """Replace the count in each object (in place) by the authoritative one; False when
        Redis could not be read (the objects keep HubSpot's own values)."""
        shown: list[tuple[dict[str, Any], Op]] = []
        for obj in objects:
            props = _props(obj)
            object_id = obj.get("id") if props is not None else None
            if props is None or not isinstance(object_id, str | int):
                continue
            seen = count_value(props.get(rule.property)) if seed else None
            capacity = count_value(props.get(rule.capacity_property or ""))
            shown.append((props, Op(str(object_id), "read", seed=seen, capacity=capacity)))
        states = await self.counters.apply_many(cred, rule, [op for _, op in shown])
        if isinstance(states, Unavailable):
            return False
        for (props, _), state in zip(shown, states, strict=True):
            if state.count is not None and rule.property in props:
                props[rule.property] = str(state.count)
        return True

    def read_with_cache(self, cred: str, rule: CounterRule, object_id: str) -> OverlayRead:
        """The counter read that rides with an object-cache read (`ObjectCache.get`); made once
        per (credential, rule, object) while the rule is in force (never changed after)."""
        kept = self._reads.get((cred, id(rule), object_id))
        if kept is not None and kept[0] is rule:
            return kept[1]
        keys, args = self.counters.script_args(cred, rule, Op(object_id, "read"))
        read = OverlayRead(keys, args, rule.property, rule.capacity_property or "")
        if len(self._reads) >= READS_KEPT:
            self._reads.clear()  # bounded: ids come from URLs
        self._reads[(cred, id(rule), object_id)] = (rule, read)
        return read

    async def overlay_read(self, cred: str, rule: CounterRule, obj: Any, reply: Any) -> bool:
        """`overlay` of one cached object whose counter was read with the cache read
        (`reply`, see lua/cache_read.lua); one it could not read exactly is overlaid here."""
        if reply == b"other" or reply == "other":
            return await self.overlay(cred, rule, [obj])
        props = _props(obj)
        if props is None or reply == b"skip" or reply == "skip":
            return True
        state = counter_state(reply)
        if state.count is not None and rule.property in props:
            props[rule.property] = str(state.count)
        return True

    async def absorb(self, cred: str, rule: CounterRule, body: Any, object_id: str | None) -> bool:
        """Put the authoritative count in a PATCH (or batch update) body; True if it changed."""
        targets: list[tuple[dict[str, Any], str]] = []
        if object_id is not None and (props := _props(body)) is not None:
            targets.append((props, object_id))
        inputs = body.get("inputs") if isinstance(body, dict) else None
        for item in inputs if isinstance(inputs, list) else []:
            props = _props(item)
            if props is not None and isinstance(item.get("id"), str | int):
                targets.append((props, str(item["id"])))
        targets = [(p, i) for p, i in targets if rule.property in p]
        states = await self.counters.apply_many(cred, rule, [Op(i) for _, i in targets])
        if isinstance(states, Unavailable):
            return False
        changed = False
        for (props, _), state in zip(targets, states, strict=True):
            # Unknown count: the client's value passes, but nothing is learned from it.
            if state.count is not None and props[rule.property] != str(state.count):
                props[rule.property] = str(state.count)
                changed = True
        return changed

    async def link(
        self, cred: str, rule: CounterRule, pairs: Iterable[tuple[str, str]], fetch: FetchCounts
    ) -> None:
        """Count each (booking, exam) once; an exam never seen is seeded from HubSpot first."""
        for booking_id, object_id in pairs:
            op = Op(object_id, "add", booking_id=booking_id)
            state = await self.counters.apply(cred, rule, op)
            if isinstance(state, CounterState) and state.status == "unseeded":
                seen = await fetch(cred, rule, object_id)
                if seen is None or seen[0] is None:
                    continue  # reconciliation will count it; guessing would be worse
                seeded = Op(object_id, "add", seed=seen[0], capacity=seen[1], booking_id=booking_id)
                state = await self.counters.apply(cred, rule, seeded)
            if isinstance(state, Unavailable):
                self.counters.apply_later(cred, rule, op)

    async def unlink(
        self, cred: str, rule: CounterRule, booking_ids: Iterable[str], object_id: str | None = None
    ) -> None:
        """Un-count bookings (cancelled, deleted, or unlinked from `object_id`)."""
        for booking_id in booking_ids:
            target = object_id or await self.counters.linked(cred, rule, booking_id)
            if isinstance(target, Unavailable):
                self.counters.unlink_later(cred, rule, booking_id)
                continue
            if target is None:
                continue  # never counted here: nothing to undo
            op = Op(target, "remove", booking_id=booking_id)
            if isinstance(await self.counters.apply(cred, rule, op), Unavailable):
                self.counters.apply_later(cred, rule, op)

    async def booking_changed(
        self,
        cred: str,
        rule: CounterRule,
        changes: Mapping[str, Mapping[str, Any]],
        fetch: FetchCounts,
    ) -> None:
        """Bookings whose active property changed: cancelled ones un-count, re-activated count."""
        active = rule.active_property
        if active is None:
            return
        for booking_id, props in changes.items():
            if active not in props:
                continue
            if str(props[active]) in rule.cancelled_values:
                await self.unlink(cred, rule, [booking_id])
                continue
            linked = await self.counters.linked(cred, rule, booking_id)
            if isinstance(linked, str):
                await self.link(cred, rule, [(booking_id, linked)], fetch)
