"""The PRD's two cron jobs, inside the gateway: counter sync and reconciliation.

`sync_counters` (every 60 s) sends each exam count that changed since its last sync to HubSpot
in batch updates. `reconcile` (every 5 min) asks HubSpot which bookings each counted exam really
has, fixes the count in Redis (bookings cancelled or deleted directly in HubSpot) and, through
the next sync, in HubSpot; drops index entries of cancelled bookings; and reloads the loaded
scopes of complete indexes. Both spend budget at background priority with the credential's
stored token, and handle one credential at a time.

One credential's trouble (its token gone from the vault, HubSpot refusing it, a failed call)
never stops the others': its part of the run is skipped, logged and counted
(`hubspot_proxy_job_credential_failures_total`), and the run goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import unquote

import redis.asyncio as aioredis

from proxy.errors import GatewayError
from proxy.hubspot.urls import api_path
from proxy.reads.counter_rules import booking_exam_pairs
from proxy.reads.counters import CounterKeys
from proxy.reads.index_entries import Record
from proxy.reads.index_learning import Sighting
from proxy.reads.search_index import GATEWAY_SCOPE
from proxy.rules.holder import RulesHolder
from proxy.rules.loader import AssociationSource, CounterRule, SearchIndexRule
from proxy.rules.paths import canonical_type
from proxy.runtime.actions import Actions
from proxy.runtime.portals import is_portal
from proxy.store.keys import any_credential, part
from proxy.store.scripts import script
from proxy.store.vault import TokenVault
from proxy.upstream.background import BackgroundClient, json_body

log = logging.getLogger("proxy.jobs")
T = TypeVar("T")

BATCH: Final = 100  # HubSpot's limit for object batch calls
JOB_WAIT_S: Final = 120.0  # a job call may queue this long behind interactive traffic
_COUNTER_KEY: Final = any_credential("ctr", "*")


# (credential, from type, from id, to type, to id) of the associations accepted for write-behind
# and not sent yet.
QueuedLinks = Callable[[], Awaitable[set[tuple[str, str, str, str, str]]]]


@dataclass(frozen=True)
class CounterRef:
    credential: str
    object_id: str
    key: str


def counter_rules(rules: RulesHolder) -> list[CounterRule]:
    return [r for r in rules.current.rules if isinstance(r, CounterRule) and r.enabled]


async def counters_of(redis: aioredis.Redis, rule: CounterRule) -> AsyncIterator[CounterRef]:
    """Every counter hash of `rule`'s object type in Redis, whatever its credential."""
    async for raw in redis.scan_iter(match=_COUNTER_KEY, count=1000):
        found = raw.decode() if isinstance(raw, bytes) else str(raw)
        credential = found.split("{", 1)[1].split("}", 1)[0]
        tail = found.split(":ctr:", 1)[1]
        parts = tail.split(":")
        if len(parts) != 2:
            continue  # :members / :pending
        object_id = parts[1]
        if CounterKeys.base(credential, rule, object_id) == found:
            yield CounterRef(credential, object_id, found)


