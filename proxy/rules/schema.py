"""The rules file's schema: positioned YAML in, `Rules` (or every problem, at its line) out (pure).

`rules/default.yaml` is the commented reference for every key read here; keep the two in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from proxy.rules.kinds import read_rule
from proxy.rules.model import (
    BUCKETS,
    DAY_MS,
    DEFAULT_PACE_SHARE,
    DEFAULT_SAFETY_MARGIN,
    MAX_BATCH_INPUTS,
    OPTIONAL_BUCKETS,
    PACES,
    PRIORITIES,
    TIERS,
    BucketLimit,
    CoalesceConfig,
    Defaults,
    LimitsConfig,
    Route,
    Rule,
    Rules,
)
from proxy.rules.paths import canonical_type, is_object_type_id
from proxy.rules.reader import Reader, Sink, kind, read_match, read_name, suggest
from proxy.rules.yamlpos import BROKEN, YMap

TOP_KEYS = ("version", "object_types", "limits", "defaults", "routes", "rules")
LIMIT_KEYS = ("tier", "safety_margin", "pace_share", "general", "search", "daily",
              "associations", "admissions", "expected_replicas")  # fmt: skip
ROUTE_KEYS = (
    "name", "description", "match", "priority", "max_wait", "buckets", "coalesce", "starts_flow",
)  # fmt: skip
COALESCE_KEYS = ("enabled", "max_batch", "max_hold", "pace")
# A hold longer than this is a wait the caller did not ask for, not a gathering window.
MAX_HOLD_MS = 1_000

# HubSpot's published limits per tier (HUBSPOT.md): burst per 10 s, per day, associations per 10 s.
TIER_GENERAL = {"starter": 100, "professional": 190, "enterprise": 190, "addon": 250}
TIER_DAILY = {"starter": 250_000, "professional": 625_000, "enterprise": 1_000_000,
              "addon": 2_000_000}  # fmt: skip
TIER_ASSOCIATIONS = {"starter": 100, "professional": 150, "enterprise": 150, "addon": 200}
SEARCH_DEFAULT = BucketLimit(5, 1_000)  # all tiers; some pages say 4, the margin covers it
TEN_SECONDS = 10_000


def build(tree: Any, sink: Sink) -> Rules | None:
    if not isinstance(tree, YMap):
        expected = ", ".join(TOP_KEYS)
        sink.add(1, "", f"the rules file must be a mapping of {expected}, got {kind(tree)}")
        return None
    top = Reader(sink, tree, "", TOP_KEYS)
    version = _version(top)
    aliases = _object_types(top)
    limits = _limits(top.sub("limits", LIMIT_KEYS) or Reader(sink, YMap(1), "limits", ()))
    defaults = _defaults(top.sub("defaults", ("priority", "max_wait")))
    routes = _routes(top, aliases, limits, defaults)
    rules = _rules(top, aliases)
    if sink.problems or version is None:
        return None
    return Rules(version, limits, defaults, routes, rules, aliases, sink.file)


def _version(top: Reader) -> int | None:
    version = top.raw("version", required=True)
    if isinstance(version, int) and not isinstance(version, bool) and version == 1:
        return version
    if top.has("version"):
        top.problem("version", f"unsupported version {kind(version)} (this gateway reads 1)")
    return None


def _object_types(top: Reader) -> dict[str, str]:
    """Custom object names the backend puts in URLs (`bookings`), so templates may use them too."""
    aliases: dict[str, str] = {}
    for name, value, line, path in top.entries("object_types") or ():
        if canonical_type(name, {}) != name:
            top.sink.add(
                line, path, f"{name!r} is HubSpot's own name for {canonical_type(name, {})}"
            )
        elif not isinstance(value, str) or not is_object_type_id(value):
            top.sink.add(line, path, f"expected an object type id like 2-12345, got {kind(value)}")
        else:
            aliases[name.lower()] = value
    return aliases


def _limits(r: Reader) -> LimitsConfig:
    tier = r.choice("tier", TIERS, default="starter") or "starter"
    margin = _fraction(r, "safety_margin", DEFAULT_SAFETY_MARGIN)
    pace_share = _fraction(r, "pace_share", DEFAULT_PACE_SHARE)
    daily = r.sub("daily", ("limit", "timezone"))
    daily_limit = daily.integer("limit", default=TIER_DAILY[tier]) if daily else None
    tz = (daily.timezone("timezone", "UTC") if daily else "UTC") or "UTC"
    associations = None
    if r.has("associations"):
        associations = _bucket(r, "associations", BucketLimit(TIER_ASSOCIATIONS[tier], TEN_SECONDS))
    admissions, max_delay_ms = _admissions(r)
    return LimitsConfig(
        tier=tier,
        safety_margin=margin,
        pace_share=pace_share,
        general=_bucket(r, "general", BucketLimit(TIER_GENERAL[tier], TEN_SECONDS)),
        search=_bucket(r, "search", SEARCH_DEFAULT),
        daily=BucketLimit(daily_limit or TIER_DAILY[tier], DAY_MS),
        daily_timezone=tz,
        associations=associations,
        expected_replicas=r.integer("expected_replicas", default=1) or 1,
        admissions=admissions,
        admissions_max_delay_ms=max_delay_ms,
    )


def _admissions(r: Reader) -> tuple[BucketLimit | None, int | None]:
    """The gateway's own limit on new flows (no tier value, so `limit` is required) and how far
    behind the process may be and still start one (`max_delay`)."""
    sub = r.sub("admissions", ("limit", "window", "max_delay"))
    if sub is None:
        return None, None
    if not sub.has("limit"):
        sub.problem("limit", "required: new flows per window the budget can finish")
        return None, None
    limit = sub.integer("limit")
    window = sub.duration("window", default=TEN_SECONDS) or TEN_SECONDS
    delay_ms = sub.duration("max_delay")
    return (BucketLimit(limit, window) if limit else None), delay_ms


def _fraction(r: Reader, key: str, default: float) -> float:
    """A share in (0, 1]: `safety_margin` (headroom for clocks, retries and other integrations
    on the same portal) or `pace_share` (the part of a window coalesced departures are paced at)."""
    value = r.raw(key)
    if not r.has(key):
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        r.problem(key, f"must be a number in (0, 1], got {kind(value)}")
        return default
    return float(value)


def _bucket(r: Reader, key: str, default: BucketLimit) -> BucketLimit:
    """An explicit override; either half may be left to the tier's value."""
    sub = r.sub(key, ("limit", "window"))
    if sub is None:
        return default
    limit = sub.integer("limit", default=default.limit) or default.limit
    return BucketLimit(
        limit, sub.duration("window", default=default.window_ms) or default.window_ms
    )


