"""The HubSpot calls each rule type concerns without a `match:` of its own (pure).

Rules that keep state (an index, a counter, a cache) must see every call that can change that
state, in every path family; listing the endpoints here, once, keeps rule files short and keeps
ops from forgetting one. Templates are written in the v3/v4 families and match the date-versioned
family too (see `rules.paths`).
"""

from __future__ import annotations

from proxy.rules.model import AssociationSource, PropertySource, Role
from proxy.rules.paths import Match, compile_template

Matchers = tuple[tuple[Match, Role], ...]

_OBJ = "/crm/v3/objects/{objectType}"
_ONE = _OBJ + "/{objectId}"
_V4_OBJ = "/crm/v4/objects/{fromObjectType}/{fromObjectId}/associations"
_V3_OBJ = "/crm/v3/objects/{fromObjectType}/{fromObjectId}/associations"
_V3_TO = "/{toObjectType}/{toObjectId}/{associationType}"
_V4_BATCH = "/crm/v4/associations/{fromObjectType}/{toObjectType}/batch"
_V3_BATCH = "/crm/v3/associations/{fromObjectType}/{toObjectType}/batch"


def _m(method: str, template: str, **require: str) -> Match:
    return Match(compile_template(template, {}), frozenset({method}), require)


def _writes(object_type: str, *, creates: bool) -> Matchers:
    """Creates, updates and deletes of one object type, single and batch."""
    t = object_type
    created: Matchers = (
        (_m("POST", _OBJ, objectType=t), "create"),
        (_m("POST", _OBJ + "/batch/create", objectType=t), "create"),
    )
    return (*(created if creates else ()),
        (_m("PATCH", _ONE, objectType=t), "update"),
        (_m("POST", _OBJ + "/batch/update", objectType=t), "update"),
        (_m("POST", _OBJ + "/batch/upsert", objectType=t), "update"),
        (_m("DELETE", _ONE, objectType=t), "delete"),
        (_m("POST", _OBJ + "/batch/archive", objectType=t), "delete"),
        (_m("POST", _OBJ + "/merge", objectType=t), "delete"),
    )  # fmt: skip


def search_index(object_type: str) -> Matchers:
    lookup = _m("POST", _OBJ + "/search", objectType=object_type)
    return ((lookup, "lookup"), *_writes(object_type, creates=True))


def object_cache(object_type: str) -> Matchers:
    return ((_m("GET", _ONE, objectType=object_type), "read"),
            *_writes(object_type, creates=False))  # fmt: skip


def counter(
    object_type: str,
    booking_type: str,
    source: AssociationSource | PropertySource,
    absorb: bool,
    guarded: bool = False,
) -> Matchers:
    """`guarded`: creates of the counted object are the counter's business too (they take a
    seat: see `CapacityGuard`)."""
    t = object_type
    patch: Role = "absorb" if absorb else "update"
    own: Matchers = (
        (_m("GET", _ONE, objectType=t), "overlay"),
        (_m("POST", _OBJ + "/batch/read", objectType=t), "overlay"),
        (_m("POST", _OBJ + "/search", objectType=t), "overlay"),
        (_m("PATCH", _ONE, objectType=t), patch),
        (_m("POST", _OBJ + "/batch/update", objectType=t), patch),
    )
    if isinstance(source, PropertySource):
        return (*own, *_writes(booking_type, creates=True))
    return (*own, *_associations(source), *_writes(booking_type, creates=guarded))


def _associations(source: AssociationSource) -> Matchers:
    ends = {"fromObjectType": source.from_type, "toObjectType": source.to_type}
    return (
        (_m("PUT", _V4_OBJ + "/default/{toObjectType}/{toObjectId}", **ends), "associate"),
        (_m("PUT", _V4_OBJ + "/{toObjectType}/{toObjectId}", **ends), "associate"),
        (_m("PUT", _V3_OBJ + _V3_TO, **ends), "associate"),
        (_m("POST", _V4_BATCH + "/associate/default", **ends), "associate"),
        (_m("POST", _V4_BATCH + "/create", **ends), "associate"),
        (_m("POST", _V3_BATCH + "/create", **ends), "associate"),
        (_m("DELETE", _V4_OBJ + "/{toObjectType}/{toObjectId}", **ends), "dissociate"),
        (_m("DELETE", _V3_OBJ + _V3_TO, **ends),
         "dissociate"),
        (_m("POST", _V4_BATCH + "/archive", **ends), "dissociate"),
        (_m("POST", _V3_BATCH + "/archive", **ends), "dissociate"),
    )  # fmt: skip
