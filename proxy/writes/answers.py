"""The answers the gateway gives for writes it accepted, shaped as HubSpot's own (invariant 6).

- A default association PUT gets HubSpot's 200 body at once: associating cannot fail for a reason
  the gateway could know in advance other than a missing record, and the SDKs expect the body.
- An update gets the object with its new values (over the caller's copy when one is given).
- A create (notes, or other types when configured) gets 202 PENDING: the record id does not exist
  yet; `GET /proxy/v1/writes/{id}` gives it once HubSpot has answered.
Every accepted answer carries `X-HubSpot-Proxy-Write-Id`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from proxy.hubspot.protocol import (
    DEFAULT_ASSOCIATION_TYPES,
    HUBSPOT_DEFINED,
    USER_DEFINED,
    canonical_object_type,
)
from proxy.writes.model import ASSOCIATE_DEFAULT, UPDATE, WriteRequest

WRITE_ID_HEADER: Final = "X-HubSpot-Proxy-Write-Id"
AssocSpec = tuple[str, int]  # (associationCategory, associationTypeId)


@dataclass(frozen=True)
class Accepted:
    """What the app answers for an accepted write: status, JSON body and headers."""

    write_id: str
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def type_pair(from_type: str, to_type: str) -> tuple[str, str]:
    return canonical_object_type(from_type), canonical_object_type(to_type)


def association_spec(
    pair: tuple[str, str], known: Mapping[tuple[str, str], AssocSpec], fallback_type_id: int
) -> dict[str, Any]:
    """HubSpot's spec for the default association of a (canonical) type pair."""
    if pair in known:
        category, type_id = known[pair]
    elif pair in DEFAULT_ASSOCIATION_TYPES:
        category, type_id = HUBSPOT_DEFINED, DEFAULT_ASSOCIATION_TYPES[pair]
    else:
        category, type_id = USER_DEFINED, fallback_type_id
    return {"associationCategory": category, "associationTypeId": type_id}


def association_answer(
    req: WriteRequest, known: Mapping[tuple[str, str], AssocSpec], fallback_type_id: int
) -> dict[str, Any]:
    """The body of `PUT .../associations/default/...`: both directions, as HubSpot reports it."""
    started = iso_now()
    forward = type_pair(req.object_type, req.to_type or "")
    ends = ((req.object_id, req.to_id, forward), (req.to_id, req.object_id, forward[::-1]))
    results = [
        {
            "from": {"id": str(a)},
            "to": {"id": str(b)},
            "associationSpec": association_spec(pair, known, fallback_type_id),
        }
        for a, b, pair in ends
    ]
    return {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": iso_now(),
    }


def property_text(value: Any) -> str | None:
    """HubSpot stores every property as text and answers it so."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def update_answer(req: WriteRequest) -> dict[str, Any]:
    """The object after the PATCH: the caller's copy (if any) with the new values over it."""
    now = iso_now()
    base = req.base or {}
    old_props = base.get("properties")
    props: dict[str, Any] = dict(old_props) if isinstance(old_props, Mapping) else {}
    props.update({k: property_text(v) for k, v in req.properties.items()})
    props["hs_object_id"] = str(req.object_id)
    props["hs_lastmodifieddate"] = now
    return {
        "id": str(req.object_id),
        "properties": props,
        # createdAt is required by the SDKs' models; without a base copy "now" is the best guess.
        "createdAt": base.get("createdAt") or now,
        "updatedAt": now,
        "archived": bool(base.get("archived", False)),
    }


def pending_answer(write_id: str, status_path: str) -> dict[str, Any]:
    return {
        "status": "PENDING",
        "id": None,
        "writeId": write_id,
        "links": {"status": status_path},
    }


def accepted(
    write_id: str,
    kind: str,
    req: WriteRequest,
    *,
    known_types: Mapping[tuple[str, str], AssocSpec],
    fallback_type_id: int,
    status_path: str,
) -> Accepted:
    headers = {WRITE_ID_HEADER: write_id}
    if kind == ASSOCIATE_DEFAULT:
        body = association_answer(req, known_types, fallback_type_id)
        return Accepted(write_id, 200, body, headers)
    if kind == UPDATE:
        return Accepted(write_id, 200, update_answer(req), headers)
    return Accepted(write_id, 202, pending_answer(write_id, status_path), headers)
