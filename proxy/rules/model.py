"""The rules model: frozen dataclasses built by `rules.schema`, matched by `Rules.classify` (pure).

Durations are integer milliseconds (`*_ms`) throughout: Redis `PX` and the limiter's windows use
them, and integers compare exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final, Literal, TypeAlias

from proxy.hubspot.protocol import dumps, is_association_batch, is_search
from proxy.rules.paths import (
    Match,
    canonical_segments,
    primary_object_type,
)
from proxy.rules.yamlpos import Problem

PriorityName: TypeAlias = Literal["interactive", "default", "background"]
PRIORITIES: tuple[PriorityName, ...] = ("interactive", "default", "background")
DEFAULT_SAFETY_MARGIN: Final = 0.9
DEFAULT_PACE_SHARE: Final = 0.8
PaceName: TypeAlias = Literal["wait", "borrow"]
PACES: tuple[PaceName, ...] = ("wait", "borrow")
BUCKETS = ("general", "search", "daily", "associations", "admissions")
# Buckets that exist only when the rules configure them.
# The gateway's own limit on flows started per window, not HubSpot's (see rules/default.yaml).
ADMISSIONS = "admissions"
OPTIONAL_BUCKETS = ("associations", ADMISSIONS)
TIERS = ("starter", "professional", "enterprise", "addon")
DAY_MS = 86_400_000

# Roles that answer the call (respond, write it behind, or serve it from Redis) versus roles that
# only watch it so an index, counter or cache stays true (`Classification.matches` lists both).
Role: TypeAlias = Literal[
    "respond", "write", "lookup", "read",
    "overlay", "absorb", "create", "update", "delete", "associate", "dissociate",
]  # fmt: skip
ANSWERING_ROLES: frozenset[str] = frozenset({"respond", "write", "lookup", "read"})


CLASSIFIED_MAX = 4096  # distinct (method, path) answers kept per rules version


class RulesError(Exception):
    """The rules file is unusable; `problems` lists everything wrong with it, in line order."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class BucketLimit:
    limit: int
    window_ms: int


@dataclass(frozen=True)
class LimitsConfig:
    """HubSpot's budget for this portal: tier values with any explicit overrides applied."""

    tier: str
    safety_margin: float
    general: BucketLimit
    search: BucketLimit
    daily: BucketLimit  # window is informational: the daily budget resets at midnight, not rolling
    daily_timezone: str
    associations: BucketLimit | None
    expected_replicas: int
    # The share of a window's (margined) limit that coalesced departures are paced at; the rest
    # stays free for calls that do not coalesce (`proxy.upstream.coalesce.pacing`).
    pace_share: float = DEFAULT_PACE_SHARE
    # The gateway's own budget, not HubSpot's: how many new flows (bookings) may start per window,
    # so that those admitted can finish; a route drawing from it is a flow's first call.
    admissions: BucketLimit | None = None
    # A new flow is refused at once while the gateway is this far behind: the flows it has
    # started need the CPU (`proxy.budget.overload`).
    admissions_max_delay_ms: int | None = None

    @property
    def buckets(self) -> tuple[str, ...]:
        return tuple(
            b for b in BUCKETS if b not in OPTIONAL_BUCKETS or getattr(self, b) is not None
        )

    def raw(self, bucket: str) -> BucketLimit:
        spec = getattr(self, bucket, None) if bucket in BUCKETS else None
        if not isinstance(spec, BucketLimit):
            raise KeyError(f"no {bucket!r} bucket is configured")
        return spec

    def effective(self, bucket: str) -> tuple[int, int]:
        """(limit, window_ms) the gateway may use: HubSpot's limit times the safety margin."""
        spec = self.raw(bucket)
        if bucket == "admissions":
            return spec.limit, spec.window_ms  # not HubSpot's: no headroom to keep
        # The epsilon keeps 100 * 0.9 at 90 despite binary floating point.
        return max(1, int(spec.limit * self.safety_margin + 1e-9)), spec.window_ms


