"""CRM search: request validation, every documented filter operator, sorting and paging."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from .store import SimObject, prop_value

MAX_GROUPS: Final = 5
MAX_FILTERS_PER_GROUP: Final = 6
MAX_FILTERS: Final = 18
MAX_LIMIT: Final = 200
MAX_RESULTS: Final = 10_000
DEFAULT_LIMIT: Final = 10

_TOKEN_SPLIT = re.compile(r"[^0-9a-z*]+")


class SearchError(ValueError):
    """The request is invalid: HubSpot answers 400 VALIDATION_ERROR."""


@dataclass
class SearchRequest:
    groups: list[list[dict[str, Any]]]
    sorts: list[tuple[str, bool]]  # (property, descending)
    properties: list[str] | None
    limit: int
    after: int
    query: str | None


def _number(text: str) -> float | None:
    """Numbers compare as numbers; dates (ISO or epoch ms) compare as epoch milliseconds."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # HubSpot dates without a zone are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


def _compare(left: str, right: str) -> int:
    a, b = _number(left), _number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    x, y = left.casefold(), right.casefold()
    return (x > y) - (x < y)


def _tokens(text: str) -> set[str]:
    return {t for t in _TOKEN_SPLIT.split(text.casefold()) if t}


def _contains_token(value: str, token: str) -> bool:
    token = token.casefold()
    if "*" in token:  # HubSpot allows wildcards, e.g. "*@example.com"
        return fnmatch.fnmatchcase(value.casefold(), token) or any(
            fnmatch.fnmatchcase(t, token) for t in _tokens(value)
        )
    return value.casefold() == token or token in _tokens(value)


def _has(value: str | None) -> bool:
    return value is not None and value != ""


def _values(flt: dict[str, Any]) -> list[str]:
    values = flt.get("values")
    if not isinstance(values, list) or not values:
        raise SearchError(f"operator {flt.get('operator')} needs a non-empty `values` list")
    return [prop_value(v) for v in values]


def _value(flt: dict[str, Any], key: str = "value") -> str:
    if flt.get(key) is None:
        raise SearchError(f"operator {flt.get('operator')} needs `{key}`")
    return prop_value(flt[key])


_Check = Callable[[str | None, dict[str, Any]], bool]


def _cmp_op(test: Callable[[int], bool]) -> _Check:
    return lambda v, f: _has(v) and test(_compare(v or "", _value(f)))


# Negative operators match records without the property (Elasticsearch `must_not` semantics).
_OPERATORS: Final[dict[str, _Check]] = {
    "EQ": lambda v, f: _has(v) and _compare(v or "", _value(f)) == 0,
    "NEQ": lambda v, f: not _has(v) or _compare(v or "", _value(f)) != 0,
    "LT": _cmp_op(lambda c: c < 0),
    "LTE": _cmp_op(lambda c: c <= 0),
    "GT": _cmp_op(lambda c: c > 0),
    "GTE": _cmp_op(lambda c: c >= 0),
    "BETWEEN": lambda v, f: (
        _has(v)
        and _compare(v or "", _value(f)) >= 0
        and _compare(v or "", _value(f, "highValue")) <= 0
    ),
    "IN": lambda v, f: _has(v) and any(_compare(v or "", x) == 0 for x in _values(f)),
    "NOT_IN": lambda v, f: not _has(v) or all(_compare(v or "", x) != 0 for x in _values(f)),
    "HAS_PROPERTY": lambda v, f: _has(v),
    "NOT_HAS_PROPERTY": lambda v, f: not _has(v),
    "CONTAINS_TOKEN": lambda v, f: _has(v) and _contains_token(v or "", _value(f)),
    "NOT_CONTAINS_TOKEN": lambda v, f: not _has(v) or not _contains_token(v or "", _value(f)),
}


def _check_arguments(flt: dict[str, Any]) -> None:
    """Reject a filter missing what its operator needs before any record is looked at."""
    operator = flt.get("operator", "EQ")
    if operator not in _OPERATORS:
        raise SearchError(f"Unknown operator {operator!r}")
    if operator in ("IN", "NOT_IN"):
        _values(flt)
    elif operator not in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
        _value(flt)
        if operator == "BETWEEN":
            _value(flt, "highValue")


