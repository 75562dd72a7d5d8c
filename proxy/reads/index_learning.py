"""Keeping the search index true from the traffic it sees (PRD 1B, "after booking creation").

Every sighting of an object (a create, an update's answer, a search result, a scope load) is
applied the same way: merged with what the index knew, it files under each rule's key it now
satisfies (`{id}:Active`), and entries it no longer satisfies (a `when` property changed, e.g.
`is_active` turned `Cancelled`) are dropped. A deleted object drops all its entries.

Drops compare before deleting (WATCH), so an entry re-filed by a newer booking meanwhile stays.
Sightings from searches and loads are "untrusted": HubSpot's search lags its writes, so an object
cancelled through the gateway in the last minutes (tombstoned) is not learned back as active.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis

from proxy.reads.index_entries import Record, active_entry, key_map, positive_ttl_ms, scope_value
from proxy.reads.search_index import IndexKeys, SearchIndex, drop_entry, epoch_ms
from proxy.rules.loader import IndexLookup, SearchIndexRule, index_key_for_object
from proxy.store.rule_store import RuleRedis, Unavailable, s

TOMBSTONE_MS: Final = 10 * 60_000


@dataclass(frozen=True)
class Sighting:
    record: Record
    deleted: bool = False


@dataclass
class _Plan:
    """The writes and drops one object needs."""

    record: Record | None
    files: list[tuple[SearchIndexRule, tuple[str, ...], int]] = field(default_factory=list)
    drops: set[str] = field(default_factory=set)
    tombstone: bool | None = None  # True: set, False: clear, None: leave


class IndexLearner:
    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.store: RuleRedis = index.store

    async def apply(
        self,
        cred: str,
        object_type: str,
        sightings: Sequence[Sighting],
        rules: Sequence[SearchIndexRule],
        *,
        trusted: bool,
    ) -> bool:
        """Learn from `sightings`; False when Redis could not be told (see `apply_later`)."""
        if not sightings or not rules:
            return True
        learn = self._learning(cred, object_type, sightings, rules, trusted=trusted)
        return not isinstance(await self.store.run("index_learn", learn), Unavailable)

    def apply_later(
        self,
        cred: str,
        object_type: str,
        sightings: Sequence[Sighting],
        rules: Sequence[SearchIndexRule],
    ) -> bool:
        """Learn a write Redis could not be told of as soon as it answers again, before anything
        is read from it, so a complete index stays complete; False if too many repairs wait."""
        learn = self._learning(cred, object_type, sightings, rules, trusted=True)
        ids = ",".join(sorted(s.record.id for s in sightings))
        return self.store.repair_later(f"idxlearn:{cred}:{object_type}:{ids}", learn)

    def _learning(
        self,
        cred: str,
        object_type: str,
        sightings: Sequence[Sighting],
        rules: Sequence[SearchIndexRule],
        *,
        trusted: bool,
    ) -> Callable[[aioredis.Redis], Awaitable[None]]:
        async def learn(r: aioredis.Redis) -> None:
            now = self.index.now_ms()
            known = await _read(r, cred, object_type, sightings)
            for sighting, seen in zip(sightings, known, strict=True):
                if seen.gone and not trusted and not sighting.deleted:
                    continue  # a lagging search still shows what was cancelled here
                object_id = sighting.record.id
                plan = _plan(cred, sighting, seen.record, seen.reverse, rules, now, trusted)
                await _write(r, cred, object_type, object_id, plan, seen.ttls)
                for entry in plan.drops:
                    await drop_entry(r, entry, object_id)

        return learn

    async def fill(
        self,
        cred: str,
        rule: SearchIndexRule,
        found: IndexLookup,
        answer: Any,
        rules: Sequence[SearchIndexRule],
    ) -> bool:
        """Learn from HubSpot's answer to a search the index missed; True if anything was kept.

        The search's filters hold for every result, so they complete the properties learned;
        no result is remembered as NO_DUPLICATE (unless something was filed meanwhile).
        """
        results = answer.get("results") if isinstance(answer, dict) else None
        if not isinstance(results, list) or not isinstance(answer.get("total"), int):
            return False
        proven = {**dict(zip(rule.key, found.key, strict=True)), **rule.when}
        records = [r for o in results if isinstance(o, dict) and (r := Record.from_object(o))]
        for record in records:
            for name, value in proven.items():
                record.properties.setdefault(name, value)
        if records:
            sightings = [Sighting(r) for r in records]
            return await self.apply(cred, rule.object_type, sightings, rules, trusted=False)
        return answer["total"] == 0 and await self.index.remember_miss(cred, rule, found.key)

    async def sweep_scope(
        self, cred: str, rule: SearchIndexRule, scope: str, seen: set[str], before_ms: int
    ) -> int:
        """Drop a scope's entries for records a full load did not see (deleted in HubSpot).

        Records created after `before_ms` are kept: the load may have missed them only because
        HubSpot's search had not indexed them yet.
        """
        members = IndexKeys.scope(cred, rule, scope, "keys")

        async def sweep(r: aioredis.Redis) -> int:
            entries = [s(e) or "" for e in await r.smembers(members)]
            values = [s(v) for v in await r.mget(entries)] if entries else []
            dropped = 0
            for entry, value in zip(entries, values, strict=True):
                object_id = (value or "").rpartition(":")[0]
                if value is None or not object_id:
                    await r.srem(members, entry)
                    continue
                if object_id in seen:
                    continue
                raw = await r.get(IndexKeys.record(cred, rule.object_type, object_id))
                record = Record.loads(raw)
                created = epoch_ms(record.created_at if record else None)
                if created is None or created < before_ms:
                    await drop_entry(r, entry, object_id)
                    await r.srem(members, entry)
                    dropped += 1
            return dropped

        got = await self.store.run("index_learn", sweep)
        return 0 if isinstance(got, Unavailable) else got


@dataclass(frozen=True)
class _Known:
    record: Record | None
    ttls: tuple[int, int]  # PTTL of the record and of the reverse map (negative: none)
    reverse: set[str]
    gone: bool


async def _read(
    r: aioredis.Redis, cred: str, object_type: str, sightings: Sequence[Sighting]
) -> list[_Known]:
    pipe = r.pipeline(transaction=False)
    for sighting in sightings:
        object_id = sighting.record.id
        record_key = IndexKeys.record(cred, object_type, object_id)
        reverse = IndexKeys.reverse(cred, object_type, object_id)
        pipe.get(record_key)
        pipe.pttl(record_key)
        pipe.pttl(reverse)
        pipe.smembers(reverse)
        pipe.exists(IndexKeys.tombstone(cred, object_type, object_id))
    replies = await pipe.execute()
    known = []
    for i in range(0, len(replies), 5):
        old, pttl, rttl, reverse, gone = replies[i : i + 5]
        members = {s(e) or "" for e in reverse}
        known.append(_Known(Record.loads(old), (int(pttl), int(rttl)), members, bool(gone)))
    return known


def _plan(
    cred: str,
    sighting: Sighting,
    old: Record | None,
    reverse: set[str],
    rules: Sequence[SearchIndexRule],
    now_ms: int,
    trusted: bool,
) -> _Plan:
    if sighting.deleted:
        return _Plan(record=None, drops=set(reverse), tombstone=True)
    record = old.merged(sighting.record) if old else sighting.record
    plan = _Plan(record=record)
    props = record.properties
    violated_any = False
    for rule in rules:
        mine = {e for e in reverse if e.startswith(IndexKeys.entry_prefix(cred, rule))}
        violated = any(p in props and props[p] != want for p, want in rule.when.items())
        values = index_key_for_object(rule, props)
        if violated:
            violated_any = True
            plan.drops |= mine
        elif values is not None:
            ttl = positive_ttl_ms(rule, key_map(rule, values), now_ms)
            plan.files.append((rule, values, ttl))
            plan.drops |= mine - {IndexKeys.entry(cred, rule, values)}
    if trusted and plan.files:
        plan.tombstone = False
    elif trusted and violated_any:
        plan.tombstone = True
    return plan


async def _write(
    r: aioredis.Redis,
    cred: str,
    object_type: str,
    object_id: str,
    plan: _Plan,
    ttls: tuple[int, int],
) -> None:
    """One MULTI: entries, scope membership, record and reverse map (never shortened)."""
    record_key = IndexKeys.record(cred, object_type, object_id)
    reverse = IndexKeys.reverse(cred, object_type, object_id)
    pipe = r.pipeline(transaction=True)
    if plan.record is None:
        pipe.delete(record_key, reverse)
    entries = []
    for rule, values, ttl in plan.files:
        entry = IndexKeys.entry(cred, rule, values)
        entries.append(entry)
        pipe.set(entry, active_entry(object_id), px=ttl)
        scope = scope_value(rule, values)
        if scope is not None:  # expiries only grow within one rule and scope: safe to reset
            members = IndexKeys.scope(cred, rule, scope, "keys")
            pipe.sadd(members, entry)
            pipe.pexpire(members, ttl)
    if plan.drops and plan.record is not None:
        pipe.srem(reverse, *plan.drops)
    ttl = max([*ttls, *(t for _, _, t in plan.files)])
    if plan.record is not None and ttl > 0:
        pipe.set(record_key, plan.record.dumps(), px=ttl)
        if entries:
            pipe.sadd(reverse, *entries)
            pipe.pexpire(reverse, ttl)
    tomb = IndexKeys.tombstone(cred, object_type, object_id)
    if plan.tombstone is True:
        pipe.set(tomb, "1", px=TOMBSTONE_MS)
    elif plan.tombstone is False:
        pipe.delete(tomb)
    await pipe.execute()
