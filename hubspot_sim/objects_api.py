"""CRM objects v3 (and the date-versioned family): create, get, update, archive, list, search."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.hubspot.protocol import OBJECT_NOT_FOUND_MESSAGE

from .assoc_store import AssocType, labeled_type
from .responses import json_response, not_found, read_object, validation_error
from .search import SearchError, parse_search, run_search
from .state import SimState, state_of
from .store import SimObject

LIST_MAX_LIMIT = 100


def properties_param(request: web.Request) -> list[str] | None:
    """`?properties=a,b` or repeated `?properties=a&properties=b`."""
    props = [p for v in request.query.getall("properties", []) for p in v.split(",") if p]
    return props or None


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").lower() == "true"


def parse_create_associations(state: SimState, raw: Any) -> list[tuple[str, str, list[AssocType]]]:
    """Resolve `associations:[{to:{id}, types:[...]}]` on create; ids are unique across types."""
    if not isinstance(raw, list):
        raise validation_error("associations must be a list")
    resolved: list[tuple[str, str, list[AssocType]]] = []
    for item in raw:
        to_id = str(((item or {}).get("to") or {}).get("id", ""))
        to_type = state.objects.type_of(to_id)
        if to_type is None or state.objects.get(to_type, to_id) is None:
            raise validation_error(f"association target {to_id!r} does not exist")
        kinds = [
            labeled_type(str(t.get("associationCategory")), int(t.get("associationTypeId", 0)))
            for t in (item.get("types") or [])
        ]
        if not kinds:
            raise validation_error("each association needs at least one type")
        resolved.append((to_type, to_id, kinds))
    return resolved


def create_with_associations(
    state: SimState, type_name: str, properties: Any, associations: Any
) -> SimObject:
    if not isinstance(properties, dict):
        raise validation_error("properties must be an object")
    links = parse_create_associations(state, associations or [])
    obj = state.objects.create(type_name, properties)
    for to_type, to_id, kinds in links:
        state.assocs.associate(obj.type_id, obj.id, to_type, to_id, kinds)
    return obj


async def create_object(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_object(request)
    obj = create_with_associations(
        state, request.match_info["type"], body.get("properties") or {}, body.get("associations")
    )
    return json_response(obj.render(everything=True), status=201)


def _find(request: web.Request, *, archived: bool = False) -> SimObject:
    state = state_of(request)
    type_name, obj_id = request.match_info["type"], request.match_info["id"]
    if archived:
        obj = state.objects.get(type_name, obj_id, archived=True)
    else:
        obj = state.objects.find(type_name, obj_id, request.query.get("idProperty"))
    if obj is None:
        raise not_found(OBJECT_NOT_FOUND_MESSAGE)
    return obj


def _associations_of(state: SimState, obj: SimObject, to_types: list[str]) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for to_type in to_types:
        results = [
            {"id": to_id, "type": f"{obj.type_id}_to_{to_type}"}
            for to_id, _ in state.assocs.targets(obj.type_id, obj.id, to_type)
        ]
        if results:
            shown[to_type] = {"results": results}
    return shown


async def get_object(request: web.Request) -> web.Response:
    obj = _find(request, archived=_flag(request, "archived"))
    body = obj.render(properties_param(request))
    wanted = [t for v in request.query.getall("associations", []) for t in v.split(",") if t]
    if wanted:
        body["associations"] = _associations_of(state_of(request), obj, wanted)
    return json_response(body)


async def update_object(request: web.Request) -> web.Response:
    body = await read_object(request)
    props = body.get("properties")
    if not isinstance(props, dict):
        raise validation_error("properties must be an object")
    obj = state_of(request).objects.update(_find(request), props)
    return json_response(obj.render(everything=True))


async def archive_object(request: web.Request) -> web.Response:
    # HubSpot answers 204 whether or not the record existed.
    state_of(request).objects.archive(request.match_info["type"], request.match_info["id"])
    return web.Response(status=204)


async def list_objects(request: web.Request) -> web.Response:
    state = state_of(request)
    try:
        limit = int(request.query.get("limit", "10"))
        after = int(request.query.get("after", "0") or 0)
    except ValueError as exc:
        raise validation_error("limit and after must be integers") from exc
    if not 0 < limit <= LIST_MAX_LIMIT or after < 0:
        raise validation_error(f"limit must be between 1 and {LIST_MAX_LIMIT}")
    objs = state.objects.live(request.match_info["type"], archived=_flag(request, "archived"))
    props = properties_param(request)
    body: dict[str, Any] = {"results": [o.render(props) for o in objs[after : after + limit]]}
    if after + limit < len(objs):
        next_after = str(after + limit)
        link = request.url.update_query(after=next_after)
        body["paging"] = {"next": {"after": next_after, "link": str(link)}}
    return json_response(body)


async def search_objects(request: web.Request) -> web.Response:
    state = state_of(request)
    text = (await request.read()).decode("utf-8", errors="replace")
    limit = state.config.search_body_max_chars
    if len(text) > limit:
        raise validation_error(f"Request body too large: {len(text)} characters (max {limit})")
    try:
        req = parse_search(orjson.loads(text or "{}"))
    except orjson.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON: {exc}") from exc
    except SearchError as exc:
        raise validation_error(str(exc)) from exc
    total, page, next_after = run_search(state.objects.searchable(request.match_info["type"]), req)
    body: dict[str, Any] = {"total": total, "results": [o.render(req.properties) for o in page]}
    if next_after is not None:
        body["paging"] = {"next": {"after": next_after}}
    return json_response(body)