def _parse_groups(body: dict[str, Any]) -> list[list[dict[str, Any]]]:
    raw = body.get("filterGroups") or []
    if not isinstance(raw, list):
        raise SearchError("filterGroups must be a list")
    if len(raw) > MAX_GROUPS:
        raise SearchError(f"Too many filter groups: {len(raw)} (max {MAX_GROUPS})")
    groups = [list((g or {}).get("filters") or []) for g in raw]
    for filters in groups:
        if len(filters) > MAX_FILTERS_PER_GROUP:
            raise SearchError(
                f"Too many filters in a group: {len(filters)} (max {MAX_FILTERS_PER_GROUP})"
            )
        for flt in filters:
            if not isinstance(flt, dict) or not flt.get("propertyName"):
                raise SearchError("every filter needs a propertyName")
            _check_arguments(flt)
    total = sum(len(f) for f in groups)
    if total > MAX_FILTERS:
        raise SearchError(f"Too many filters: {total} (max {MAX_FILTERS})")
    return groups


def _parse_sorts(body: dict[str, Any]) -> list[tuple[str, bool]]:
    sorts: list[tuple[str, bool]] = []
    for item in body.get("sorts") or []:
        if isinstance(item, str):
            sorts.append((item.lstrip("-"), item.startswith("-")))
        elif isinstance(item, dict) and item.get("propertyName"):
            sorts.append((str(item["propertyName"]), item.get("direction") == "DESCENDING"))
        else:
            raise SearchError(f"invalid sort {item!r}")
    return sorts


def _parse_paging(body: dict[str, Any]) -> tuple[int, int]:
    try:
        raw_limit = body.get("limit")
        limit = DEFAULT_LIMIT if raw_limit is None else int(raw_limit)
        after = int(body.get("after") or 0)
    except (TypeError, ValueError) as exc:
        raise SearchError("limit and after must be integers") from exc
    if limit < 0 or limit > MAX_LIMIT:
        raise SearchError(f"limit must be between 0 and {MAX_LIMIT}, got {limit}")
    if after < 0 or after >= MAX_RESULTS:
        raise SearchError(f"Paging beyond {MAX_RESULTS} results is not supported (after={after})")
    return limit, after


def parse_search(body: Any) -> SearchRequest:
    if not isinstance(body, dict):
        raise SearchError("the search body must be a JSON object")
    limit, after = _parse_paging(body)
    props = body.get("properties")
    query = body.get("query")
    return SearchRequest(
        groups=_parse_groups(body),
        sorts=_parse_sorts(body),
        properties=[str(p) for p in props] if props else None,
        limit=limit,
        after=after,
        query=str(query) if query else None,
    )


def _matches(props: dict[str, str | None], req: SearchRequest) -> bool:
    if req.query and not any(req.query.casefold() in (v or "").casefold() for v in props.values()):
        return False
    if not req.groups or all(not g for g in req.groups):
        return True
    return any(
        all(
            _OPERATORS[f.get("operator", "EQ")](props.get(str(f["propertyName"])), f) for f in group
        )
        for group in req.groups
        if group
    )


def _sort_key(prop: str) -> Callable[[SimObject], tuple[int, float, str]]:
    def key(obj: SimObject) -> tuple[int, float, str]:
        value = obj.all_properties().get(prop)
        if not _has(value):
            return (2, 0.0, "")  # unset values sort last
        number = _number(value or "")
        return (0, number, "") if number is not None else (1, 0.0, (value or "").casefold())

    return key


def _unset(prop: str) -> Callable[[SimObject], bool]:
    return lambda obj: not _has(obj.all_properties().get(prop))


def run_search(
    objs: list[SimObject], req: SearchRequest
) -> tuple[int, list[SimObject], str | None]:
    """(total, this page, next `after` or None); `objs` arrive in id order."""
    hits = [o for o in objs if _matches(o.all_properties(), req)]
    for prop, descending in reversed(req.sorts):  # stable sorts, last key first
        hits.sort(key=_sort_key(prop), reverse=descending)
        hits.sort(key=_unset(prop))  # unset values go last in either direction
    end = min(req.after + req.limit, len(hits), MAX_RESULTS)
    page = hits[req.after : end]
    next_after = str(end) if end < len(hits) and req.limit > 0 else None
    return len(hits), page, next_after
