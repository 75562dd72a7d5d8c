"""The rules engine's pure part: load and validate the rules file, classify calls, read search keys.

What each rule type DOES at runtime lives with its action (cache, writes); this module only says
which rule a call concerns and what the rule's parameters are. `rules/default.yaml` documents the
file format. Implementation is split across `rules.yamlpos` (YAML with line numbers),
`rules.reader` and `rules.kinds`/`rules.schema` (validation), `rules.paths` (path families),
`rules.endpoints` (the calls each rule type watches) and `rules.model` (the dataclasses); import
from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.rules.model import (
    ANSWERING_ROLES,
    BUCKETS,
    PRIORITIES,
    AssociationSource,
    BucketLimit,
    CapacityGuard,
    Classification,
    CounterRule,
    Defaults,
    LimitsConfig,
    ObjectCacheRule,
    PriorityName,
    PropertySource,
    RespondRule,
    Role,
    Route,
    Rule,
    RuleMatch,
    Rules,
    RulesError,
    SearchIndexRule,
    UntilEndOf,
    WriteBehindRule,
)
from proxy.rules.reader import Sink, parse_duration
from proxy.rules.schema import build
from proxy.rules.yamlpos import Problem, load

__all__ = [
    "ANSWERING_ROLES", "BUCKETS", "PRIORITIES", "AssociationSource", "BucketLimit",
    "CapacityGuard",
    "Classification", "CounterRule", "Defaults", "IndexLookup", "LimitsConfig",
    "ObjectCacheRule", "PriorityName", "Problem", "PropertySource", "RespondRule", "Role", "Route",
    "Rule", "RuleMatch", "Rules", "RulesError", "SearchIndexRule", "UntilEndOf",
    "WriteBehindRule", "check_file", "format_problems", "index_key_for_object",
    "index_key_for_search", "load_rules", "parse_duration", "parse_rules", "select_search_index",
    "write_behind_accepts",
]  # fmt: skip

_FIRST_PAGE = (None, "", "0", 0)  # clients spell "no cursor" all these ways


def parse_rules(text: str, filename: str = "<rules>") -> Rules:
    """Validate a rules document; RulesError lists every problem, in line order."""
    tree, problems = load(text, filename)
    sink = Sink(filename)
    rules = build(tree, sink) if tree is not None else None
    problems = sorted([*problems, *sink.problems], key=lambda p: p.line)  # stable within a line
    if problems or rules is None:
        raise RulesError(problems or [Problem(filename, 1, "", "no rules could be read")])
    return rules


def load_rules(path: str | os.PathLike[str]) -> Rules:
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise RulesError([Problem(name, 1, "", f"cannot read: {exc.strerror or exc}")]) from exc
    except UnicodeDecodeError as exc:
        raise RulesError([Problem(name, 1, "", f"not UTF-8 text: {exc}")]) from exc
    return parse_rules(text, name)


def format_problems(err: RulesError) -> str:
    return "\n".join(str(p) for p in err.problems)


def check_file(path: str | os.PathLike[str]) -> int:
    """`hubspot-proxy check FILE`: 0 when valid, else 2 with the problems on stderr."""
    try:
        rules = load_rules(path)
    except RulesError as err:
        print(format_problems(err), file=sys.stderr)
        return 2
    print(f"{os.fspath(path)}: ok ({len(rules.routes)} routes, {len(rules.rules)} rules)")
    return 0


@dataclass(frozen=True)
class IndexLookup:
    """A search the index can answer: key values (in `rule.key` order) and what to return."""

    key: tuple[str, ...]
    properties: tuple[str, ...]
    limit: int | None


def _text(value: Any) -> str | None:
    """A filter or property value as HubSpot's text; None for what cannot be a key."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def index_key_for_search(rule: SearchIndexRule, body: Any) -> IndexLookup | None:
    """The index key when the search is exactly `key = .. AND when = ..`, else None (forward it).

    Anything else (another filter, a non-EQ operator, OR groups, a full-text query, a later page)
    could select records the index does not know, so only HubSpot may answer it.
    """
    if not isinstance(body, Mapping) or body.get("query") or body.get("after") not in _FIRST_PAGE:
        return None
    groups = body.get("filterGroups")
    if not isinstance(groups, list) or len(groups) != 1 or not isinstance(groups[0], Mapping):
        return None
    values = _equalities(groups[0].get("filters"))
    if values is None or set(values) != {*rule.key, *rule.when}:
        return None
    if any(values[prop] != want for prop, want in rule.when.items()):
        return None
    properties = body.get("properties") or []
    if not isinstance(properties, list) or not all(isinstance(p, str) for p in properties):
        return None
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        return None
    return IndexLookup(tuple(values[k] for k in rule.key), tuple(properties), limit)


def _equalities(filters: Any) -> dict[str, str] | None:
    if not isinstance(filters, list) or not filters:
        return None
    values: dict[str, str] = {}
    for f in filters:
        if not isinstance(f, Mapping) or f.get("operator") != "EQ":
            return None
        if f.get("values") is not None or f.get("highValue") is not None:
            return None
        name, value = f.get("propertyName"), _text(f.get("value"))
        if not isinstance(name, str) or name in values or not value:
            return None
        values[name] = value
    return values


def index_key_for_object(
    rule: SearchIndexRule, properties: Mapping[str, Any]
) -> tuple[str, ...] | None:
    """The key an object (e.g. a created booking) files under, or None if the index skips it."""
    if any(_text(properties.get(prop)) != want for prop, want in rule.when.items()):
        return None
    key: list[str] = []
    for prop in rule.key:
        value = _text(properties.get(prop))
        if not value:
            return None
        key.append(value)
    return tuple(key)


def select_search_index(
    classification: Classification, body: Any
) -> tuple[SearchIndexRule, IndexLookup] | None:
    """The first search_index rule (file order) that can answer this search body.

    Several indexes may cover one object type (duplicate check, idempotency key): which one applies
    depends on the filters, so the choice is made here rather than by `classify` alone.
    """
    for found in classification.by_role("lookup"):
        if isinstance(found.rule, SearchIndexRule):
            lookup = index_key_for_search(found.rule, body)
            if lookup is not None:
                return found.rule, lookup
    return None


def write_behind_accepts(rule: WriteBehindRule, body: Any) -> bool:
    """Whether `only_properties` lets this body be written behind (else forward it now)."""
    if rule.only_properties is None:
        return True
    props = body.get("properties") if isinstance(body, Mapping) else None
    return isinstance(props, Mapping) and bool(props) and set(props) <= set(rule.only_properties)
