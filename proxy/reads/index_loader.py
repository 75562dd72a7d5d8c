"""Loading a whole scope of a `complete` index from HubSpot: the warm-up and the refresh.

A `complete` rule (e.g. the duplicate check, scoped by exam date) answers a miss with "none"
without HubSpot, which is only true once every record of the scope is filed. On first sight of
a scope the gateway loads it: a paged search on the scope property alone (so cancelled records
are seen too and dropped), at the priority and within the deadline of the caller whose miss
started it. That caller, and every concurrent miss of the same scope in this process, wait for
that one load instead of each forwarding its search (a cold 9:00 burst costs one search per exam
date); when another replica holds the load, they wait for its marker instead. Entries the load
did not see are swept (deleted in HubSpot), then the scope is marked loaded, last. Refreshes run
at background priority.

The reconcile job calls `refresh` for the same thing on a schedule; lookups also refresh a scope
whose load is older than REFRESH_AFTER_MS, so changes made directly in HubSpot heal by
themselves. The scope marker never outlives the entries of its load, and is capped, so a scope
nobody looks at stops claiming completeness.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.asyncio as aioredis

from proxy.budget.model import Priority
from proxy.reads.index_entries import Record, positive_ttl_ms
from proxy.reads.index_learning import IndexLearner, Sighting
from proxy.reads.search_index import IndexKeys, SearchIndex
from proxy.rules.loader import SearchIndexRule
from proxy.store.rule_store import Unavailable, s

log = logging.getLogger("proxy.index_loader")


@dataclass(frozen=True)
class Urgency:
    """Whom a load's searches queue as: the waiting caller's priority and deadline (monotonic);
    no deadline means a background load's own wait per page."""

    priority: Priority = Priority.BACKGROUND
    deadline: float | None = None


BACKGROUND: Final = Urgency()

# (credential, object type, search body, urgency) -> HubSpot's answer, or None when it failed.
SearchFn = Callable[[str, str, dict[str, Any], Urgency], Awaitable[dict[str, Any] | None]]

PAGE_SIZE: Final = 200  # HubSpot's maximum
MAX_RESULTS: Final = 10_000  # HubSpot pages no further: a bigger scope cannot be complete
LOCK_MS: Final = 120_000
SWEEP_GRACE_MS: Final = 120_000  # records newer than the load minus this may be unindexed yet
MARKER_MAX_MS: Final = 2 * 3_600_000
MARKER_MARGIN_MS: Final = 60_000
REFRESH_AFTER_MS: Final = 15 * 60_000
LEARN_CHUNK: Final = 100
BODY_MAX_CHARS: Final = 3000
RETRY_AFTER_S: Final = 300.0
BUSY_POLL_S: Final = 0.1
TaskKey = tuple[str, str, str, str]  # credential, object type, scope property, scope


@dataclass(frozen=True)
class LoadResult:
    status: str  # loaded | busy | failed | too-large
    objects: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class ScopeLoad:
    """A load running in this process; `joined`: it was already running for someone else."""

    task: asyncio.Task[LoadResult]
    joined: bool


def scope_group(rules: Sequence[SearchIndexRule], rule: SearchIndexRule) -> list[SearchIndexRule]:
    """Rules one load serves: same object type and scope property as `rule`."""
    return [r for r in rules if r.object_type == rule.object_type and r.scope == rule.scope]