def chunks(items: Sequence[Any], size: int = BATCH) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class CounterJobs:
    def __init__(
        self,
        redis: aioredis.Redis,
        rules: RulesHolder,
        client: BackgroundClient,
        vault: TokenVault,
        actions: Actions,
        queued_links: QueuedLinks | None = None,
    ) -> None:
        self._redis = redis
        self._rules = rules
        self._client = client
        self._vault = vault
        self._actions = actions
        self._queued_links = queued_links
        self._reset = script(redis, "counter_reset")

    async def _post(self, credential: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A job's JSON call with the stored token; 200 and 207 (partial batch) are both read."""
        token = await self._vault.token_for(credential)
        if token is None:
            raise LookupError(f"no stored token for credential {credential}")
        budget = self._actions.own.credential_of(token)  # a portal's state spends its token's
        answer = await self._client.call(
            budget, token, "POST", path, json_body(body), wait_s=JOB_WAIT_S
        )
        found = answer.json()
        if answer.status not in (200, 201, 207) or not isinstance(found, dict):
            raise GatewayError(f"HubSpot answered {answer.status} to {path}")
        return found

    async def _guarded(self, task: str, credential: str, work: Awaitable[T]) -> T | None:
        """`work`'s result, or None when it failed: counted and logged, never raised."""
        try:
            return await work
        except Exception as exc:  # one credential's trouble must not stop another's
            self._actions.metrics.job_credential_failures.labels(task).inc()
            log.warning(
                "job skipped a credential",
                extra={"job": task, "credential": credential, "error": type(exc).__name__},
            )
            return None

    async def sync_counters(self) -> dict[str, Any]:
        """Batch-update every count that changed since it was last sent."""
        sent = failed = 0
        for rule in counter_rules(self._rules):
            due: dict[str, list[tuple[CounterRef, int]]] = {}
            async for ref in counters_of(self._redis, rule):
                count, synced = await self._redis.hmget(ref.key, "count", "synced")
                if count is not None and count != synced:
                    due.setdefault(ref.credential, []).append((ref, int(count)))
            for credential, items in due.items():
                pushed = await self._guarded(
                    "sync_counters", credential, self._push(credential, rule, items)
                )
                failed += pushed is None
                sent += pushed or 0
        return {"countersSent": sent, "credentialsFailed": failed}

    async def _push(
        self, credential: str, rule: CounterRule, items: list[tuple[CounterRef, int]]
    ) -> int:
        path = api_path("crm", "v3", "objects", rule.object_type, "batch", "update")
        pushed = 0
        for batch in chunks(items):
            inputs = [
                {"id": ref.object_id, "properties": {rule.property: str(count)}}
                for ref, count in batch
            ]
            answer = await self._post(credential, path, {"inputs": inputs})
            updated = {str(r.get("id")) for r in answer.get("results", [])}
            for ref, count in batch:
                if ref.object_id in updated:
                    await self._redis.hset(ref.key, "synced", str(count))
                    pushed += 1
        return pushed

    async def reconcile(self) -> dict[str, Any]:
        drift: Counter[str] = Counter()
        failed = 0
        for rule in counter_rules(self._rules):
            refs: dict[str, list[CounterRef]] = {}
            async for ref in counters_of(self._redis, rule):
                refs.setdefault(ref.credential, []).append(ref)
            for credential, found in refs.items():
                fixed = await self._guarded(
                    "reconcile", credential, self._reconcile_counters(credential, rule, found)
                )
                failed += fixed is None
                drift += fixed or Counter()
        drift["scopes"] = await self._refresh_scopes()
        return {"drift": dict(drift), "credentialsFailed": failed}

    async def _reconcile_counters(
        self, credential: str, rule: CounterRule, refs: list[CounterRef]
    ) -> Counter[str]:
        drift: Counter[str] = Counter()
        queued = await self._queued(credential, rule)
        for batch in chunks(refs):
            exam_ids = [r.object_id for r in batch]
            linked = await self._linked_bookings(credential, rule, exam_ids)
            bookings = await self._read_bookings(credential, rule, linked)
            in_hubspot = await self._hubspot_counts(credential, rule, exam_ids)
            await self._learn_bookings(credential, rule, bookings)
            for ref in batch:
                active = [
                    b for b in linked.get(ref.object_id, []) if _active(rule, bookings.get(b))
                ]
                # Accepted, counted, not in HubSpot yet: still a seat taken.
                active += sorted(queued.get(ref.object_id, set()) - set(active))
                drift += await self._fix(ref, rule, active, in_hubspot.get(ref.object_id))
        return drift

    async def _queued(self, credential: str, rule: CounterRule) -> dict[str, set[str]]:
        """exam id -> bookings whose association to it is accepted but not yet sent."""
        if self._queued_links is None:
            return {}
        if not isinstance(rule.source, AssociationSource):
            return {}
        aliases = self._rules.current.object_types
        ends = (rule.source.from_type, rule.source.to_type)
        pairs = [
            (from_id, to_id)
            for cred, from_type, from_id, to_type, to_id in await self._queued_links()
            if cred == credential
            and (canonical_type(from_type, aliases), canonical_type(to_type, aliases)) == ends
        ]
        exams: dict[str, set[str]] = {}
        for booking, exam in booking_exam_pairs(rule, pairs):
            exams.setdefault(exam, set()).add(booking)
        return exams

    async def _hubspot_counts(
        self, credential: str, rule: CounterRule, exam_ids: Sequence[str]
    ) -> dict[str, Any]:
        """HubSpot's own copy of each count, to tell whether it drifted."""
        path = api_path("crm", "v3", "objects", rule.object_type, "batch", "read")
        body = {"inputs": [{"id": i} for i in exam_ids], "properties": [rule.property]}
        answer = await self._post(credential, path, body)
        return {
            str(obj.get("id")): (obj.get("properties") or {}).get(rule.property)
            for obj in answer.get("results", [])
        }

    async def _linked_bookings(
        self, credential: str, rule: CounterRule, exam_ids: Sequence[str]
    ) -> dict[str, list[str]]:
        path = api_path(
            "crm", "v4", "associations", rule.object_type, rule.booking_object_type, "batch", "read"
        )
        answer = await self._post(credential, path, {"inputs": [{"id": i} for i in exam_ids]})
        linked: dict[str, list[str]] = {exam: [] for exam in exam_ids}
        for result in answer.get("results", []):
            exam = str(result.get("from", {}).get("id"))
            linked[exam] = [str(to.get("toObjectId")) for to in result.get("to", [])]
        return linked

    async def _read_bookings(
        self, credential: str, rule: CounterRule, linked: dict[str, list[str]]
    ) -> dict[str, dict[str, Any]]:
        ids = sorted({b for bookings in linked.values() for b in bookings})
        asked = await self._index_properties(rule)
        found: dict[str, dict[str, Any]] = {}
        path = api_path("crm", "v3", "objects", rule.booking_object_type, "batch", "read")
        for batch in chunks(ids):
            body = {"inputs": [{"id": i} for i in batch], "properties": asked}
            answer = await self._post(credential, path, body)
            for obj in answer.get("results", []):
                if not obj.get("archived"):
                    found[str(obj.get("id"))] = obj
        return found

    async def _index_properties(self, rule: CounterRule) -> list[str]:
        wanted = {p for r in self._index_rules(rule) for p in (*r.key, *r.when)}
        if rule.active_property:
            wanted.add(rule.active_property)
        return sorted(wanted)

    def _index_rules(self, rule: CounterRule) -> list[SearchIndexRule]:
        return [
            r
            for r in self._rules.current.rules
            if isinstance(r, SearchIndexRule)
            and r.enabled
            and r.object_type == rule.booking_object_type
        ]

    async def _learn_bookings(
        self, credential: str, rule: CounterRule, bookings: dict[str, dict[str, Any]]
    ) -> None:
        """HubSpot's current bookings, trusted: cancelled ones leave the duplicate index."""
        sightings = [Sighting(r) for r in map(Record.from_object, bookings.values()) if r]
        learner = self._actions.learning.learner
        indexes = self._index_rules(rule)
        if is_portal(credential):  # a portal's counter: only the portal's indexes are its
            indexes = [r for r in indexes if r.shared_by == "portal"]
        owners = await self._actions.portals.grouped(credential, indexes, None)
        for owner, owned in owners.items():
            await learner.apply(owner, rule.booking_object_type, sightings, owned, trusted=True)

    async def _fix(
        self, ref: CounterRef, rule: CounterRule, active: list[str], in_hubspot: str | None
    ) -> Counter[str]:
        base = ref.key
        keys = [base, base + ":members", base + ":pending"]
        old, new = await self._reset(keys=keys, args=[rule.ttl_ms, *active])
        drift: Counter[str] = Counter()
        if old is None or int(old) != int(new):
            drift["redis"] += 1
            log.info(
                "counter drift fixed in redis",
                extra={"exam": ref.object_id, "was": old, "now": new},
            )
        if in_hubspot is None or str(in_hubspot) != str(new):
            drift["hubspot"] += 1  # the next sync sends it; clearing `synced` makes sure it does
            await self._redis.hdel(base, "synced")
        return drift

    async def _refresh_scopes(self) -> int:
        refreshed = 0
        pattern = any_credential("idxscope", "*", "loaded")
        async for raw in self._redis.scan_iter(match=pattern, count=1000):
            found = raw.decode() if isinstance(raw, bytes) else str(raw)
            credential = found.split("{", 1)[1].split("}", 1)[0]
            _, rule_name, scope, _ = found.split("}:", 1)[1].split(":", 3)
            if scope == part(GATEWAY_SCOPE):
                continue  # scope-less complete rules have nothing to reload
            work = self._refresh_scope(credential, rule_name, unquote(scope))
            refreshed += bool(await self._guarded("reconcile", credential, work))
        return refreshed

    async def _refresh_scope(self, credential: str, rule_name: str, scope: str) -> bool:
        try:
            await self._actions.refresh_index_scope(credential, rule_name, scope)
        except (ValueError, KeyError):
            return False  # the rule changed since the scope was loaded
        return True


def _active(rule: CounterRule, booking: dict[str, Any] | None) -> bool:
    if booking is None:
        return False  # deleted (archived) in HubSpot
    if rule.active_property is None:
        return True
    value = (booking.get("properties") or {}).get(rule.active_property)
    return value not in rule.cancelled_values
