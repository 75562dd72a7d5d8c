"""Dispatch of one classified request: answer from a rule, accept it for later, or forward it.

    respond       a static HubSpot-shaped answer, no upstream call
    write-behind  accepted durably now, sent later in a batch (`runtime.write_behind`)
    lookup        a search the index can answer (`search_index`); a miss is forwarded, then filled
    read          a GET the object cache holds; a miss is forwarded, then filled
    (others)      forwarded; the answer is buffered so the rules concerned can learn from it and
                  overlay it (counters); calls no rule learns from keep the streaming path

Cached answers are per credential (keys carry its hash); a call without a token is never
answered from, nor fills, a cache (invariant 4). Redis trouble means forwarding (invariant 7).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from aiohttp import web

from proxy.budget.limiter import BEHIND_RETRY_AFTER_S
from proxy.budget.overload import Overload
from proxy.errors import GatewayError
from proxy.http.context import ClientRequest
from proxy.http.responses import json_response
from proxy.hubspot import protocol as hubspot
from proxy.hubspot.protocol import parse_json
from proxy.metrics import Metrics
from proxy.reads.counter_rules import CounterRuntime
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
    CounterRule,
    IndexLookup,
    ObjectCacheRule,
    RespondRule,
    Role,
    SearchIndexRule,
    WriteBehindRule,
    select_search_index,
)
from proxy.rules.model import ADMISSIONS
from proxy.rules.paths import canonical_type
from proxy.runtime.capacity_guard import CapacityGuards
from proxy.runtime.coalescing import ride_for
from proxy.runtime.learning import RuleLearning
from proxy.runtime.own_calls import OwnCalls
from proxy.runtime.portals import Portals
from proxy.runtime.write_behind import WriteBehindAction
from proxy.store.credentials import KnownCredentials
from proxy.store.rule_store import RuleRedis, Unavailable
from proxy.upstream.admitted import AdmittedCaller, RateLimited
from proxy.upstream.answer import Answer
from proxy.upstream.coalesce.departure import Ride
from proxy.upstream.coalesce.gatherer import Coalescer, SendAlone
from proxy.upstream.forward import answer_response, forward, forward_buffered
from proxy.upstream.singleflight import FlightKey, Shared, Singleflight, flight_key

log = logging.getLogger("proxy.actions")

# Roles whose rules learn from (or rewrite) a forwarded answer.
LEARNING_ROLES: Final[tuple[Role, ...]] = (
    "overlay", "absorb", "create", "update", "delete", "associate", "dissociate",
)  # fmt: skip


class Actions:
    """One per process; its collaborators are built by the composition root (`proxy.app`)."""

    def __init__(
        self,
        *,
        rules: RulesHolder,
        caller: AdmittedCaller,
        store: RuleRedis,
        metrics: Metrics,
        own: OwnCalls,
        index: SearchIndex,
        loader: IndexLoader,
        counters: CounterRuntime,
        cache: ObjectCache,
        learning: RuleLearning,
        write_behind: WriteBehindAction | None,
        coalescer: Coalescer,
        credentials: KnownCredentials,
        portals: Portals,
        flights: Singleflight,
        overload: Overload,
    ) -> None:
        self.rules = rules
        self.credentials = credentials
        self.caller = caller
        self.store = store
        self.metrics = metrics
        self.own = own
        self.index = index
        self.loader = loader
        self.counters = counters
        self.cache = cache
        self.learning = learning
        self.write_behind = write_behind
        self.coalescer = coalescer
        self.portals = portals
        self.flights = flights
        self.overload = overload
        self.guards = CapacityGuards(counters, own, portals)

    async def handle(self, req: ClientRequest) -> web.StreamResponse:
        route = req.classification.route
        if route is not None and route.starts_flow:
            self._refuse_if_behind(req)
        action = req.classification.action
        if action is not None and isinstance(action.rule, RespondRule) and req.has_token:
            return self._respond(action.rule)  # without a token HubSpot answers 401: let it
        if action is not None and isinstance(action.rule, WriteBehindRule) and self.write_behind:
            accepted = await self.write_behind.accept(req, action.rule)
            if accepted is not None:
                return accepted
        if not req.classification.matches or not req.has_token or self.store.client is None:
            for match in () if req.has_token else req.classification.matches:
                self.learning.event(match.rule.name, "bypass")
            return await self._forward(req)
        answered = await self._answer(req)
        if answered is not None:
            return answered
        learns = req.classification.by_role(*LEARNING_ROLES)
        if req.lookup is None and req.cache_fill is None and not learns:
            return await self._forward(req)
        return await self._forward_and_learn(req)

    async def _forward(self, req: ClientRequest) -> web.StreamResponse:
        """Streamed through, unless it shares an identical read's answer or coalesces with
        compatible calls (its answer is then made whole)."""
        key = _flight_key(req)
        if key is not None:
            return _respond_with(req, await self._shared(req, key))
        ride = ride_for(self.rules.current, req)
        if ride is None:
            return await forward(req, self.caller)

        async def alone(admitted: bool) -> web.StreamResponse:
            # The ride's plan: its rider already took its `admissions` unit, if any.
            return await forward(req, self.caller, admitted=admitted, plan=ride.plan)

        return _respond_with(req, await self._coalesced(ride, req, alone))

    async def _whole(self, req: ClientRequest) -> Shared:
        """HubSpot's answer read whole: the one of an identical read in flight (singleflight),
        or this call's own (coalesced or alone); past the buffering cap, relayed as it came."""
        key = _flight_key(req)
        if key is None:
            return await self._upstream_answer(req)
        return await self._shared(req, key)

    async def _shared(self, req: ClientRequest, key: FlightKey) -> Shared:
        answer = await self.flights.share(key, lambda: self._upstream_answer(req))
        if answer is None:  # the twin's answer was too large to share: it was relayed to it
            return await forward(req, self.caller)
        if isinstance(answer, Answer):
            req.upstream_status = answer.status
        return answer

    async def _upstream_answer(self, req: ClientRequest) -> Shared:
        """HubSpot's answer to the call: sent alone, or coalesced with compatible calls that
        wait for the same budget (the answer is then exactly the one it would have had)."""
        ride = ride_for(self.rules.current, req)
        if ride is None:
            return await forward_buffered(req, self.caller)

        async def alone(admitted: bool) -> Answer | web.StreamResponse:
            # The ride's plan: its rider already took its `admissions` unit, if any.
            return await forward_buffered(req, self.caller, admitted=admitted, plan=ride.plan)

        return await self._coalesced(ride, req, alone)

    async def _coalesced(
        self, ride: Ride, req: ClientRequest, alone: SendAlone
    ) -> Answer | web.StreamResponse:
        started = time.monotonic()
        answer = await self.coalescer.send(ride, alone)
        if isinstance(answer, Answer):
            req.upstream_status = answer.status
            # Held, then waited for the group's slot: the ride's wait is the call's, whoever of
            # the group was admitted (sent alone, its own admission is on the plan already).
            trace = req.plan.trace
            trace.waited_s = max(trace.waited_s, time.monotonic() - started)
        return answer

    def _respond(self, rule: RespondRule) -> web.Response:
        self.metrics.rule_answers.labels(rule.name, "respond").inc()
        body = rule.encoded_body
        if body is None:
            return web.Response(status=rule.status, headers=dict(rule.headers))
        return web.Response(
            body=body,
            status=rule.status,
            content_type="application/json",
            charset="utf-8",
            headers=dict(rule.headers) if rule.headers else None,
        )

    async def _answer(self, req: ClientRequest) -> web.StreamResponse | None:
        action = req.classification.action
        if action is None:
            return None
        if action.role == "lookup":
            return await self._lookup(req)
        if action.role == "read" and isinstance(action.rule, ObjectCacheRule):
            return await self._cached(req, action.rule, action.params.get("objectId", ""))
        return None

    async def _lookup(self, req: ClientRequest) -> web.StreamResponse | None:
        selected = select_search_index(req.classification, req.json)
        if selected is None:
            return None
        rule, found = selected
        if not await self.credentials.is_accepted(req.credential):
            # Nothing is kept for a token HubSpot has not accepted (its index is empty anyway);
            # a 2xx answer accepts it and still fills the index.
            self.learning.event(rule.name, "miss")
            req.lookup, req.first_sight = (rule, found), True
            return None
        owner = await self.portals.owner(req.credential, rule, req.token)
        got = await self.index.lookup(owner, rule, found)
        if isinstance(got, Unavailable):
            self._not_answered(req, rule.name)
            return None
        load = await self._keep_scope_fresh(req, owner, rule, got)
        if got.answer is None and load is not None:
            got = await self._after_load(req, owner, rule, found, load) or got
        if got.answer is None:
            self.learning.event(rule.name, got.event)
            req.lookup = (rule, found)
            return None
        self.learning.event(rule.name, "hit")
        self.metrics.rule_answers.labels(rule.name, "search_index").inc()
        return json_response(got.answer)

    def _not_answered(self, req: ClientRequest, rule_name: str) -> None:
        """Redis did not give a rule's answer in time: the call is forwarded (invariant 7),
        unless Redis answers other calls (the breaker is closed) while the process is further
        behind than `limits.admissions.max_delay`. Then the process is saturated, not Redis
        away, and forwarding would spend HubSpot's budget (search's 5 a second) on a flow the
        process cannot finish: the call is refused as a new flow is (`proxy.budget.overload`)."""
        self.learning.event(rule_name, "bypass")
        if self.store.usable:
            self._refuse_if_behind(req)

    def _refuse_if_behind(self, req: ClientRequest) -> None:
        """A 429 while the process is further behind than `limits.admissions.max_delay`."""
        if self.overload.past(self.rules.current.limits.admissions_max_delay_ms):
            search = hubspot.is_search(req.method, req.path)
            policy = hubspot.POLICY_SECONDLY if search else hubspot.POLICY_TEN_SECONDLY
            self.metrics.rejected.labels(ADMISSIONS, req.plan.priority.label).inc()
            raise RateLimited(policy, BEHIND_RETRY_AFTER_S, behind=True)

    async def _keep_scope_fresh(
        self, req: ClientRequest, owner: str, rule: SearchIndexRule, got: Lookup
    ) -> ScopeLoad | None:
        """First sight of a scope of a complete rule loads it at the caller's priority, and
        gives the load to wait for; an old load is redone in the background.

        Any scoped rule keeps the token in the vault (under the index's owner): refreshes run
        later, without a client."""
        token = req.token
        remembered = (
            rule.scope is not None
            and token is not None
            and await self.own.remember_token(owner, token)
        )
        if not rule.complete or got.scope is None or not remembered:
            return None
        group = self._scope_group(rule)
        loaded = got.loaded_at_ms
        if loaded is None:
            urgency = Urgency(req.plan.priority, req.plan.deadline)
            return self.loader.ensure(owner, group, got.scope, urgency)
        if self.index.now_ms() - loaded >= REFRESH_AFTER_MS:
            self.loader.ensure(owner, group, got.scope)
        return None

    async def _after_load(
        self,
        req: ClientRequest,
        owner: str,
        rule: SearchIndexRule,
        found: IndexLookup,
        load: ScopeLoad,
    ) -> Lookup | None:
        """Wait (within the caller's deadline) for the scope's one load, then ask the index
        again: concurrent misses of a scope cost HubSpot one load, not a search each."""
        if load.joined:
            self.metrics.singleflight_hits.labels("scope_load").inc()
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(
                asyncio.shield(load.task), max(0.0, req.plan.deadline - started)
            )
        except TimeoutError:
            return None
        finally:
            # Waited for HubSpot (the load's budget and answer), as a forwarded call waits.
            req.plan.trace.waited_s += time.monotonic() - started
        if result.status != "loaded":
            return None  # busy on another replica, or failed: HubSpot answers this one
        got = await self.index.lookup(owner, rule, found)
        return None if isinstance(got, Unavailable) else got

    async def _cached(
        self, req: ClientRequest, rule: ObjectCacheRule, object_id: str
    ) -> web.StreamResponse | None:
        if "idProperty" in req.query or not object_id:
            return None  # looked up by another property: invalidation by id could not reach it
        counters = _overlays(req)
        overlays = [
            self.counters.read_with_cache(req.credential, counter, object_id)
            for counter in counters
        ]
        if any(c.shared_by == "portal" for c in counters):
            overlays = []  # a portal's counters live under another hash tag: read them after
        got = await self.cache.get(req.credential, rule.object_type, object_id, req.query, overlays)
        if isinstance(got, Unavailable):
            self._not_answered(req, rule.name)
            return None
        if got.body is None:
            self.learning.event(rule.name, "miss")
            req.cache_fill = (rule, object_id, got.generation)
            return None
        return await self._cache_hit(req, rule, got, counters)

    async def _cache_hit(
        self, req: ClientRequest, rule: ObjectCacheRule, got: CacheRead, counters: list[CounterRule]
    ) -> web.StreamResponse | None:
        data = parse_json(got.body or b"")
        if not isinstance(data, dict):
            return None
        for i, counter in enumerate(counters):
            if got.overlaid:
                shown = await self.counters.overlay_read(
                    req.credential, counter, data, got.overlaid[i]
                )
            else:
                owner = await self.portals.owner(req.credential, counter, req.token)
                shown = await self.counters.overlay(owner, counter, [data])
            if not shown:
                self.learning.event(rule.name, "bypass")
                return None  # a count that cannot be read must not come from a cache
        self.learning.event(rule.name, "hit")
        self.metrics.rule_answers.labels(rule.name, "object_cache").inc()
        return json_response(data)

    async def _forward_and_learn(self, req: ClientRequest) -> web.StreamResponse:
        await self.learning.before_send(req)
        seats = await self.guards.take(req)
        try:
            answer = await self._whole(req)
        except GatewayError as exc:
            if exc.status < 500:  # the gateway did not send it: give the seats back
                await self.guards.release(seats)
            raise
        if isinstance(answer, web.StreamResponse):
            # Too large to read whole: relayed as it came, nothing learned; a held seat stays
            # held until the booking's association takes it or the hold expires.
            return answer
        await self.guards.settle(req, seats, answer)
        if answer.parsable:
            await self.learning.after_answer_safely(req, answer)
        await self._after_first_sight(req)
        return answer_response(answer, req.request_id)

    async def _after_first_sight(self, req: ClientRequest) -> None:
        """HubSpot has just accepted the token of a search: start the scope load its lookup
        would have started."""
        if not req.first_sight or req.lookup is None or not self.credentials.seen(req.credential):
            return
        rule, found = req.lookup
        try:
            owner = await self.portals.owner(req.credential, rule, req.token)
            got = await self.index.lookup(owner, rule, found)
            if not isinstance(got, Unavailable):
                await self._keep_scope_fresh(req, owner, rule, got)
        except Exception:  # a rule must never fail the request it learns from
            log.exception("scope load after first sight failed", extra={"route": req.route})

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


def _overlays(req: ClientRequest) -> list[CounterRule]:
    """The counters a read's answer shows, in file order."""
    found = req.classification.by_role("overlay")
    return [m.rule for m in found if isinstance(m.rule, CounterRule)]


def _flight_key(req: ClientRequest) -> FlightKey | None:
    credential = req.credential if req.has_token else None
    return flight_key(credential, req.method, req.path_qs, req.path, req.body)


def _respond_with(req: ClientRequest, answer: Shared) -> web.StreamResponse:
    return answer_response(answer, req.request_id) if isinstance(answer, Answer) else answer