@dataclass(frozen=True)
class Defaults:
    priority: PriorityName = "default"
    max_wait_ms: int = 20_000


# HubSpot's ceiling on inputs per object batch call.
MAX_BATCH_INPUTS = 100


@dataclass(frozen=True)
class CoalesceConfig:
    """How a route's calls gather into batch calls when they must wait for budget."""

    max_batch: int = MAX_BATCH_INPUTS
    # Extra gathering before a group asks for its paced slot; 0: it gathers only while it waits.
    max_hold_ms: int = 0
    # wait: departures wait for the pace (`proxy.upstream.coalesce.pacing`); borrow: a group
    # leaves after its max_hold and its slot of the pace is paid by later waiting calls.
    pace: PaceName = "wait"
    enabled: bool = True


@dataclass(frozen=True)
class Route:
    name: str
    match: Match
    priority: PriorityName
    max_wait_ms: int
    buckets: tuple[str, ...] | None  # None: HubSpot's own rules decide (see `default_buckets`)
    coalesce: CoalesceConfig | None = None  # None: every call goes out on its own
    # A call that begins a flow (before its admission): refused at once while the process is
    # behind (`limits.admissions.max_delay`), so its CPU goes to the flows already started.
    starts_flow: bool = False


@dataclass(frozen=True, kw_only=True)
class _RuleBase:
    name: str
    enabled: bool = True
    # The calls this rule concerns, each with its role; derived, so not part of equality.
    matchers: tuple[tuple[Match, Role], ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class RespondRule(_RuleBase):
    status: int = 200
    body: Any = None  # plain JSON-compatible value; None sends no body
    headers: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def encoded_body(self) -> bytes | None:
        """The body as sent, encoded once for every answer."""
        return None if self.body is None else dumps(self.body)


@dataclass(frozen=True)
class UntilEndOf:
    """Keep an entry until the end of the date in `property` (in `timezone`), at least `min_ms`."""

    property: str
    min_ms: int
    timezone: str


@dataclass(frozen=True, kw_only=True)
class SearchIndexRule(_RuleBase):
    object_type: str
    key: tuple[str, ...]
    when: Mapping[str, str] = field(default_factory=dict)  # values as HubSpot sends them: text
    scope: str | None = None
    complete: bool = False
    positive_ttl: int | UntilEndOf  # ms, or until the end of a date
    negative_ttl_ms: int | None = None  # None: a miss is never cached
    timezone: str = "UTC"
    # "credential": each token has its own index; "portal": the tokens of one HubSpot portal
    # (hub id) share it.
    shared_by: str = "credential"


@dataclass(frozen=True)
class AssociationSource:
    from_type: str
    to_type: str


@dataclass(frozen=True)
class PropertySource:
    object_type: str
    property: str


@dataclass(frozen=True)
class CapacityGuard:
    """A created record naming its counter object in `property` takes a seat at the create,
    or gets this HubSpot-shaped error when none is left."""

    property: str
    status: int = 400
    category: str = "VALIDATION_ERROR"
    message: str = "This mock exam session is now full"


@dataclass(frozen=True, kw_only=True)
class CounterRule(_RuleBase):
    object_type: str
    property: str
    capacity_property: str | None = None
    source: AssociationSource | PropertySource
    booking_object_type: str  # the object whose records are counted (the other end of `source`)
    active_property: str | None = None
    cancelled_values: tuple[str, ...] = ()
    ttl_ms: int
    patch: Literal["absorb", "forward"] = "absorb"
    shared_by: str = "credential"  # as for SearchIndexRule: "portal" shares the counts
    guard: CapacityGuard | None = None


@dataclass(frozen=True, kw_only=True)
class ObjectCacheRule(_RuleBase):
    object_type: str
    ttl_ms: int


@dataclass(frozen=True, kw_only=True)
class WriteBehindRule(_RuleBase):
    kind: Literal["create", "associate_default", "update"]
    only_properties: tuple[str, ...] | None = None  # None: any body qualifies
    # create only: a property whose value no two records share, so a create of unknown fate is
    # looked up by it (rather than by the time it was sent and all its properties).
    unique_property: str | None = None


Rule: TypeAlias = RespondRule | SearchIndexRule | CounterRule | ObjectCacheRule | WriteBehindRule


@dataclass(frozen=True)
class RuleMatch:
    rule: Rule
    role: Role
    params: Mapping[str, str]


@dataclass(frozen=True)
class Classification:
    route: Route | None
    priority: PriorityName
    max_wait_ms: int
    buckets: tuple[str, ...]
    action: RuleMatch | None  # the first rule (file order) that answers the call
    matches: tuple[RuleMatch, ...]  # every enabled rule concerned, file order, action included
    object_type: str | None = None  # canonical id of the CRM object type the path is about

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000

    def by_role(self, *roles: Role) -> tuple[RuleMatch, ...]:
        # Kept per roles asked: a classification is made once per path and asked on every call.
        kept: dict[tuple[Role, ...], tuple[RuleMatch, ...]] = self.__dict__.setdefault(
            "_by_role", {}
        )
        found = kept.get(roles)
        if found is None:
            found = kept[roles] = tuple(m for m in self.matches if m.role in roles)
        return found


@dataclass(frozen=True)
class Rules:
    version: int
    limits: LimitsConfig
    defaults: Defaults
    routes: tuple[Route, ...]
    rules: tuple[Rule, ...]
    object_types: Mapping[str, str] = field(default_factory=dict)  # lower-case name -> id
    source: str = "<rules>"
    # classify is pure in (method, path) and these rules are immutable (a reload makes new
    # ones), so each answer is kept: a busy route is classified once, not on every call.
    _classified: dict[tuple[str, str], Classification] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def default_buckets(self, method: str, path: str) -> tuple[str, ...]:
        """HubSpot's own accounting: which budgets a call draws from."""
        if is_search(method, path):
            return ("search", "daily")  # search has its own per-second limit, exempt from 10 s
        if is_association_batch(path):
            exempt = ("associations", "daily") if self.limits.associations else ("daily",)
            return exempt  # exempt from the 10 s bucket per HubSpot's spec annotations
        return ("general", "daily")

    def classify(self, method: str, path: str) -> Classification:
        """Route, buckets and the rules concerned; the query string is ignored."""
        key = (method.upper(), path.split("?", 1)[0])
        found = self._classified.get(key)
        if found is None:
            if len(self._classified) >= CLASSIFIED_MAX:
                self._classified.clear()  # bounded: ids in paths make the set of paths open
            found = self._classified[key] = self._classify(*key)
        return found

    def _classify(self, method: str, path: str) -> Classification:
        segs = canonical_segments(path, self.object_types)
        route = next((r for r in self.routes if r.match.params(method, segs) is not None), None)
        matches = tuple(self._rule_matches(method, segs))
        action = next((m for m in matches if m.role in ANSWERING_ROLES), None)
        buckets = route.buckets if route and route.buckets else None
        return Classification(
            route=route,
            priority=route.priority if route else self.defaults.priority,
            max_wait_ms=route.max_wait_ms if route else self.defaults.max_wait_ms,
            buckets=buckets or self.default_buckets(method, path),
            action=action,
            matches=matches,
            object_type=primary_object_type(segs),
        )

    def _rule_matches(self, method: str, segs: tuple[str, ...]) -> list[RuleMatch]:
        found: list[RuleMatch] = []
        for rule in self.rules:
            if not rule.enabled:
                continue
            for match, role in rule.matchers:  # one role per rule: its first matching endpoint
                params = match.params(method, segs)
                if params is not None:
                    found.append(RuleMatch(rule, role, params))
                    break
        return found

    def rule(self, name: str) -> Rule:
        for rule in self.rules:
            if rule.name == name:
                return rule
        raise KeyError(name)