class IndexLoader:
    def __init__(
        self,
        index: SearchIndex,
        learner: IndexLearner,
        search: SearchFn,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = index
        self.learner = learner
        self._search = search
        self._clock = clock
        self._tasks: dict[TaskKey, asyncio.Task[LoadResult]] = {}
        self._resting: dict[TaskKey, float] = {}

    def ensure(
        self,
        cred: str,
        rules: Sequence[SearchIndexRule],
        scope: str,
        urgency: Urgency = BACKGROUND,
    ) -> ScopeLoad | None:
        """The load of the scope running here, started unless one runs or one failed lately."""
        first = rules[0]
        task_key = (cred, first.object_type, first.scope or "", scope)
        running = self._tasks.get(task_key)
        if running is not None:
            return ScopeLoad(running, joined=True)
        if not first.scope or self._clock() < self._resting.get(task_key, 0.0):
            return None  # a scope too large, or HubSpot refusing: do not retry on every lookup
        task = asyncio.create_task(self.refresh(cred, rules, scope, urgency))
        self._tasks[task_key] = task
        task.add_done_callback(lambda t: self._finished(task_key, t))
        return ScopeLoad(task, joined=False)

    def _finished(self, task_key: TaskKey, task: asyncio.Task[LoadResult]) -> None:
        self._tasks.pop(task_key, None)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("index scope load failed", exc_info=task.exception())
            status = "failed"
        else:
            status = task.result().status
        if status != "loaded":
            rest = LOCK_MS / 1000 if status == "busy" else RETRY_AFTER_S
            self._resting[task_key] = self._clock() + rest

    async def wait_idle(self) -> None:
        """Until no load started here is running (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def refresh(
        self,
        cred: str,
        rules: Sequence[SearchIndexRule],
        scope: str,
        urgency: Urgency = BACKGROUND,
    ) -> LoadResult:
        """Load every record of `scope` for `rules` (one scope group) and mark it complete."""
        first = rules[0]
        if not first.scope:
            return LoadResult("failed")
        lock = IndexKeys.load_lock(cred, first.object_type, first.scope, scope)
        token = uuid.uuid4().hex
        locked = await self.index.store.run(
            "index_load", lambda r: r.set(lock, token, px=LOCK_MS, nx=True)
        )
        if isinstance(locked, Unavailable):
            return LoadResult("failed")
        if not locked:
            if urgency.deadline is None:
                return LoadResult("busy")
            return await self._loaded_elsewhere(cred, first, scope, urgency.deadline)
        try:
            if urgency.deadline is not None:
                # A caller saw the scope unloaded, but a load (another replica's, or one that
                # ended here) may have finished and let go of the lock before this one took it.
                found = await self._is_loaded(cred, first, scope)
                if not isinstance(found, Unavailable) and found:
                    return LoadResult("loaded")
            return await self._load(cred, list(rules), scope, urgency)
        finally:
            await self.index.store.run("index_load", lambda r: _unlock(r, lock, token))

    async def _loaded_elsewhere(
        self, cred: str, rule: SearchIndexRule, scope: str, deadline: float
    ) -> LoadResult:
        """Another replica holds the load a caller waits for: wait, within the caller's
        deadline, for its marker, so this replica's misses are not forwarded one by one."""
        while self._clock() + BUSY_POLL_S < deadline:
            await asyncio.sleep(BUSY_POLL_S)
            found = await self._is_loaded(cred, rule, scope)
            if isinstance(found, Unavailable):
                return LoadResult("failed")
            if found:
                return LoadResult("loaded")
        return LoadResult("busy")

    async def _is_loaded(self, cred: str, rule: SearchIndexRule, scope: str) -> bool | Unavailable:
        """Whether the scope's loaded marker is there; UNAVAILABLE if Redis did not say."""
        marker = IndexKeys.scope(cred, rule, scope, "loaded")
        found = await self.index.store.run("index_load", lambda r: r.exists(marker))
        return found if isinstance(found, Unavailable) else bool(found)

    async def _load(
        self, cred: str, rules: list[SearchIndexRule], scope: str, urgency: Urgency
    ) -> LoadResult:
        started = self.index.now_ms()
        records = await self._fetch_all(cred, rules, scope, urgency)
        if isinstance(records, str):
            return LoadResult(records)
        object_type = rules[0].object_type
        for i in range(0, len(records), LEARN_CHUNK):
            chunk = [Sighting(rec) for rec in records[i : i + LEARN_CHUNK]]
            if not await self.learner.apply(cred, object_type, chunk, rules, trusted=False):
                return LoadResult("failed", len(records))
        seen = {rec.id for rec in records}
        dropped = 0
        for rule in rules:
            dropped += await self.learner.sweep_scope(
                cred, rule, scope, seen, started - SWEEP_GRACE_MS
            )
        ttl = min(_marker_ttl(rule, scope, started) for rule in rules)
        await self.index.scopes_loaded(cred, rules, scope, started, ttl)
        log.info("index scope loaded", extra={"objects": len(records), "dropped": dropped})
        return LoadResult("loaded", len(records), dropped)

    async def _fetch_all(
        self, cred: str, rules: list[SearchIndexRule], scope: str, urgency: Urgency
    ) -> list[Record] | str:
        first = rules[0]
        props = _properties(rules, await self.index.asked_properties(cred, rules))
        records: list[Record] = []
        after: str | None = None
        while True:
            body = _page_body(first.scope or "", scope, props, after)
            answer = await self._search(cred, first.object_type, body, urgency)
            if answer is None:
                return "failed"
            total = answer.get("total")
            if isinstance(total, int) and total > MAX_RESULTS:
                return "too-large"
            for obj in answer.get("results") or []:
                record = Record.from_object(obj) if isinstance(obj, dict) else None
                if record is not None:
                    record.properties.setdefault(first.scope or "", scope)
                    records.append(record)
            after = _next_after(answer)
            if after is None:
                return records


def _properties(rules: list[SearchIndexRule], asked: set[str]) -> list[str]:
    """Keys and `when` properties first, then what callers asked for, within HubSpot's body cap."""
    wanted: list[str] = []
    for rule in rules:
        wanted += [*rule.key, *rule.when]
    chosen = list(dict.fromkeys(wanted))
    budget = BODY_MAX_CHARS - 400  # room for filters, paging and JSON punctuation
    for prop in sorted(asked - set(chosen)):
        budget -= len(prop) + 3
        if budget < 0:
            break
        chosen.append(prop)
    return chosen


def _page_body(prop: str, scope: str, props: list[str], after: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filterGroups": [{"filters": [{"propertyName": prop, "operator": "EQ", "value": scope}]}],
        "properties": props,
        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
        "limit": PAGE_SIZE,
    }
    if after is not None:
        body["after"] = after
    return body


def _next_after(answer: dict[str, Any]) -> str | None:
    paging = answer.get("paging")
    nxt = paging.get("next") if isinstance(paging, dict) else None
    after = nxt.get("after") if isinstance(nxt, dict) else None
    return str(after) if after not in (None, "") else None


def _marker_ttl(rule: SearchIndexRule, scope: str, now_ms: int) -> int:
    """Shorter than any entry the load wrote, and capped: completeness must be renewed."""
    entry_ttl = positive_ttl_ms(rule, {rule.scope or "": scope}, now_ms)
    return max(1000, min(entry_ttl - MARKER_MARGIN_MS, MARKER_MAX_MS))


async def _unlock(r: aioredis.Redis, lock: str, token: str) -> None:
    if s(await r.get(lock)) == token:
        await r.delete(lock)
