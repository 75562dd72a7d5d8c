"""Around a call the rules learn from: the count a client write carries is made authoritative
before it is sent (`before_send`); every rule it concerns learns from the answer (`after_answer`).

Only 2xx answers teach anything (a refused write changed nothing). Object-cache invalidation is
the exception: it also follows 5xx and timeouts, where the write may have landed, because
dropping a cached copy is always safe. Nothing here may fail the request: the caller logs.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from proxy.http.context import ClientRequest
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
    CounterRule,
    ObjectCacheRule,
    PropertySource,
    Role,
    RuleMatch,
    SearchIndexRule,
)
from proxy.runtime.own_calls import OwnCalls
from proxy.runtime.portals import Portals
from proxy.upstream.answer import Answer

log = logging.getLogger("proxy.actions")


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

    async def before_send(self, call: ClientRequest) -> None:
        """Client writes of a counted property carry the authoritative count instead (`absorb`)."""
        for match in call.classification.by_role("absorb"):
            rule = match.rule
            body = call.json
            if not isinstance(rule, CounterRule) or body is None:
                continue
            object_id = match.params.get("objectId")
            owner = await self.portals.owner(call.credential, rule, call.token)
            if await self.counters.absorb(owner, rule, body, object_id):
                call.replace_json(body, orjson.dumps(body))
                self.event(rule.name, "absorb")

    async def after_answer_safely(self, call: ClientRequest, answer: Answer) -> None:
        """`after_answer`, logged instead of raised: a rule must never fail the request."""
        try:
            await self.after_answer(call, answer)
        except Exception:
            log.exception("rule learning failed", extra={"route": call.route})

    async def after_answer(self, call: ClientRequest, answer: Answer) -> None:
        """Everything the rules learn from `answer`; the body comes back overlaid."""
        ok = 200 <= answer.status < 300
        data = answer.json() if ok else None
        if ok or answer.status >= 500:
            await self._invalidate(call, data)
        if not ok:
            return
        if call.cache_fill is not None and answer.status == 200:
            rule, object_id, generation = call.cache_fill
            if await self.cache.fill(
                call.credential, rule.object_type, object_id, call.query, generation, answer.body,
                rule.ttl_ms,
            ):  # fmt: skip
                self.event(rule.name, "fill")
        await self._fill_index(call, data)
        await self._index_writes(call, data)
        for match in call.classification.matches:
            if isinstance(match.rule, CounterRule) and match.rule is not call.counted:
                await self._counter_event(call, match, match.rule, data)
        if await self._overlay(call, data):
            answer.body = orjson.dumps(data)

    async def _invalidate(self, call: ClientRequest, data: Any) -> None:
        counted = {
            m.rule.property for m in call.classification.matches if isinstance(m.rule, CounterRule)
        }
        for match in call.classification.by_role("update", "delete"):
            rule = match.rule
            if not isinstance(rule, ObjectCacheRule):
                continue
            object_id = match.params.get("objectId")
            if match.role == "delete":
                ids = deleted_ids(call.json, object_id)
            else:
                written = input_properties(call.json, object_id)
                # A write of nothing but a counted property leaves the cached copy right:
                # that property is overlaid from Redis on every answer anyway.
                ids = [i for i, props in written.items() if not set(props) <= counted]
                ids += [str(o["id"]) for o in answered_objects(data) if str(o["id"]) not in written]
            if ids and await self.cache.invalidate(
                call.credential, rule.object_type, ids, rule.ttl_ms
            ):
                self.event(rule.name, "invalidate")

    async def _fill_index(self, call: ClientRequest, data: Any) -> None:
        if call.lookup is None:
            return
        rule, found = call.lookup
        owner = await self.portals.owner(call.credential, rule, call.token)
        rules = [r for r in call.index_rules("lookup") if r.shared_by == rule.shared_by]
        if await self.learner.fill(owner, rule, found, data, rules):
            self.event(rule.name, "fill")

    async def _index_writes(self, call: ClientRequest, data: Any) -> None:
        roles: tuple[Role, ...] = ("create", "update", "delete")
        for role in roles:
            rules = call.index_rules(role)
            if not rules:
                continue
            match = next(m for m in call.classification.by_role(role) if m.rule in rules)
            object_id = match.params.get("objectId")
            if role == "delete":
                ids = deleted_ids(call.json, object_id)
                sightings = [Sighting(Record(i, {}), deleted=True) for i in ids]
            else:
                records = written_records(data, call.json, object_id, create=role == "create")
                sightings = [Sighting(r) for r in records]
            groups = await self.portals.grouped(call.credential, rules, call.token)
            for owner, owned in groups.items():
                await self._learn_writes(owner, role, sightings, owned)

    async def _learn_writes(
        self, owner: str, role: Role, sightings: list[Sighting], rules: list[SearchIndexRule]
    ) -> None:
        object_type = rules[0].object_type
        learned = await self.learner.apply(owner, object_type, sightings, rules, trusted=True)
        complete = [r for r in rules if r.complete]
        if not learned and not self.learner.apply_later(owner, object_type, sightings, rules):
            self.index.forget_scopes_later(owner, complete)
        elif role == "create":
            await self.index.saw_create(owner, complete)
        for rule in rules:
            self.event(rule.name, "learn" if learned else "bypass")

    async def _counter_event(
        self, call: ClientRequest, match: RuleMatch, rule: CounterRule, data: Any
    ) -> None:
        object_id = match.params.get("objectId")
        token = call.token
        if token is None:
            return  # answers to calls without a token are never learned from (invariant 4)
        cred = await self.portals.owner(call.credential, rule, token)
        if cred != call.credential:  # a shared count: the jobs serve it with a token of the portal
            await self.own.remember_token(cred, token)

        async def fetch(_: str, r: CounterRule, oid: str) -> tuple[int | None, int | None] | None:
            return await self.own.counts(call.credential, r, oid, token)  # the caller's budget

        if match.role in ("associate", "dissociate") and isinstance(rule.source, AssociationSource):
            links = booking_exam_pairs(rule, association_pairs(match.params, call.json))
            if match.role == "associate":
                await self.counters.link(cred, rule, links, fetch)
            else:
                for booking_id, exam_id in links:
                    await self.counters.unlink(cred, rule, [booking_id], exam_id)
        elif call.classification.object_type != rule.booking_object_type:
            return  # a forwarded write of the counter object itself: the count is not learned
        elif match.role == "update":
            changes = input_properties(call.json, object_id)
            for record in written_records(data, call.json, object_id):
                changes.setdefault(record.id, {}).update(
                    {k: v for k, v in record.properties.items() if k == rule.active_property}
                )
            await self.counters.booking_changed(cred, rule, changes, fetch)
        elif match.role == "delete":
            await self.counters.unlink(cred, rule, deleted_ids(call.json, object_id))
        elif match.role == "create" and isinstance(rule.source, PropertySource):
            prop = rule.source.property
            records = written_records(data, call.json, None, create=True)
            links = [(r.id, v) for r in records if (v := r.properties.get(prop))]
            await self.counters.link(cred, rule, links, fetch)

    async def _overlay(self, call: ClientRequest, data: Any) -> bool:
        objects = answered_objects(data)
        if not objects:
            return False
        overlaid = False
        for match in call.classification.by_role("overlay", "absorb"):
            if isinstance(match.rule, CounterRule):
                seed = match.role == "overlay"  # an absorbed write's echo is the client's number
                owner = await self.portals.owner(call.credential, match.rule, call.token)
                await self.counters.overlay(owner, match.rule, objects, seed=seed)
                overlaid = True
        return overlaid
