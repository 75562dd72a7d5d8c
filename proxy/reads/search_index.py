"""Answering searches from Redis: the duplicate and idempotency checks (PRD 1B).

A search `select_search_index` accepts is looked up here. Found `{id}:Active` with its record:
answer it. `NO_DUPLICATE`: answer "none". Nothing, but the rule is `complete`, its scope (e.g.
the exam date) was loaded and the gateway has seen this credential create such a record: answer
"none" too, without HubSpot. Anything else is a miss and goes to HubSpot, whose answer teaches
the index (`reads.index_learning`).

Why "seen create": a complete index knows the records created through the gateway *by this
credential*. Another token of the same portal (a rotation, a second backend) creates records
this credential's index never learns, so until the gateway has seen a credential create, its
misses go to HubSpot, which knows every token's records.

Redis layout (every key under the credential's hash tag, so a token only sees its own):

    idx:{rule}:{key values...}         "{id}:Active" | "NO_DUPLICATE"   (positive / negative TTL)
    rec:{type}:{id}                    JSON record: properties learned, createdAt, updatedAt
    idxrev:{type}:{id}                 SET of entry keys naming the record (to drop them on cancel)
    gone:{type}:{id}                   tombstone: cancelled through the gateway (HubSpot's search
                                       may still show it active for a while: do not learn it back)
    idxscope:{rule}:{scope}:loaded     epoch ms of the last complete load of that scope
    idxscope:{rule}:{scope}:keys       SET of entry keys written in the scope (for refreshes)
    idxprops:{rule}                    SET of properties callers asked for (what loads request)
    idxcreator:{rule}                  "1": this credential created a record the rule learned
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from proxy.reads.index_entries import NO_DUPLICATE, Record, active_id, scope_value, search_answer
from proxy.rules.loader import IndexLookup, SearchIndexRule
from proxy.store.keys import key, part
from proxy.store.rule_store import UNAVAILABLE, Patience, RuleRedis, Unavailable, s

# The scope of a `complete` rule without one (e.g. idempotency keys): every record carrying the
# key is created through the gateway, which learns each create, so a miss means "none" for as
# long as no create went unlearned. A create Redis could not be told of is learned as soon as it
# answers again (`IndexLearner.apply_later`); only when too many such repairs wait does a learning
# failure taint the scope for one positive TTL.
GATEWAY_SCOPE: Final = "*gateway*"
ASKED_TTL_MS: Final = 30 * 86_400_000
ASKED_MAX: Final = 64  # properties remembered per rule; a load asks for all of them
# More tries of a lookup Redis was too busy to answer in time (its breaker still closed): a
# lookup given up is a search forwarded to HubSpot's 5-a-second limit. At N=3000 on two starved
# CPUs, 313 duplicate and 334 idempotency checks were, and 182 of them timed out waiting there.
LOOKUP_PATIENCE: Final = Patience(retries=2)


class IndexKeys:
    @staticmethod
    def entry(cred: str, rule: SearchIndexRule, values: tuple[str, ...]) -> str:
        return key(cred, "idx", rule.name, *(part(v) for v in values))

    @staticmethod
    def entry_prefix(cred: str, rule: SearchIndexRule) -> str:
        return key(cred, "idx", rule.name) + ":"

    @staticmethod
    def record(cred: str, object_type: str, object_id: str) -> str:
        return key(cred, "rec", part(object_type), part(object_id))

    @staticmethod
    def reverse(cred: str, object_type: str, object_id: str) -> str:
        return key(cred, "idxrev", part(object_type), part(object_id))

    @staticmethod
    def tombstone(cred: str, object_type: str, object_id: str) -> str:
        return key(cred, "gone", part(object_type), part(object_id))

    @staticmethod
    def scope(cred: str, rule: SearchIndexRule, scope: str, what: str) -> str:
        return key(cred, "idxscope", rule.name, part(scope), what)

    @staticmethod
    def asked(cred: str, rule: SearchIndexRule) -> str:
        return key(cred, "idxprops", rule.name)

    @staticmethod
    def creator(cred: str, rule: SearchIndexRule) -> str:
        return key(cred, "idxcreator", rule.name)

    @staticmethod
    def load_lock(cred: str, object_type: str, prop: str, scope: str) -> str:
        return key(cred, "idxload", part(object_type), part(prop), part(scope))


@dataclass(frozen=True)
class Lookup:
    """What the index said: an answer (hit) or not, and whether the scope wants (re)loading."""

    answer: dict[str, Any] | None
    event: str  # hit | miss | stale (an entry the index does not trust)
    scope: str | None = None
    loaded_at_ms: int | None = None  # None: the scope was never loaded (or the rule is partial)


class SearchIndex:
    def __init__(self, store: RuleRedis, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def lookup(
        self, cred: str, rule: SearchIndexRule, found: IndexLookup
    ) -> Lookup | Unavailable:
        scope = scope_value(rule, found.key) if rule.complete else None
        if rule.complete and rule.scope is None:
            scope = GATEWAY_SCOPE
        entry_key = IndexKeys.entry(cred, rule, found.key)
        marker = IndexKeys.scope(cred, rule, scope, "loaded") if scope is not None else None

        async def read(r: aioredis.Redis) -> tuple[str | None, str | None, Record | None, bool]:
            pipe = r.pipeline(transaction=False)
            pipe.get(entry_key)
            pipe.exists(IndexKeys.creator(cred, rule))
            if marker is not None:
                pipe.get(marker)
            if found.properties:
                asked = IndexKeys.asked(cred, rule)
                pipe.sadd(asked, *found.properties[:ASKED_MAX])
                pipe.pexpire(asked, ASKED_TTL_MS)
            replies = await pipe.execute()
            entry, created = s(replies[0]), bool(replies[1])
            loaded = s(replies[2]) if marker is not None else None
            object_id = active_id(entry)
            if object_id is None:
                return entry, loaded, None, created
            raw = await r.get(IndexKeys.record(cred, rule.object_type, object_id))
            return entry, loaded, Record.loads(raw), created

        got = await self.store.run("search_index", read, patience=LOOKUP_PATIENCE)
        if isinstance(got, Unavailable):
            return UNAVAILABLE
        entry, loaded, record, created = got
        loaded_at = int(loaded) if loaded and loaded.isdigit() else None
        if scope == GATEWAY_SCOPE and loaded_at is None and created:
            loaded_at = await self._vouch(cred, rule)
        return _decide(entry, record, found, scope, loaded_at, answer_misses=created)

    async def saw_create(self, cred: str, rules: list[SearchIndexRule]) -> None:
        """This credential created records these rules learned: their misses may be answered."""
        if not rules:
            return

        async def mark(r: aioredis.Redis) -> None:
            pipe = r.pipeline(transaction=False)
            for rule in rules:
                pipe.set(IndexKeys.creator(cred, rule), "1", px=ASKED_TTL_MS)
            await pipe.execute()

        await self.store.run("search_index", mark)

    async def _vouch(self, cred: str, rule: SearchIndexRule) -> int | None:
        """Start answering misses of a scope-less complete rule, unless a create went unlearned."""
        now = self.now_ms()

        async def mark(r: aioredis.Redis) -> bool:
            if await r.exists(IndexKeys.scope(cred, rule, GATEWAY_SCOPE, "tainted")):
                return False
            await r.set(IndexKeys.scope(cred, rule, GATEWAY_SCOPE, "loaded"), now, nx=True)
            return True

        vouched = await self.store.run("search_index", mark)
        return now if vouched is True else None

    async def remember_miss(
        self, cred: str, rule: SearchIndexRule, values: tuple[str, ...]
    ) -> bool:
        """HubSpot found nothing: remember it, unless something was filed meanwhile (NX)."""
        ttl = rule.negative_ttl_ms
        if ttl is None:
            return False
        entry_key = IndexKeys.entry(cred, rule, values)

        async def put(r: aioredis.Redis) -> bool:
            return bool(await r.set(entry_key, NO_DUPLICATE, px=ttl, nx=True))

        return await self.store.run("search_index", put) is True

    async def scopes_loaded(
        self, cred: str, rules: list[SearchIndexRule], scope: str, started_ms: int, ttl_ms: int
    ) -> None:
        """Mark a scope complete for `rules`; written last, after every entry of the load."""

        async def mark(r: aioredis.Redis) -> None:
            pipe = r.pipeline(transaction=True)
            for rule in rules:
                pipe.set(IndexKeys.scope(cred, rule, scope, "loaded"), started_ms, px=ttl_ms)
            await pipe.execute()

        await self.store.run("search_index", mark)

    def forget_scopes_later(self, cred: str, rules: list[SearchIndexRule]) -> None:
        """A write could not be filed: no scope of these rules may claim completeness any more
        (once Redis is back; until then nothing is answered from it anyway)."""
        for rule in rules:
            pattern = IndexKeys.scope(cred, rule, "*", "loaded").replace("%2A", "*")

            async def drop(
                r: aioredis.Redis, pattern: str = pattern, rule: SearchIndexRule = rule
            ) -> None:
                async for found in r.scan_iter(match=pattern, count=500):
                    await r.delete(found)
                if rule.complete and rule.scope is None:
                    taint = IndexKeys.scope(cred, rule, GATEWAY_SCOPE, "tainted")
                    await r.set(taint, "1", px=taint_ms(rule))

            self.store.repair_later("idxscope:" + pattern, drop)

    async def asked_properties(self, cred: str, rules: list[SearchIndexRule]) -> set[str]:
        async def read(r: aioredis.Redis) -> set[str]:
            found: set[str] = set()
            for rule in rules:
                found |= {s(p) or "" for p in await r.smembers(IndexKeys.asked(cred, rule))}
            return found - {""}

        got = await self.store.run("search_index", read)
        return set() if isinstance(got, Unavailable) else got


def _decide(
    entry: str | None,
    record: Record | None,
    found: IndexLookup,
    scope: str | None,
    loaded_at: int | None,
    *,
    answer_misses: bool,
) -> Lookup:
    if entry == NO_DUPLICATE:
        return Lookup(search_answer([], found.properties), "hit", scope, loaded_at)
    if record is not None:
        return Lookup(search_answer([record], found.properties), "hit", scope, loaded_at)
    if entry is not None:  # `{id}:Cancelled`, or a record that expired: HubSpot decides
        return Lookup(None, "stale", scope, loaded_at)
    if loaded_at is not None and answer_misses:  # complete: nothing filed, nothing exists
        return Lookup(search_answer([], found.properties), "hit", scope, loaded_at)
    return Lookup(None, "miss", scope, loaded_at)


def taint_ms(rule: SearchIndexRule) -> int:
    """As long as an unlearned create's entry would have lived: its key may be searched again."""
    positive = rule.positive_ttl
    return positive if isinstance(positive, int) else max(positive.min_ms, 2 * 86_400_000)


async def drop_entry(r: aioredis.Redis, entry: str, object_id: str) -> bool:
    """Delete `entry` if it still names `object_id` (a newer booking may have taken the key)."""
    async with r.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(entry)
            current = s(await pipe.get(entry))
            if current is None or current.rpartition(":")[0] != object_id:
                await pipe.unwatch()  # type: ignore[no-untyped-call]
                return False
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.delete(entry)
            await pipe.execute()
            return True
        except WatchError:
            return False


def epoch_ms(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None
