"""Rule actions at request time: answer from a rule, or forward and let the rules learn.

    respond   a static HubSpot-shaped answer, no upstream call
    lookup    a search the index can answer (`search_index`); a miss is forwarded, then filled
    read      a GET the object cache holds; a miss is forwarded, then filled
    (others)  forwarded; the answer is buffered so the rules concerned can learn from it and
              overlay it (counters); calls no rule learns from keep the streaming path

Cached answers are per credential (keys carry its hash); a call without a token is never
answered from, nor fills, a cache (invariant 4). Redis trouble means forwarding (invariant 7).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import orjson
from aiohttp import web

from proxy.budget.plans import CallPlan
from proxy.errors import GatewayError
from proxy.http.context import RequestContext
from proxy.http.credentials import bearer_token
from proxy.http.responses import json_response
from proxy.metrics import Metrics
from proxy.reads.call_objects import association_pairs
from proxy.reads.counter_rules import CounterRuntime, booking_exam_pairs
from proxy.reads.counters import Counters
from proxy.reads.index_learning import IndexLearner
from proxy.reads.index_loader import (
    REFRESH_AFTER_MS,
    IndexLoader,
    LoadResult,
    ScopeLoad,
    Urgency,
    scope_group,
)
from proxy.reads.object_cache import CacheRead, ObjectCache
from proxy.reads.search_index import Lookup, SearchIndex
from proxy.rules.holder import RulesHolder
from proxy.rules.loader import (
    AssociationSource,
    Classification,
    CounterRule,
    IndexLookup,
    ObjectCacheRule,
    RespondRule,
    Role,
    SearchIndexRule,
    select_search_index,
)
from proxy.rules.paths import canonical_type
from proxy.runtime.capacity_guard import CapacityGuards
from proxy.runtime.coalescing import ride_for
from proxy.runtime.learning import Call, RuleLearning, parse_json
from proxy.runtime.own_calls import OwnCalls
from proxy.runtime.portals import Portals
from proxy.store.credentials import KnownCredentials
from proxy.store.rule_store import RuleRedis, Unavailable
from proxy.store.vault import TokenVault
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.coalesce.gatherer import Coalescer
from proxy.upstream.forward import Buffered, buffered_response, forward, forward_buffered
from proxy.upstream.singleflight import FlightKey, Singleflight, flight_key

log = logging.getLogger("proxy.actions")

# Roles whose rules learn from (or rewrite) a forwarded answer.
LEARNING_ROLES: Final[tuple[Role, ...]] = (
    "overlay", "absorb", "create", "update", "delete", "associate", "dissociate",
)  # fmt: skip


class Actions:
    def __init__(
        self,
        *,
        rules: RulesHolder,
        caller: AdmittedCaller,
        store: RuleRedis,
        vault: TokenVault | None,
        metrics: Metrics,
        credentials: KnownCredentials,
        credential_key: bytes,
    ) -> None:
        self.rules = rules
        self.credentials = credentials
        self.caller = caller
        self.store = store
        self.metrics = metrics
        self.coalescer = Coalescer(caller, metrics)
        self.own = OwnCalls(rules, caller, vault, store, credential_key)
        self.portals = Portals(self.own, store)
        self.index = SearchIndex(store)
        learner = IndexLearner(self.index)
        self.loader = IndexLoader(self.index, learner, self.own.search)
        self.counters = CounterRuntime(Counters(store))
        self.cache = ObjectCache(store)
        self.learning = RuleLearning(
            self.index, learner, self.counters, self.cache, self.own, self.portals, metrics
        )
        self.flights = Singleflight(metrics)
        self.guards = CapacityGuards(self.counters, self.own, self.portals)

    async def handle(
        self, request: web.Request, ctx: RequestContext, cls: Classification, plan: CallPlan
    ) -> web.StreamResponse:
        action = cls.action
        token = bearer_token(request)
        if action is not None and isinstance(action.rule, RespondRule) and token is not None:
            return self._respond(action.rule)  # without a token HubSpot answers 401: let it
        if not cls.matches or token is None or self.store.client is None:
            for match in cls.matches if token is None else ():
                self.learning.event(match.rule.name, "bypass")
            return await self._forward(request, ctx, cls, plan, token)
        call = Call(request, ctx, cls, plan, token, parse_json(ctx.body))
        answered = await self._answer(call)
        if answered is not None:
            return answered
        if call.lookup is None and call.cache_fill is None and not cls.by_role(*LEARNING_ROLES):
            return await self._forward(request, ctx, cls, plan, token)
        return await self._forward_and_learn(call)

    async def _forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        cls: Classification,
        plan: CallPlan,
        token: str | None,
    ) -> web.StreamResponse:
        """Streamed through, unless it shares an identical read's answer or coalesces with
        compatible calls (its answer is then made whole)."""
        key = flight_key(
            ctx.credential if token else None, ctx.method, ctx.path_qs, ctx.path, ctx.body
        )
        if key is None and ride_for(self.rules.current, request, ctx, cls, plan) is None:
            return await forward(request, ctx, self.caller, plan)
        answer = await self._whole(request, ctx, cls, plan, key)
        if isinstance(answer, Buffered):
            return buffered_response(answer, ctx.request_id)
        return answer

    async def _send(self, call: Call) -> Buffered | web.StreamResponse:
        """HubSpot's whole answer to the call; past the buffering cap, relayed as it came."""
        ctx = call.ctx
        key = flight_key(call.cred, ctx.method, ctx.path_qs, ctx.path, ctx.body)
        return await self._whole(call.request, ctx, call.cls, call.plan, key)

    async def _whole(
        self,
        request: web.Request,
        ctx: RequestContext,
        cls: Classification,
        plan: CallPlan,
        key: FlightKey | None,
    ) -> Buffered | web.StreamResponse:
        """HubSpot's answer read whole: the one of an identical read in flight (singleflight),
        or this call's own (coalesced or alone)."""
        if key is None:
            return await self._upstream_answer(request, ctx, cls, plan)
        answer = await self.flights.share(
            key, lambda: self._upstream_answer(request, ctx, cls, plan)
        )
        if answer is None:  # the twin's answer was too large to share: it was relayed to it
            return await forward(request, ctx, self.caller, plan)
        if isinstance(answer, Buffered):
            ctx.upstream_status = answer.status
        return answer

    async def _upstream_answer(
        self, request: web.Request, ctx: RequestContext, cls: Classification, plan: CallPlan
    ) -> Buffered | web.StreamResponse:
        """HubSpot's answer to the call: sent alone, or coalesced with compatible calls that
        wait for the same budget (the answer is then exactly the one it would have had)."""
        ride = ride_for(self.rules.current, request, ctx, cls, plan)
        if ride is None:
            return await forward_buffered(request, ctx, self.caller, plan)

        async def alone(admitted: bool) -> Buffered | web.StreamResponse:
            # The ride's plan: its rider already took its `admissions` unit, if any.
            return await forward_buffered(request, ctx, self.caller, ride.plan, admitted=admitted)

        started = time.monotonic()
        answer = await self.coalescer.send(ride, alone)
        if isinstance(answer, Buffered):  # alone, the forwarding path kept the books itself
            ctx.upstream_status = answer.status
            ctx.waited_s += time.monotonic() - started  # held, then waited for the group's slot
        return answer

    def _respond(self, rule: RespondRule) -> web.Response:
        self.metrics.rule_answers.labels(rule.name, "respond").inc()
        if rule.body is None:
            return web.Response(status=rule.status, headers=dict(rule.headers))
        return json_response(rule.body, status=rule.status, headers=dict(rule.headers))

    async def _answer(self, call: Call) -> web.StreamResponse | None:
        action = call.cls.action
        if action is None:
            return None
        if action.role == "lookup":
            return await self._lookup(call)
        if action.role == "read" and isinstance(action.rule, ObjectCacheRule):
            return await self._cached(call, action.rule, action.params.get("objectId", ""))
        return None

    async def _lookup(self, call: Call) -> web.StreamResponse | None:
        selected = select_search_index(call.cls, call.body)
        if selected is None:
            return None
        rule, found = selected
        if not await self.credentials.is_accepted(call.cred):
            # Nothing is kept for a token HubSpot has not accepted (its index is empty anyway);
            # a 2xx answer accepts it and still fills the index.
            self.learning.event(rule.name, "miss")
            call.lookup, call.first_sight = (rule, found), True
            return None
        owner = await self.portals.owner(call.cred, rule, call.token)
        got = await self.index.lookup(owner, rule, found)
        if isinstance(got, Unavailable):
            self.learning.event(rule.name, "bypass")
            return None
        load = await self._keep_scope_fresh(call, owner, rule, got)
        if got.answer is None and load is not None:
            got = await self._after_load(call, owner, rule, found, load) or got
        if got.answer is None:
            self.learning.event(rule.name, got.event)
            call.lookup = (rule, found)
            return None
        self.learning.event(rule.name, "hit")
        self.metrics.rule_answers.labels(rule.name, "search_index").inc()
        return json_response(got.answer)

    async def _keep_scope_fresh(
        self, call: Call, owner: str, rule: SearchIndexRule, got: Lookup
    ) -> ScopeLoad | None:
        """First sight of a scope of a complete rule loads it at the caller's priority, and
        gives the load to wait for; an old load is redone in the background.

        Any scoped rule keeps the token in the vault (under the index's owner): refreshes run
        later, without a client."""
        remembered = rule.scope is not None and await self.own.remember_token(owner, call.token)
        if not rule.complete or got.scope is None or not remembered:
            return None
        group = self._scope_group(rule)
        loaded = got.loaded_at_ms
        if loaded is None:
            urgency = Urgency(call.plan.priority, call.plan.deadline)
            return self.loader.ensure(owner, group, got.scope, urgency)
        if self.index.now_ms() - loaded >= REFRESH_AFTER_MS:
            self.loader.ensure(owner, group, got.scope)
        return None

    async def _after_load(
        self, call: Call, owner: str, rule: SearchIndexRule, found: IndexLookup, load: ScopeLoad
    ) -> Lookup | None:
        """Wait (within the caller's deadline) for the scope's one load, then ask the index
        again: concurrent misses of a scope cost HubSpot one load, not a search each."""
        if load.joined:
            self.metrics.singleflight_hits.labels("scope_load").inc()
        try:
            result = await asyncio.wait_for(
                asyncio.shield(load.task), max(0.0, call.plan.deadline - time.monotonic())
            )
        except TimeoutError:
            return None
        if result.status != "loaded":
            return None  # busy on another replica, or failed: HubSpot answers this one
        got = await self.index.lookup(owner, rule, found)
        return None if isinstance(got, Unavailable) else got

    async def _cached(
        self, call: Call, rule: ObjectCacheRule, object_id: str
    ) -> web.StreamResponse | None:
        if "idProperty" in call.query or not object_id:
            return None  # looked up by another property: invalidation by id could not reach it
        got = await self.cache.get(call.cred, rule.object_type, object_id, call.query)
        if isinstance(got, Unavailable):
            self.learning.event(rule.name, "bypass")
            return None
        if got.body is None:
            self.learning.event(rule.name, "miss")
            call.cache_fill = (rule, object_id, got.generation)
            return None
        return await self._cache_hit(call, rule, got)

    async def _cache_hit(
        self, call: Call, rule: ObjectCacheRule, got: CacheRead
    ) -> web.StreamResponse | None:
        data = parse_json(got.body or b"")
        if not isinstance(data, dict):
            return None
        for match in call.cls.by_role("overlay"):
            counter = match.rule
            if not isinstance(counter, CounterRule):
                continue
            owner = await self.portals.owner(call.cred, counter, call.token)
            if not await self.counters.overlay(owner, counter, [data]):
                self.learning.event(rule.name, "bypass")
                return None  # a count that cannot be read must not come from a cache
        self.learning.event(rule.name, "hit")
        self.metrics.rule_answers.labels(rule.name, "object_cache").inc()
        return json_response(data)

    async def _forward_and_learn(self, call: Call) -> web.StreamResponse:
        await self._absorb(call)
        seats = await self.guards.take(call)
        try:
            answer = await self._send(call)
        except GatewayError as exc:
            if exc.status < 500:  # the gateway did not send it: give the seats back
                await self.guards.release(seats)
            raise
        if not isinstance(answer, Buffered):
            # Too large to read whole: relayed as it came, nothing learned; a held seat stays
            # held until the booking's association takes it or the hold expires.
            return answer
        await self.guards.settle(call, seats, answer)
        try:
            await self.learning.learn(call, answer)
            await self._after_first_sight(call)
        except Exception:  # a rule must never fail the request it learns from
            log.exception("rule learning failed", extra={"route": call.ctx.route})
        return buffered_response(answer, call.ctx.request_id)

    async def _after_first_sight(self, call: Call) -> None:
        """HubSpot has just accepted the token of a search: start the scope load its lookup
        would have started."""
        if not call.first_sight or call.lookup is None or not self.credentials.seen(call.cred):
            return
        rule, found = call.lookup
        owner = await self.portals.owner(call.cred, rule, call.token)
        got = await self.index.lookup(owner, rule, found)
        if not isinstance(got, Unavailable):
            await self._keep_scope_fresh(call, owner, rule, got)

    async def _absorb(self, call: Call) -> None:
        """Client writes of a counted property carry the authoritative count instead."""
        for match in call.cls.by_role("absorb"):
            rule = match.rule
            if not isinstance(rule, CounterRule) or call.body is None:
                continue
            object_id = match.params.get("objectId")
            owner = await self.portals.owner(call.cred, rule, call.token)
            if await self.counters.absorb(owner, rule, call.body, object_id):
                call.ctx.body = orjson.dumps(call.body)
                self.learning.event(rule.name, "absorb")

    # -- for actions that answer a call themselves (write-behind accepts it for later) -----------

    def _call(
        self, request: web.Request, ctx: RequestContext, cls: Classification, plan: CallPlan
    ) -> Call | None:
        token = bearer_token(request)
        if token is None or self.store.client is None:
            return None
        return Call(request, ctx, cls, plan, token, parse_json(ctx.body))

    async def absorb_before_accept(
        self, request: web.Request, ctx: RequestContext, cls: Classification, plan: CallPlan
    ) -> None:
        """Put the authoritative count in `ctx.body` before the call is accepted for later."""
        call = self._call(request, ctx, cls, plan)
        if call is not None:
            await self._absorb(call)

    async def learn_from_accepted(
        self,
        request: web.Request,
        ctx: RequestContext,
        cls: Classification,
        plan: CallPlan,
        answer: Buffered,
        *,
        counted: CounterRule | None = None,
    ) -> Buffered:
        """Let the rules learn from the answer given for an accepted write, as if HubSpot had
        given it; the answer comes back overlaid. `counted`: a counter the acceptance itself
        already changed (see `counted_association`)."""
        call = self._call(request, ctx, cls, plan)
        if call is not None:
            call.counted = counted
            try:
                await self.learning.learn(call, answer)
            except Exception:
                log.exception("rule learning failed", extra={"route": ctx.route})
        return answer

    def counted_association(
        self, cls: Classification, body: Any
    ) -> tuple[CounterRule, str, str] | None:
        """(rule, booking id, exam id) when accepting this call for later links a counted
        booking: the count then changes in the same Redis step as the acceptance."""
        if self.store.client is None:
            return None
        for match in cls.by_role("associate"):
            rule = match.rule
            if not isinstance(rule, CounterRule) or not isinstance(rule.source, AssociationSource):
                continue
            pairs = booking_exam_pairs(rule, association_pairs(match.params, body))
            if len(pairs) == 1:
                return rule, *pairs[0]
        return None

    def _index_rules(self) -> list[SearchIndexRule]:
        return [r for r in self.rules.current.rules if isinstance(r, SearchIndexRule) and r.enabled]

    def _scope_group(self, rule: SearchIndexRule) -> list[SearchIndexRule]:
        """The rules one load of `rule`'s scope fills: they keep their state in one place."""
        return [r for r in scope_group(self._index_rules(), rule) if r.shared_by == rule.shared_by]

    async def refresh_index_scope(self, owner: str, rule_name: str, scope: str) -> LoadResult:
        """Reload one scope of a complete index from HubSpot (the reconcile job's entry point):
        entries of records cancelled or deleted directly in HubSpot are dropped. `owner` is
        the id the index is kept under (a credential, or a shared portal)."""
        rule = self.rules.current.rule(rule_name)
        if not isinstance(rule, SearchIndexRule) or not rule.scope:
            raise ValueError(f"{rule_name!r} is not a search_index rule with a scope")
        return await self.loader.refresh(owner, self._scope_group(rule), scope)

    async def aclose(self) -> None:
        await self.loader.aclose()
        await self.coalescer.aclose()

    def counter_rule(self, object_type: str) -> CounterRule | None:
        canonical = canonical_type(object_type, self.rules.current.object_types)
        for rule in self.rules.current.rules:
            if isinstance(rule, CounterRule) and rule.enabled and rule.object_type == canonical:
                return rule
        return None
