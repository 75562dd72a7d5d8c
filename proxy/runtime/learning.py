"""After a forwarded call: let every rule it concerns learn from HubSpot's answer.

Only 2xx answers teach anything (a refused write changed nothing). Object-cache invalidation is
the exception: it also follows 5xx and timeouts, where the write may have landed, because
dropping a cached copy is always safe. Nothing here may fail the request: the caller logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.budget.plans import CallPlan
from proxy.http.context import RequestContext
from proxy.metrics import Metrics
from proxy.reads.call_objects import (
    answered_objects,
    association_pairs,
    deleted_ids,
    input_properties,
    written_records,
)
from proxy.reads.counter_rules import CounterRuntime, booking_exam_pairs
from proxy.reads.index_entries import Record
from proxy.reads.index_learning import IndexLearner, Sighting
from proxy.reads.object_cache import ObjectCache
from proxy.reads.search_index import SearchIndex
from proxy.rules.loader import (
    AssociationSource,
    Classification,
    CounterRule,
    IndexLookup,
    ObjectCacheRule,
    PropertySource,
    Role,
    RuleMatch,
    SearchIndexRule,
)
from proxy.runtime.own_calls import OwnCalls
from proxy.runtime.portals import Portals
from proxy.upstream.forward import Buffered


@dataclass
class Call:
    """One client call on its way through the rules."""

    request: web.Request
    ctx: RequestContext
    cls: Classification
    plan: CallPlan
    token: str
    body: Any  # the request body as JSON; None when it is not JSON
    lookup: tuple[SearchIndexRule, IndexLookup] | None = None
    cache_fill: tuple[ObjectCacheRule, str, str] | None = None  # rule, object id, generation
    first_sight: bool = False  # the lookup waited for HubSpot to accept the token
    counted: CounterRule | None = None  # counted already, in the same step that accepted it

    @property
    def cred(self) -> str:
        return self.ctx.credential

    @property
    def query(self) -> str:
        return self.ctx.path_qs.partition("?")[2]

    def index_rules(self, *roles: Role) -> list[SearchIndexRule]:
        found = self.cls.by_role(*roles)
        return [m.rule for m in found if isinstance(m.rule, SearchIndexRule)]


def parse_json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


class RuleLearning:
    def __init__(
        self,
        index: SearchIndex,
        learner: IndexLearner,
        counters: CounterRuntime,
        cache: ObjectCache,
        own: OwnCalls,
        portals: Portals,
        metrics: Metrics,
    ) -> None:
        self.index = index
        self.learner = learner
        self.counters = counters
        self.cache = cache
        self.own = own
        self.portals = portals
        self.metrics = metrics

    def event(self, rule: str, event: str) -> None:
        self.metrics.cache_events.labels(rule, event).inc()

    async def learn(self, call: Call, answer: Buffered) -> None:
        ok = 200 <= answer.status < 300
        data = parse_json(answer.body) if ok else None
        if ok or answer.status >= 500:
            await self._invalidate(call, data)
        if not ok:
            return
        if call.cache_fill is not None and answer.status == 200:
            rule, object_id, generation = call.cache_fill
            if await self.cache.fill(
                call.cred, rule.object_type, object_id, call.query, generation, answer.body,
                rule.ttl_ms,
            ):  # fmt: skip
                self.event(rule.name, "fill")
        await self._fill_index(call, data)
        await self._index_writes(call, data)
        for match in call.cls.matches:
            if isinstance(match.rule, CounterRule) and match.rule is not call.counted:
                await self._counter_event(call, match, match.rule, data)
        if await self._overlay(call, data):
            answer.body = orjson.dumps(data)

    async def _invalidate(self, call: Call, data: Any) -> None:
        counted = {m.rule.property for m in call.cls.matches if isinstance(m.rule, CounterRule)}
        for match in call.cls.by_role("update", "delete"):
            rule = match.rule
            if not isinstance(rule, ObjectCacheRule):
                continue
            object_id = match.params.get("objectId")
            if match.role == "delete":
                ids = deleted_ids(call.body, object_id)
            else:
                written = input_properties(call.body, object_id)
                # A write of nothing but a counted property leaves the cached copy right:
                # that property is overlaid from Redis on every answer anyway.
                ids = [i for i, props in written.items() if not set(props) <= counted]
                ids += [str(o["id"]) for o in answered_objects(data) if str(o["id"]) not in written]
            if ids and await self.cache.invalidate(call.cred, rule.object_type, ids, rule.ttl_ms):
                self.event(rule.name, "invalidate")

    async def _fill_index(self, call: Call, data: Any) -> None:
        if call.lookup is None:
            return
        rule, found = call.lookup
        owner = await self.portals.owner(call.cred, rule, call.token)
        rules = [r for r in call.index_rules("lookup") if r.shared_by == rule.shared_by]
        if await self.learner.fill(owner, rule, found, data, rules):
            self.event(rule.name, "fill")

    async def _index_writes(self, call: Call, data: Any) -> None:
        roles: tuple[Role, ...] = ("create", "update", "delete")
        for role in roles:
            rules = call.index_rules(role)
            if not rules:
                continue
            match = next(m for m in call.cls.by_role(role) if m.rule in rules)
            object_id = match.params.get("objectId")
            if role == "delete":
                ids = deleted_ids(call.body, object_id)
                sightings = [Sighting(Record(i, {}), deleted=True) for i in ids]
            else:
                records = written_records(data, call.body, object_id, create=role == "create")
                sightings = [Sighting(r) for r in records]
            for owner, owned in (await self.portals.grouped(call.cred, rules, call.token)).items():
                await self._learn_writes(owner, role, sightings, owned)

    async def _learn_writes(
        self, owner: str, role: Role, sightings: list[Sighting], rules: list[SearchIndexRule]
    ) -> None:
        object_type = rules[0].object_type
        learned = await self.learner.apply(owner, object_type, sightings, rules, trusted=True)
        complete = [r for r in rules if r.complete]
        if not learned:
            self.index.forget_scopes_later(owner, complete)
        elif role == "create":
            await self.index.saw_create(owner, complete)
        for rule in rules:
            self.event(rule.name, "learn" if learned else "bypass")

    async def _counter_event(
        self, call: Call, match: RuleMatch, rule: CounterRule, data: Any
    ) -> None:
        object_id = match.params.get("objectId")
        cred = await self.portals.owner(call.cred, rule, call.token)
        if cred != call.cred:  # a shared count: the jobs serve it with a token of the portal
            await self.own.remember_token(cred, call.token)

        async def fetch(_: str, r: CounterRule, oid: str) -> tuple[int | None, int | None] | None:
            return await self.own.counts(call.cred, r, oid, call.token)  # the caller's budget

        if match.role in ("associate", "dissociate") and isinstance(rule.source, AssociationSource):
            links = booking_exam_pairs(rule, association_pairs(match.params, call.body))
            if match.role == "associate":
                await self.counters.link(cred, rule, links, fetch)
            else:
                for booking_id, exam_id in links:
                    await self.counters.unlink(cred, rule, [booking_id], exam_id)
        elif call.cls.object_type != rule.booking_object_type:
            return  # a forwarded write of the counter object itself: the count is not learned
        elif match.role == "update":
            changes = input_properties(call.body, object_id)
            for record in written_records(data, call.body, object_id):
                changes.setdefault(record.id, {}).update(
                    {k: v for k, v in record.properties.items() if k == rule.active_property}
                )
            await self.counters.booking_changed(cred, rule, changes, fetch)
        elif match.role == "delete":
            await self.counters.unlink(cred, rule, deleted_ids(call.body, object_id))
        elif match.role == "create" and isinstance(rule.source, PropertySource):
            prop = rule.source.property
            records = written_records(data, call.body, None, create=True)
            links = [(r.id, v) for r in records if (v := r.properties.get(prop))]
            await self.counters.link(cred, rule, links, fetch)

    async def _overlay(self, call: Call, data: Any) -> bool:
        objects = answered_objects(data)
        if not objects:
            return False
        overlaid = False
        for match in call.cls.by_role("overlay", "absorb"):
            if isinstance(match.rule, CounterRule):
                seed = match.role == "overlay"  # an absorbed write's echo is the client's number
                owner = await self.portals.owner(call.cred, match.rule, call.token)
                await self.counters.overlay(owner, match.rule, objects, seed=seed)
                overlaid = True
        return overlaid
