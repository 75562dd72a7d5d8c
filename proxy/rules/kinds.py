"""One reader per rule type: respond, search_index, counter, object_cache, write_behind (pure).

Each reader reports every problem it finds and returns None when any field was wrong; the
document is then rejected as a whole, so a half-read rule never reaches the gateway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Literal

from proxy.rules import endpoints as endpoints
from proxy.rules.model import (
    DAY_MS,
    AssociationSource,
    CapacityGuard,
    CounterRule,
    ObjectCacheRule,
    PropertySource,
    RespondRule,
    Rule,
    SearchIndexRule,
    UntilEndOf,
    WriteBehindRule,
)
from proxy.rules.reader import Reader, Sink, kind, read_match, read_name, read_object_type
from proxy.rules.yamlpos import YList, YMap, plain

COMMON_KEYS = ("name", "type", "description", "enabled")
SHARED_BY = ("credential", "portal")
TYPE_KEYS: dict[str, tuple[str, ...]] = {
    "respond": ("match", "status", "body", "headers"),
    "search_index": (
        "object_type", "key", "when", "scope", "complete", "ttl", "timezone", "shared_by",
    ),
    "counter": ("object_type", "property", "capacity_property", "source", "booking_object_type",
                "active_property", "cancelled_value", "ttl", "patch", "shared_by",
                "capacity_guard"),
    "object_cache": ("object_type", "ttl"),
    "write_behind": ("match", "kind", "only_properties", "unique_property"),
}  # fmt: skip
WRITE_METHODS = {"create": "POST", "associate_default": "PUT", "update": "PATCH"}

Aliases = Mapping[str, str]


def read_rule(
    sink: Sink, node: YMap, path: str, aliases: Aliases, seen: dict[str, int]
) -> Rule | None:
    declared = node.items.get("type")
    rule_type = declared if isinstance(declared, str) and declared in TYPE_KEYS else None
    # With an unknown type, accept any rule key so only the type itself is reported.
    extra = (
        TYPE_KEYS[rule_type] if rule_type else sorted({k for ks in TYPE_KEYS.values() for k in ks})
    )
    r = Reader(sink, node, path, (*COMMON_KEYS, *extra))
    before = len(sink.problems)
    name = read_name(r, seen)
    r.choice("type", tuple(TYPE_KEYS))
    r.text("description")
    enabled = r.boolean("enabled", True)
    if rule_type is None:
        return None
    rule = _READERS[rule_type](r, aliases, name or "", enabled)
    return rule if name and len(sink.problems) == before else None


def _respond(r: Reader, aliases: Aliases, name: str, enabled: bool) -> Rule | None:
    match = read_match(r, aliases)
    status = r.integer("status", default=200, minimum=100)
    if status is not None and status > 599:
        r.problem("status", f"must be an HTTP status (100-599), got {status}")
    headers: dict[str, str] = {}
    for key, value, line, path in r.entries("headers") or ():
        if isinstance(value, bool) or not isinstance(value, str | int):
            r.sink.add(line, path, f"expected text, got {kind(value)}")
        else:
            headers[key] = str(value)
    if match is None or status is None:
        return None
    body = plain(r.raw("body")) if r.has("body") else None
    return RespondRule(name=name, enabled=enabled, matchers=((match, "respond"),),
                       status=status, body=body, headers=headers)  # fmt: skip


def _search_index(r: Reader, aliases: Aliases, name: str, enabled: bool) -> Rule | None:
    before = len(r.sink.problems)
    object_type = read_object_type(r, "object_type", aliases)
    key = r.strings("key", required=True)
    if key == ():
        r.problem("key", "list at least one property: the index is keyed by their values")
    when = _when(r, key or ())
    scope = r.text("scope")
    if scope is not None and key and scope not in key:
        r.problem("scope", f"{scope!r} must be one of the key properties ({', '.join(key)})")
    complete = r.boolean("complete", False)
    shared_by = r.choice("shared_by", SHARED_BY, default="credential") or "credential"
    timezone = r.timezone("timezone", "UTC") or "UTC"
    ttl = r.sub("ttl", ("positive", "negative"), required=True)
    positive = _positive_ttl(ttl, key or (), timezone) if ttl else None
    negative = ttl.duration("negative") if ttl else None
    if len(r.sink.problems) > before or not (object_type and key and positive):
        return None
    return SearchIndexRule(
        name=name, enabled=enabled, matchers=endpoints.search_index(object_type),
        object_type=object_type, key=key, when=when, scope=scope, complete=complete,
        positive_ttl=positive, negative_ttl_ms=negative, timezone=timezone, shared_by=shared_by,
    )  # fmt: skip


def _when(r: Reader, key: tuple[str, ...]) -> dict[str, str]:
    """Extra equality filters; values compared as the text HubSpot sends (`true`, `5`)."""
    when: dict[str, str] = {}
    for prop, value, line, path in r.entries("when") or ():
        if prop in key:
            r.sink.add(line, path, f"{prop!r} is already a key property")
        elif isinstance(value, bool):
            when[prop] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            when[prop] = str(value)
        else:
            r.sink.add(line, path, f"expected a value to compare with, got {kind(value)}")
    return when


def _positive_ttl(ttl: Reader, key: tuple[str, ...], timezone: str) -> int | UntilEndOf | None:
    value = ttl.raw("positive", required=True)
    if not ttl.has("positive"):
        return None
    if not isinstance(value, YMap):
        return ttl.duration_value(value, "positive")
    spec = ttl.sub("positive", ("until_end_of", "min"))
    if spec is None:
        return None
    prop = spec.text("until_end_of", required=True)
    if prop is not None and prop not in key:
        spec.problem("until_end_of", f"{prop!r} must be a key property (its value dates the entry)")
        prop = None
    min_ms = spec.duration("min", default=DAY_MS)  # the PRD's floor: at least a day
    return UntilEndOf(prop, min_ms, timezone) if prop and min_ms else None


def _counter(r: Reader, aliases: Aliases, name: str, enabled: bool) -> Rule | None:
    before = len(r.sink.problems)
    object_type = read_object_type(r, "object_type", aliases)
    prop = r.text("property", required=True)
    capacity = r.text("capacity_property")
    source = _source(r, aliases, object_type)
    counted = _counted_type(r, aliases, object_type, source)
    active = r.text("active_property")
    cancelled = _cancelled_values(r, active)
    ttl = r.duration("ttl", default=90 * DAY_MS)  # the PRD's self-healing expiry
    patch = r.choice("patch", ("absorb", "forward"), default="absorb")
    shared_by = r.choice("shared_by", SHARED_BY, default="credential") or "credential"
    guard = _capacity_guard(r, capacity)
    if len(r.sink.problems) > before or not (object_type and prop and source and counted and ttl):
        return None
    matchers = endpoints.counter(
        object_type, counted, source, absorb=patch == "absorb", guarded=guard is not None
    )
    return CounterRule(
        name=name, enabled=enabled, matchers=matchers, object_type=object_type, property=prop,
        capacity_property=capacity, source=source, booking_object_type=counted,
        active_property=active, cancelled_values=cancelled, ttl_ms=ttl,
        patch="forward" if patch == "forward" else "absorb", shared_by=shared_by, guard=guard,
    )  # fmt: skip


def _capacity_guard(r: Reader, capacity: str | None) -> CapacityGuard | None:
    guard = r.sub("capacity_guard", ("property", "full_error"))
    if guard is None:
        return None
    if capacity is None:
        r.problem("capacity_guard", "needs capacity_property (the seats the guard counts against)")
    prop = guard.text("property", required=True)
    default = CapacityGuard("")
    error = guard.sub("full_error", ("status", "category", "message"))
    status = error.integer("status", default=default.status, minimum=400) if error else None
    if status is not None and status > 599:
        guard.problem("full_error", f"status must be a 4xx or 5xx, got {status}")
    category = error.text("category", default=default.category) if error else None
    message = error.text("message", default=default.message) if error else None
    if prop is None:
        return None
    return CapacityGuard(
        prop, status or default.status, category or default.category, message or default.message
    )


def _source(
    r: Reader, aliases: Aliases, counter_type: str | None
) -> AssociationSource | PropertySource | None:
    src = r.sub("source", ("association", "property"), required=True)
    if src is None:
        return None
    given = [k for k in ("association", "property") if src.has(k)]
    if len(given) != 1:
        r.problem("source", f"needs exactly one of association, property (got {len(given)})")
    found: list[AssociationSource | PropertySource] = []
    if (assoc := src.sub("association", ("from_type", "to_type"))) is not None:
        ends = [read_object_type(assoc, k, aliases) for k in ("from_type", "to_type")]
        if ends[0] and ends[1] and counter_type and counter_type not in ends:
            src.problem("association", f"one end must be the counted object type {counter_type}")
        elif ends[0] and ends[1]:
            found.append(AssociationSource(ends[0], ends[1]))
    if (by_prop := src.sub("property", ("object_type", "property"))) is not None:
        owner = read_object_type(by_prop, "object_type", aliases)
        prop = by_prop.text("property", required=True)
        if owner and prop:
            found.append(PropertySource(owner, prop))
    return found[0] if len(found) == 1 and len(given) == 1 else None


def _counted_type(
    r: Reader, aliases: Aliases, counter_type: str | None, source: object
) -> str | None:
    """The records being counted: the other end of the association, or the property's owner."""
    derived: str | None = None
    if isinstance(source, AssociationSource):
        derived = source.from_type if source.to_type == counter_type else source.to_type
    elif isinstance(source, PropertySource):
        derived = source.object_type
    explicit = read_object_type(r, "booking_object_type", aliases, required=False)
    if explicit and derived and explicit != derived:
        r.problem("booking_object_type", f"{explicit} disagrees with the source ({derived})")
    return explicit or derived


