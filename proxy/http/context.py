"""One client request as the gateway knows it: read once, its token parsed once, classified once,
planned once (when first needed), its JSON body parsed once. Every action receives this one
object."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from proxy.budget.plans import CallPlan
from proxy.hubspot.protocol import parse_json
from proxy.rules.loader import (
    Classification,
    CounterRule,
    IndexLookup,
    ObjectCacheRule,
    SearchIndexRule,
)


@dataclass
class ClientRequest:
    web: web.Request
    request_id: str
    method: str
    path_qs: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    token: str | None
    credential: str
    classification: Classification
    planned: Callable[[], CallPlan] = field(repr=False)
    route: str = "forward"
    outcome: str = "forwarded"
    upstream_status: int | None = None
    cache: str | None = None
    extra_log: dict[str, object] = field(default_factory=dict)
    # What the rules found on the way in, for them to finish after the answer:
    lookup: tuple[SearchIndexRule, IndexLookup] | None = None
    cache_fill: tuple[ObjectCacheRule, str, str] | None = None  # rule, object id, generation
    first_sight: bool = False  # the lookup waited for HubSpot to accept the token
    counted: CounterRule | None = None  # counted already, in the same step that accepted it

    @cached_property
    def plan(self) -> CallPlan:
        """The budget plan, made on first use: answers made up (respond, cache hits) need none.
        Its deadline counts from the request's arrival all the same."""
        return self.planned()

    @property
    def has_token(self) -> bool:
        return self.token is not None

    @cached_property
    def json(self) -> Any:
        """The request body as JSON; None when it is not JSON. Parsed on first use, once."""
        return parse_json(self.body)

    def replace_json(self, value: Any, raw: bytes) -> None:
        """A rule rewrote the body (an absorbed count): what is sent and what is parsed agree."""
        self.body = raw
        self.__dict__["json"] = value

    @property
    def waited_s(self) -> float:
        """Time spent waiting for budget, as the admitted caller accounted it on the plan (none
        when the call needed no plan: reading it does not make one)."""
        plan: CallPlan | None = self.__dict__.get("plan")
        return 0.0 if plan is None else plan.trace.waited_s

    @property
    def query(self) -> str:
        return self.path_qs.partition("?")[2]

    def index_rules(self, *roles: str) -> list[SearchIndexRule]:
        found = [m for m in self.classification.matches if m.role in roles]
        return [m.rule for m in found if isinstance(m.rule, SearchIndexRule)]
