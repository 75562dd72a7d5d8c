"""The search index's pure part: entry values, TTLs, records and HubSpot's search answer shape.

Entries follow the PRD (1B): `{id}:Active` while a record files under the key, `NO_DUPLICATE`
for a remembered miss; any other status (`{id}:Cancelled`, written by older tooling) is not
trusted and sends the search to HubSpot. A record keeps the properties learned about an object
so a hit can answer with every property the caller asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import orjson

from proxy.rules.loader import SearchIndexRule, UntilEndOf

NO_DUPLICATE: Final = "NO_DUPLICATE"
ACTIVE: Final = "Active"
# Properties HubSpot puts on every search result whatever was asked for.
DEFAULT_PROPERTIES: Final = ("hs_object_id", "createdate", "hs_lastmodifieddate")
EPOCH_MS_DIGITS: Final = 11  # a date property given as epoch ms has at least this many digits


def active_entry(object_id: str) -> str:
    return f"{object_id}:{ACTIVE}"


def active_id(entry: str | None) -> str | None:
    """The record an entry vouches for, or None (a miss, a negative, an untrusted status)."""
    if entry is None or entry == NO_DUPLICATE:
        return None
    object_id, sep, status = entry.rpartition(":")
    return object_id if sep and object_id and status == ACTIVE else None


def text(value: Any) -> str | None:
    """A property value as HubSpot's text (it stores every property as a string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _as_date(value: str, zone: ZoneInfo) -> date | None:
    """`2026-03-15`, an ISO datetime, or epoch ms at midnight UTC (HubSpot's date properties)."""
    if value.isdigit() and len(value) >= EPOCH_MS_DIGITS:
        return datetime.fromtimestamp(int(value) / 1000, UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(zone).date()


def end_of_date_ms(value: str, timezone: str) -> int | None:
    """Epoch ms when the date `value` is over in `timezone` (midnight after it)."""
    zone = ZoneInfo(timezone)
    day = _as_date(value, zone)
    if day is None:
        return None
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return int(end.timestamp() * 1000)


def positive_ttl_ms(rule: SearchIndexRule, key: Mapping[str, str], now_ms: int) -> int:
    """How long `{id}:Active` lasts: the rule's duration, or until the date is over (>= min)."""
    ttl = rule.positive_ttl
    if not isinstance(ttl, UntilEndOf):
        return ttl
    end = end_of_date_ms(key.get(ttl.property, ""), ttl.timezone)
    return ttl.min_ms if end is None else max(end - now_ms, ttl.min_ms)


def key_map(rule: SearchIndexRule, values: Iterable[str]) -> dict[str, str]:
    return dict(zip(rule.key, values, strict=True))


def scope_value(rule: SearchIndexRule, values: tuple[str, ...]) -> str | None:
    return values[rule.key.index(rule.scope)] if rule.scope else None


@dataclass
class Record:
    """What the gateway knows of one object: HubSpot's own fields and the properties seen."""

    id: str
    properties: dict[str, str | None]
    created_at: str | None = None
    updated_at: str | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Record | None:
        object_id = text(obj.get("id"))
        props = obj.get("properties")
        if not object_id or not isinstance(props, Mapping):
            return None
        known = {str(k): text(v) for k, v in props.items()}
        created, updated = obj.get("createdAt"), obj.get("updatedAt")
        return cls(
            object_id,
            known,
            created if isinstance(created, str) else None,
            updated if isinstance(updated, str) else None,
        )

    def merged(self, newer: Record) -> Record:
        """This record updated by a later sighting; what the later one did not show is kept."""
        return Record(
            self.id,
            {**self.properties, **newer.properties},
            newer.created_at or self.created_at,
            newer.updated_at or self.updated_at,
        )

    def dumps(self) -> bytes:
        return orjson.dumps(
            {"id": self.id, "p": self.properties, "c": self.created_at, "u": self.updated_at}
        )

    @classmethod
    def loads(cls, raw: bytes | str | None) -> Record | None:
        if raw is None:
            return None
        try:
            data = orjson.loads(raw)
            return cls(str(data["id"]), dict(data["p"]), data.get("c"), data.get("u"))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def as_result(self, asked: Iterable[str]) -> dict[str, Any]:
        """One search result as HubSpot renders it: asked properties (null if unknown), defaults."""
        props: dict[str, str | None] = {name: self.properties.get(name) for name in asked}
        for name in DEFAULT_PROPERTIES:
            props[name] = self.properties.get(name)
        props["hs_object_id"] = props["hs_object_id"] or self.id
        created = self.created_at or props.get("createdate")
        updated = self.updated_at or props.get("hs_lastmodifieddate")
        return {
            "id": self.id,
            "properties": props,
            "createdAt": created,
            "updatedAt": updated,
            "archived": False,
        }


def search_answer(records: Iterable[Record], asked: Iterable[str]) -> dict[str, Any]:
    asked = tuple(asked)
    results = [r.as_result(asked) for r in records]
    return {"total": len(results), "results": results}