def _cancelled_values(r: Reader, active: str | None) -> tuple[str, ...]:
    value = r.raw("cancelled_value")
    if not r.has("cancelled_value"):
        return ("Cancelled",) if active else ()
    if active is None:
        r.problem("cancelled_value", "needs active_property (the property that holds it)")
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, YList):
        return r.strings("cancelled_value") or ()
    r.problem("cancelled_value", f"expected text or a list of text, got {kind(value)}")
    return ()


def _object_cache(r: Reader, aliases: Aliases, name: str, enabled: bool) -> Rule | None:
    object_type = read_object_type(r, "object_type", aliases)
    ttl = r.duration("ttl", required=True)
    if object_type is None or ttl is None:
        return None
    matchers = endpoints.object_cache(object_type)
    return ObjectCacheRule(name=name, enabled=enabled, matchers=matchers,
                           object_type=object_type, ttl_ms=ttl)  # fmt: skip


def _write_behind(r: Reader, aliases: Aliases, name: str, enabled: bool) -> Rule | None:
    match = read_match(r, aliases)
    kind_ = r.choice("kind", tuple(WRITE_METHODS))
    only = r.strings("only_properties")
    if only == ():
        r.problem("only_properties", "list at least one property, or leave it out")
    unique = r.text("unique_property")
    if unique is not None and kind_ != "create":
        r.problem("unique_property", "only a create write-behind looks records up")
    if match is None or kind_ is None:
        return None
    method = WRITE_METHODS[kind_]
    if match.methods is None:
        match = replace(match, methods=frozenset({method}))  # the kind implies the method
    elif match.methods != {method}:
        r.problem("match", f"a {kind_} write-behind takes {method} calls only")
        return None
    return WriteBehindRule(name=name, enabled=enabled, matchers=((match, "write"),),
                           kind=_KINDS[kind_], only_properties=only or None,
                           unique_property=unique)  # fmt: skip


_KINDS: dict[str, Literal["create", "associate_default", "update"]] = {
    "create": "create",
    "associate_default": "associate_default",
    "update": "update",
}
_READERS: dict[str, Callable[[Reader, Aliases, str, bool], Rule | None]] = {
    "respond": _respond,
    "search_index": _search_index,
    "counter": _counter,
    "object_cache": _object_cache,
    "write_behind": _write_behind,
}
