"""Associations v4 (and the date-versioned family): per-record and batch endpoints."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from proxy.hubspot.protocol import canonical_object_type

from .assoc_store import AssocType, default_type, labeled_type
from .responses import (
    batch_item_error,
    batch_response,
    json_response,
    not_found,
    read_json,
    read_object,
    validation_error,
)
from .state import SimState, state_of
from .store import iso_now

MAX_READ_INPUTS: Final = 1000
MAX_WRITE_INPUTS: Final = 2000
LIST_DEFAULT_LIMIT: Final = 500


def _numeric(obj_id: str) -> int | str:
    # v4 returns record ids as JSON numbers in these bodies.
    return int(obj_id) if obj_id.isdigit() else obj_id


def _exists(state: SimState, type_name: str, obj_id: str) -> bool:
    return state.objects.get(type_name, obj_id) is not None


def _require(state: SimState, type_name: str, obj_id: str) -> None:
    if not _exists(state, type_name, obj_id):
        raise not_found(f"No {type_name} record with id {obj_id}")


def _kinds(raw: Any) -> list[AssocType]:
    if not isinstance(raw, list) or not raw:
        raise validation_error("association types must be a non-empty list")
    try:
        return [
            labeled_type(str(t["associationCategory"]), int(t["associationTypeId"])) for t in raw
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise validation_error("each type needs associationCategory and associationTypeId") from exc


def _default_results(
    from_type: str, from_id: str, to_type: str, to_id: str
) -> list[dict[str, Any]]:
    """Both directions, as HubSpot reports a default association."""
    return [
        {
            "from": {"id": a_id},
            "to": {"id": b_id},
            "associationSpec": default_type(a_type, b_type).spec(),
        }
        for a_type, a_id, b_type, b_id in (
            (from_type, from_id, to_type, to_id),
            (to_type, to_id, from_type, from_id),
        )
    ]


def _labels_pair(
    from_type: str, from_id: str, to_type: str, to_id: str, kinds: list[AssocType]
) -> dict[str, Any]:
    return {
        "fromObjectTypeId": canonical_object_type(from_type),
        "fromObjectId": _numeric(from_id),
        "toObjectTypeId": canonical_object_type(to_type),
        "toObjectId": _numeric(to_id),
        "labels": [k.label for k in kinds if k.label],
    }


def _path(request: web.Request) -> tuple[str, str, str, str]:
    m = request.match_info
    return m["from"], m["fromId"], m["to"], m.get("toId", "")


async def put_default(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    from_type, from_id, to_type, to_id = _path(request)
    _require(state, from_type, from_id)
    _require(state, to_type, to_id)
    state.assocs.associate(from_type, from_id, to_type, to_id, [default_type(from_type, to_type)])
    return batch_response(_default_results(from_type, from_id, to_type, to_id), started)


async def put_labeled(request: web.Request) -> web.Response:
    state = state_of(request)
    from_type, from_id, to_type, to_id = _path(request)
    kinds = _kinds(await read_json(request))
    _require(state, from_type, from_id)
    _require(state, to_type, to_id)
    state.assocs.set_labels(from_type, from_id, to_type, to_id, kinds)
    return json_response(_labels_pair(from_type, from_id, to_type, to_id, kinds), status=201)


async def delete_pair(request: web.Request) -> web.Response:
    from_type, from_id, to_type, to_id = _path(request)
    state_of(request).assocs.remove(from_type, from_id, to_type, to_id)
    return web.Response(status=204)


def _to_entries(
    state: SimState, from_type: str, from_id: str, to_type: str
) -> list[dict[str, Any]]:
    return [
        {"toObjectId": _numeric(to_id), "associationTypes": [k.with_label() for k in kinds]}
        for to_id, kinds in state.assocs.targets(from_type, from_id, to_type)
    ]


async def list_for_record(request: web.Request) -> web.Response:
    from_type, from_id, to_type, _ = _path(request)
    try:
        limit = int(request.query.get("limit", LIST_DEFAULT_LIMIT))
        after = int(request.query.get("after", "0") or 0)
    except ValueError as exc:
        raise validation_error("limit and after must be integers") from exc
    entries = _to_entries(state_of(request), from_type, from_id, to_type)
    body: dict[str, Any] = {"results": entries[after : after + limit]}
    if after + limit < len(entries):
        body["paging"] = {"next": {"after": str(after + limit)}}
    return json_response(body)


async def _inputs(request: web.Request, maximum: int) -> list[dict[str, Any]]:
    inputs = (await read_object(request)).get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise validation_error("inputs must be a list of objects")
    if len(inputs) > maximum:
        raise validation_error(f"Batch input size {len(inputs)} exceeds the limit of {maximum}")
    return inputs


def _ref(item: dict[str, Any], side: str) -> str:
    return str((item.get(side) or {}).get("id", ""))


def _pair_error(from_id: str, to_id: str) -> dict[str, Any]:
    return batch_item_error(
        "error",
        "OBJECT_NOT_FOUND",
        f"One of the records does not exist: {from_id} -> {to_id}",
        {"fromObjectId": [from_id], "toObjectId": [to_id]},
    )


async def batch_associate_default(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    from_type, to_type = request.match_info["from"], request.match_info["to"]
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in await _inputs(request, MAX_WRITE_INPUTS):
        from_id, to_id = _ref(item, "from"), _ref(item, "to")
        if not (_exists(state, from_type, from_id) and _exists(state, to_type, to_id)):
            errors.append(_pair_error(from_id, to_id))
            continue
        state.assocs.associate(
            from_type, from_id, to_type, to_id, [default_type(from_type, to_type)]
        )
        results.extend(_default_results(from_type, from_id, to_type, to_id))
    return batch_response(results, started, errors)


async def batch_create(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    from_type, to_type = request.match_info["from"], request.match_info["to"]
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in await _inputs(request, MAX_WRITE_INPUTS):
        from_id, to_id = _ref(item, "from"), _ref(item, "to")
        kinds = _kinds(item.get("types"))
        if not (_exists(state, from_type, from_id) and _exists(state, to_type, to_id)):
            errors.append(_pair_error(from_id, to_id))
            continue
        state.assocs.associate(from_type, from_id, to_type, to_id, kinds)
        results.append(_labels_pair(from_type, from_id, to_type, to_id, kinds))
    return batch_response(results, started, errors, ok_status=201)


async def batch_read(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    from_type, to_type = request.match_info["from"], request.match_info["to"]
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in await _inputs(request, MAX_READ_INPUTS):
        from_id = str(item.get("id", ""))
        entries = _to_entries(state, from_type, from_id, to_type)
        if entries:
            results.append({"from": {"id": from_id}, "to": entries})
        else:  # HubSpot reports records without associations as per-input errors
            message = f"No {to_type} is associated with {from_type} {from_id}."
            errors.append(
                batch_item_error("error", "OBJECT_NOT_FOUND", message, {"fromObjectId": [from_id]})
            )
    return batch_response(results, started, errors)


async def batch_archive(request: web.Request) -> web.Response:
    state = state_of(request)
    from_type, to_type = request.match_info["from"], request.match_info["to"]
    for item in await _inputs(request, MAX_WRITE_INPUTS):
        targets = item.get("to") or []
        for target in targets if isinstance(targets, list) else [targets]:
            state.assocs.remove(from_type, _ref(item, "from"), to_type, str(target.get("id", "")))
    return web.Response(status=204)
