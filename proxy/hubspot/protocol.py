"""HubSpot protocol knowledge: error bodies, rate-limit policies, path families (pure).

Every answer the gateway makes up must parse in the official SDKs exactly like HubSpot's own,
so the shapes live here, in one place.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Final

import orjson

RATE_LIMIT_HEADER_PREFIX: Final = "x-hubspot-ratelimit-"

POLICY_TEN_SECONDLY: Final = "TEN_SECONDLY_ROLLING"
POLICY_SECONDLY: Final = "SECONDLY"
POLICY_DAILY: Final = "DAILY"

POLICY_MESSAGES: Final[dict[str, str]] = {
    POLICY_TEN_SECONDLY: "You have reached your ten_secondly_rolling limit.",
    POLICY_SECONDLY: "You have reached your secondly limit.",
    POLICY_DAILY: "You have reached your daily limit.",
}

OBJECT_TYPE_IDS: Final[dict[str, str]] = {
    "contacts": "0-1",
    "contact": "0-1",
    "companies": "0-2",
    "company": "0-2",
    "deals": "0-3",
    "deal": "0-3",
    "tickets": "0-5",
    "ticket": "0-5",
    "products": "0-7",
    "product": "0-7",
    "line_items": "0-8",
    "line_item": "0-8",
    "tasks": "0-27",
    "task": "0-27",
    "notes": "0-46",
    "note": "0-46",
    "meetings": "0-47",
    "meeting": "0-47",
    "calls": "0-48",
    "call": "0-48",
    "emails": "0-49",
    "email": "0-49",
}

# The message of HubSpot's 404 for a single-record GET or PATCH of a record that does not exist.
OBJECT_NOT_FOUND_MESSAGE: Final = "Object not found.  objectId are usually numeric."

HUBSPOT_DEFINED: Final = "HUBSPOT_DEFINED"
USER_DEFINED: Final = "USER_DEFINED"

# HubSpot's unlabeled ("default") association type ids between standard objects. Pairs with
# custom objects have portal-specific ids: configure them, or the worker learns them from the
# first batch answer.
DEFAULT_ASSOCIATION_TYPES: Final[dict[tuple[str, str], int]] = {
    ("0-1", "0-2"): 279,
    ("0-2", "0-1"): 280,
    ("0-3", "0-1"): 3,
    ("0-1", "0-3"): 4,
    ("0-3", "0-2"): 341,
    ("0-2", "0-3"): 342,
    ("0-1", "0-5"): 15,
    ("0-5", "0-1"): 16,
    ("0-5", "0-2"): 339,
    ("0-2", "0-5"): 340,
    ("0-1", "0-46"): 201,
    ("0-46", "0-1"): 202,
    ("0-2", "0-46"): 189,
    ("0-46", "0-2"): 190,
    ("0-3", "0-46"): 213,
    ("0-46", "0-3"): 214,
    ("0-5", "0-46"): 227,
    ("0-46", "0-5"): 228,
}

_DATE_VERSION = r"\d{4}-\d{2}"
# /crm/v3/objects/... and /crm/objects/2026-03/... are one family; so are the association paths.
_OBJECTS_PREFIX = re.compile(rf"^/crm/(?:v3/objects|objects/{_DATE_VERSION})/")
_ASSOC_BATCH = re.compile(
    rf"^/crm/(?:v3/associations|v4/associations|associations/{_DATE_VERSION})/[^/]+/[^/]+/batch/"
)
_SEARCH = re.compile(r"/search/?$")


def canonical_object_type(name: str) -> str:
    """`contacts`, `contact` and `0-1` name one object type; custom `2-<n>` ids pass through."""
    return OBJECT_TYPE_IDS.get(name.lower(), name)


def is_search(method: str, path: str) -> bool:
    return method.upper() == "POST" and bool(_SEARCH.search(path))


def is_association_batch(path: str) -> bool:
    return bool(_ASSOC_BATCH.match(path))


def is_objects_path(path: str) -> bool:
    return bool(_OBJECTS_PREFIX.match(path))


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(
    message: str,
    category: str,
    *,
    correlation_id: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": correlation_id or new_correlation_id(),
        "category": category,
    }
    if errors:
        body["errors"] = errors
    if context:
        body["context"] = context
    return body


def rate_limit_body(
    policy: str, *, group_name: str = "publicapi", correlation_id: str | None = None
) -> dict[str, Any]:
    return {
        "status": "error",
        "message": POLICY_MESSAGES.get(policy, "You have reached your rate limit."),
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id or new_correlation_id(),
        "policyName": policy,
        "groupName": group_name,
    }


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_exact(raw: bytes | str) -> Any:
    """JSON with every number kept exact: orjson reads integers past 64 bits as floats
    (123456789012345678901234567890 -> 1.2345678901234568e+29), the standard library does not.
    For bodies the gateway stores and sends on (write-behind), where the client's value must
    reach HubSpot unchanged."""
    return json.loads(raw, parse_constant=_no_constant)


def dumps_exact(body: Any) -> bytes:
    """The inverse of `loads_exact`: orjson, or the standard library for integers orjson
    refuses (past 64 bits)."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
