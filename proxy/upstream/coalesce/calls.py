"""Which single calls may ride in a batch call, and with whom (pure).

Compatible calls share a grouping key: the same credential (added by the gatherer), operation,
path family, object type(s) and query options. Anything whose single answer a batch call could
not reproduce exactly is not batchable and goes out on its own: `associations`, `idProperty`,
`propertiesWithHistory` or `archived=true` in a read, any query string on a write, a body that is
more than HubSpot's documented single-call body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import orjson

from proxy.hubspot.protocol import canonical_object_type

Operation = Literal["read", "create", "update", "associate"]

_VERSIONED = r"\d{4}-\d{2}"
_OBJECTS = re.compile(rf"^(?P<family>/crm/(?:v3/objects|objects/{_VERSIONED}))/(?P<type>[^/]+)$")
_RECORD = re.compile(
    rf"^(?P<family>/crm/(?:v3/objects|objects/{_VERSIONED}))/(?P<type>[^/]+)/(?P<id>[^/]+)$"
)
_DEFAULT_ASSOCIATION = re.compile(
    rf"^/crm/(?:v4/objects|objects/(?P<version>{_VERSIONED}))/(?P<from>[^/]+)/(?P<fid>[^/]+)"
    r"/associations/default/(?P<to>[^/]+)/(?P<tid>[^/]+)$"
)
# Path segments HubSpot routes elsewhere: `.../batch` and `.../search` are not record ids.
_NOT_IDS: Final = frozenset({"batch", "search", "merge", "gdpr-delete"})


@dataclass(frozen=True)
class BatchableCall:
    """One single call as an input of a batch call."""

    operation: Operation
    group: tuple[str, ...]  # what must be equal for calls to share a batch (credential aside)
    batch_path: str
    object_id: str = ""  # read, update: the record; associate: the `from` record
    to_id: str = ""  # associate: the `to` record
    properties: tuple[str, ...] | None = None  # read: what the caller asked for; None: defaults
    payload: Mapping[str, Any] = field(default_factory=dict)  # create, update: the input's fields


def batchable(method: str, path_qs: str, body: bytes) -> BatchableCall | None:
    """The call as a batch input, or None when it must go out on its own."""
    path, _, query = path_qs.partition("?")
    method = method.upper()
    if method == "GET":
        return _read(path, query)
    if query:
        return None
    if method == "POST":
        return _create(path, body)
    if method == "PATCH":
        return _update(path, body)
    if method == "PUT":
        return _associate(path, body)
    return None


def _read(path: str, query: str) -> BatchableCall | None:
    found = _RECORD.match(path)
    if found is None or found["id"] in _NOT_IDS:
        return None
    asked: list[str] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "properties":
            asked += [p for p in value.split(",") if p]
        elif not (name == "archived" and value.lower() == "false"):
            return None  # associations, idProperty, propertiesWithHistory, archived=true, ...
    defaults = not asked  # `?properties=` alone asks for the defaults, as no parameter does
    family, type_name = found["family"], found["type"]
    return BatchableCall(
        operation="read",
        group=("read", family, canonical_object_type(type_name), "defaults" * defaults),
        batch_path=f"{family}/{type_name}/batch/read",
        object_id=found["id"],
        properties=None if defaults else tuple(dict.fromkeys(asked)),
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _create(path: str, body: bytes) -> BatchableCall | None:
    found = _OBJECTS.match(path)
    data = _json_object(body)
    if found is None or data is None or not set(data) <= {"properties", "associations"}:
        return None
    if not isinstance(data.get("properties"), dict):
        return None
    if not isinstance(data.get("associations", []), list):
        return None
    family, type_name = found["family"], found["type"]
    return BatchableCall(
        operation="create",
        group=("create", family, canonical_object_type(type_name)),
        batch_path=f"{family}/{type_name}/batch/create",
        payload=data,
    )


def _update(path: str, body: bytes) -> BatchableCall | None:
    found = _RECORD.match(path)
    data = _json_object(body)
    if found is None or found["id"] in _NOT_IDS or data is None or set(data) != {"properties"}:
        return None
    if not isinstance(data["properties"], dict):
        return None
    family, type_name = found["family"], found["type"]
    return BatchableCall(
        operation="update",
        group=("update", family, canonical_object_type(type_name)),
        batch_path=f"{family}/{type_name}/batch/update",
        object_id=found["id"],
        payload=data,
    )


def _associate(path: str, body: bytes) -> BatchableCall | None:
    found = _DEFAULT_ASSOCIATION.match(path)
    if found is None or body.strip():
        return None
    family = f"/crm/associations/{found['version']}" if found["version"] else "/crm/v4/associations"
    from_type, to_type = found["from"], found["to"]
    return BatchableCall(
        operation="associate",
        group=(
            "associate",
            family,
            canonical_object_type(from_type),
            canonical_object_type(to_type),
        ),
        batch_path=f"{family}/{from_type}/{to_type}/batch/associate/default",
        object_id=found["fid"],
        to_id=found["tid"],
    )