def _defaults(r: Reader | None) -> Defaults:
    if r is None:
        return Defaults()
    base = Defaults()
    priority = r.choice("priority", PRIORITIES, default=base.priority)
    max_wait = r.duration("max_wait", default=base.max_wait_ms)
    return Defaults(
        priority=next((p for p in PRIORITIES if p == priority), base.priority),
        max_wait_ms=max_wait or base.max_wait_ms,
    )


def _routes(
    top: Reader, aliases: Mapping[str, str], limits: LimitsConfig, defaults: Defaults
) -> tuple[Route, ...]:
    routes: list[Route] = []
    seen: dict[str, int] = {}
    for value, line, path in top.items("routes") or ():
        if value is BROKEN:
            continue
        if not isinstance(value, YMap):
            top.sink.add(line, path, f"expected a route mapping, got {kind(value)}")
            continue
        r = Reader(top.sink, value, path, ROUTE_KEYS)
        r.text("description")
        name = read_name(r, seen)
        match = read_match(r, aliases)
        priority = r.choice("priority", PRIORITIES, default=defaults.priority)
        max_wait = r.duration("max_wait", default=defaults.max_wait_ms)
        buckets = _route_buckets(r, limits)
        coalesce_ok, coalesce = _coalesce(r)
        starts_flow = r.boolean("starts_flow", default=False)
        if starts_flow and limits.admissions_max_delay_ms is None:
            r.problem(
                "starts_flow", "needs limits.admissions.max_delay (how far behind is too far)"
            )
        prio = next((p for p in PRIORITIES if p == priority), None)
        if name and match and prio and max_wait and buckets != () and coalesce_ok:
            routes.append(Route(name, match, prio, max_wait, buckets, coalesce, starts_flow))
    return tuple(routes)


def _coalesce(r: Reader) -> tuple[bool, CoalesceConfig | None]:
    """(valid, the route's `coalesce:` block or None when absent)."""
    c = r.sub("coalesce", COALESCE_KEYS)
    if c is None:
        return not r.has("coalesce"), None
    base = CoalesceConfig()
    before = len(r.sink.problems)
    enabled = c.boolean("enabled", base.enabled)
    max_batch = c.integer("max_batch", default=base.max_batch, minimum=2)
    if max_batch is not None and max_batch > MAX_BATCH_INPUTS:
        c.problem("max_batch", f"HubSpot takes at most {MAX_BATCH_INPUTS} inputs per batch "
                  f"(got {max_batch})")  # fmt: skip
    max_hold = c.duration("max_hold", default=base.max_hold_ms)
    if max_hold is not None and max_hold > MAX_HOLD_MS:
        c.problem("max_hold", f"must be at most {MAX_HOLD_MS}ms (got {max_hold}ms)")
    pace = c.choice("pace", PACES, default=base.pace)
    if pace == "borrow" and max_hold == 0:
        c.problem("pace", "borrow needs a max_hold: its calls gather only for max_hold")
    if len(r.sink.problems) > before or max_batch is None or max_hold is None:
        return False, None
    return True, CoalesceConfig(
        max_batch=max_batch,
        max_hold_ms=max_hold,
        pace="borrow" if pace == "borrow" else "wait",
        enabled=enabled,
    )


def _route_buckets(r: Reader, limits: LimitsConfig) -> tuple[str, ...] | None:
    """None: HubSpot's defaults; () marks an invalid override (never a valid value)."""
    names = r.strings("buckets")
    if names is None:
        return () if r.has("buckets") else None
    if not names:
        r.problem("buckets", "list at least one bucket (a call must draw from some budget)")
        return ()
    bad = [n for n in names if n not in limits.buckets]
    for n in bad:
        hint = f" (configure limits.{n} first)" if n in OPTIONAL_BUCKETS else suggest(n, BUCKETS)
        r.problem("buckets", f"unknown bucket {n!r}{hint}")
    return () if bad else names


def _rules(top: Reader, aliases: Mapping[str, str]) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for value, line, path in top.items("rules") or ():
        if value is BROKEN:
            continue
        if not isinstance(value, YMap):
            top.sink.add(line, path, f"expected a rule mapping, got {kind(value)}")
            continue
        rule = read_rule(top.sink, value, path, aliases, seen)
        if rule is not None:
            rules.append(rule)
    return tuple(rules)
