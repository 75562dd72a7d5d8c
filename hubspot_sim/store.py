"""In-memory CRM records for any object type, rendered the way HubSpot's v3 API shows them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from proxy.hubspot.protocol import canonical_object_type

# What GET returns when no `properties` are asked for (beyond the three defaults below).
TYPE_DEFAULT_PROPS: Final[dict[str, tuple[str, ...]]] = {
    "0-1": ("email", "firstname", "lastname", "lastmodifieddate"),
    "0-2": ("domain", "name"),
    "0-3": ("amount", "closedate", "dealname", "dealstage", "pipeline"),
}
# HubSpot assigns ids from large counters; starting high keeps them realistic in logs.
FIRST_ID: Final = 10_000_001


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def prop_value(value: Any) -> str:
    """HubSpot stores every property as a string; JSON scalars are coerced like it does."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


@dataclass
class SimObject:
    id: str
    type_id: str
    properties: dict[str, str]
    created_at: str
    updated_at: str
    visible_at: float  # monotonic time from which search can see it
    archived: bool = False
    archived_at: str | None = None

    def all_properties(self) -> dict[str, str | None]:
        merged: dict[str, str | None] = {"createdate": self.created_at, **self.properties}
        merged["hs_object_id"] = self.id
        merged["hs_lastmodifieddate"] = self.updated_at
        if self.type_id == "0-1":
            merged["lastmodifieddate"] = self.updated_at
        return merged

    def render(
        self, props: Iterable[str] | None = None, *, everything: bool = False
    ) -> dict[str, Any]:
        """The v3 object; `props` picks properties (requested but unset ones come back null)."""
        merged = self.all_properties()
        if everything:
            shown = merged
        else:
            wanted = list(props) if props is not None else TYPE_DEFAULT_PROPS.get(self.type_id, ())
            shown = {name: merged.get(name) for name in wanted}
            for name in ("hs_object_id", "createdate", "hs_lastmodifieddate"):
                shown[name] = merged[name]
        body: dict[str, Any] = {
            "id": self.id,
            "properties": shown,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": self.archived,
        }
        if self.archived_at is not None:
            body["archivedAt"] = self.archived_at
        return body


class ObjectStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._by_type: dict[str, dict[str, SimObject]] = {}
        self._type_of: dict[str, str] = {}
        self._next_id = FIRST_ID
        self.index_delay_s = 0.0

    def clear(self) -> None:
        self._by_type.clear()
        self._type_of.clear()
        self._next_id = FIRST_ID

    def _new_id(self, wanted: str | None) -> str:
        if wanted is None:
            wanted = str(self._next_id)
        if wanted.isdigit():
            self._next_id = max(self._next_id, int(wanted) + 1)
        return wanted

    def create(
        self, type_name: str, properties: dict[str, Any], obj_id: str | None = None
    ) -> SimObject:
        type_id = canonical_object_type(type_name)
        now = iso_now()
        obj = SimObject(
            id=self._new_id(obj_id),
            type_id=type_id,
            properties={k: prop_value(v) for k, v in properties.items()},
            created_at=now,
            updated_at=now,
            visible_at=self._clock() + self.index_delay_s,
        )
        self._by_type.setdefault(type_id, {})[obj.id] = obj
        self._type_of[obj.id] = type_id
        return obj

    def get(self, type_name: str, obj_id: str, *, archived: bool = False) -> SimObject | None:
        obj = self._by_type.get(canonical_object_type(type_name), {}).get(obj_id)
        if obj is None or obj.archived != archived:
            return None
        return obj

    def find(self, type_name: str, obj_id: str, id_property: str | None) -> SimObject | None:
        """By object id, or by the value of a unique property (HubSpot's `idProperty`)."""
        if not id_property or id_property == "hs_object_id":
            return self.get(type_name, obj_id)
        for obj in self.live(type_name):
            if obj.properties.get(id_property) == obj_id:
                return obj
        return None

    def update(self, obj: SimObject, properties: dict[str, Any]) -> SimObject:
        obj.properties.update({k: prop_value(v) for k, v in properties.items()})
        obj.updated_at = iso_now()
        return obj

    def archive(self, type_name: str, obj_id: str) -> bool:
        obj = self.get(type_name, obj_id)
        if obj is None:
            return False
        obj.archived = True
        obj.archived_at = obj.updated_at = iso_now()
        return True

    def live(self, type_name: str, *, archived: bool = False) -> list[SimObject]:
        objs = self._by_type.get(canonical_object_type(type_name), {}).values()
        chosen = [o for o in objs if o.archived == archived]
        chosen.sort(key=lambda o: (len(o.id), o.id))  # numeric order for numeric ids
        return chosen

    def searchable(self, type_name: str) -> list[SimObject]:
        now = self._clock()
        return [o for o in self.live(type_name) if o.visible_at <= now]

    def type_of(self, obj_id: str) -> str | None:
        """Ids are unique across types here, so an id alone names its record."""
        return self._type_of.get(obj_id)

    def count(self) -> int:
        return sum(len(v) for v in self._by_type.values())
