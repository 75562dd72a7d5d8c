"""CRM objects v3 batch endpoints: read, create, update, upsert, archive (≤ 100 inputs each).

Per-record failures give 207 with one error per failed input; an input's `objectWriteTraceId`
is echoed on its result and in its error's context so callers can map answers back. Options
(`SimConfig`) give HubSpot's other documented answers: no trace ids, results out of order, and
a whole-batch 400 (nothing applied) when one create or update input is invalid.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from aiohttp import web

from .objects_api import create_with_associations, parse_create_associations
from .responses import ApiError, batch_item_error, batch_response, read_object, validation_error
from .state import SimState, state_of
from .store import SimObject, iso_now

MAX_BATCH_INPUTS: Final = 100


def _inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise validation_error("inputs must be a list of objects")
    if len(inputs) > MAX_BATCH_INPUTS:
        raise validation_error(
            f"Batch input size {len(inputs)} exceeds the limit of {MAX_BATCH_INPUTS} inputs"
        )
    return inputs


def _traced(state: SimState, rendered: dict[str, Any], trace: Any) -> dict[str, Any]:
    if trace is not None and state.config.echo_trace_ids:
        rendered["objectWriteTraceId"] = str(trace)
    return rendered


def _item_error(
    state: SimState, category: str, message: str, ids: list[str], trace: Any
) -> dict[str, Any]:
    context = {"ids": ids}
    if trace is not None and state.config.echo_trace_ids:
        context["objectWriteTraceId"] = [str(trace)]
    return batch_item_error("error", category, message, context)


def _answer(
    state: SimState,
    results: list[dict[str, Any]],
    started: str,
    errors: list[dict[str, Any]],
    *,
    ok_status: int = 200,
) -> web.Response:
    if state.config.shuffle_batch_results:
        state.rng.shuffle(results)
    return batch_response(results, started, errors, ok_status=ok_status)


def _check_creates(state: SimState, inputs: list[dict[str, Any]]) -> None:
    """Whole-batch mode: raise the first input's error before anything is created."""
    for item in inputs:
        if not isinstance(item.get("properties") or {}, dict):
            raise validation_error("properties must be an object")
        parse_create_associations(state, item.get("associations") or [])


def _missing(state: SimState, type_name: str, ids: list[str], trace: Any = None) -> dict[str, Any]:
    message = (
        f"Could not get some {type_name.upper()} objects, they may be deleted or not exist. "
        "Check that ids are valid."
    )
    return _item_error(state, "OBJECT_NOT_FOUND", message, ids, trace)


async def batch_read(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    body = await read_object(request)
    type_name, id_prop = request.match_info["type"], body.get("idProperty")
    props = [str(p) for p in body.get("properties") or []] or None
    results: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for item in _inputs(body):
        wanted = str(item.get("id", ""))
        obj = state.objects.find(type_name, wanted, id_prop)
        if obj is None:
            missing.append(wanted)
        else:
            results[obj.id] = obj.render(props)  # repeated ids come back once
    errors = [_missing(state, type_name, missing)] if missing else []
    return _answer(state, list(results.values()), started, errors)


async def batch_create(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    body = await read_object(request)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    inputs = _inputs(body)
    if state.config.reject_whole_batch:
        _check_creates(state, inputs)
    for item in inputs:
        trace = item.get("objectWriteTraceId")
        try:
            props, links = item.get("properties") or {}, item.get("associations")
            obj = create_with_associations(state, request.match_info["type"], props, links)
        except ApiError as exc:
            errors.append(_item_error(state, exc.category, exc.message, [], trace))
            continue
        results.append(_traced(state, obj.render(everything=True), trace))
    return _answer(state, results, started, errors, ok_status=201)


def _reject_duplicates(inputs: list[dict[str, Any]]) -> None:
    counts = Counter(str(item.get("id")) for item in inputs)
    dupes = sorted(i for i, n in counts.items() if n > 1)
    if dupes:
        raise validation_error(f"Duplicate IDs found in batch input: {dupes}")


async def batch_update(request: web.Request) -> web.Response:
    started, state = iso_now(), state_of(request)
    body = await read_object(request)
    type_name = request.match_info["type"]
    inputs = _inputs(body)
    _reject_duplicates(inputs)
    if state.config.reject_whole_batch:
        _check_updates(state, type_name, body, inputs)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in inputs:
        trace, wanted = item.get("objectWriteTraceId"), str(item.get("id", ""))
        obj = state.objects.find(
            type_name, wanted, item.get("idProperty") or body.get("idProperty")
        )
        if obj is None:
            errors.append(_missing(state, type_name, [wanted], trace))
            continue
        props = item.get("properties") or {}
        if not isinstance(props, dict):
            message = "properties must be an object"
            errors.append(_item_error(state, "VALIDATION_ERROR", message, [wanted], trace))
            continue
        state.objects.update(obj, props)
        results.append(_traced(state, obj.render(everything=True), trace))
    return _answer(state, results, started, errors)


def _check_updates(
    state: SimState, type_name: str, body: dict[str, Any], inputs: list[dict[str, Any]]
) -> None:
    """Whole-batch mode: raise the first input's error before anything is updated."""
    for item in inputs:
        wanted = str(item.get("id", ""))
        id_prop = item.get("idProperty") or body.get("idProperty")
        if state.objects.find(type_name, wanted, id_prop) is None:
            raise validation_error(f"Object {wanted} of type {type_name} does not exist")
        if not isinstance(item.get("properties") or {}, dict):
            raise validation_error("properties must be an object")


def _upsert_one(request: web.Request, item: dict[str, Any]) -> tuple[SimObject, bool] | None:
    state, type_name = state_of(request), request.match_info["type"]
    wanted, id_prop = str(item.get("id", "")), item.get("idProperty")
    props = item.get("properties") or {}
    obj = state.objects.find(type_name, wanted, id_prop)
    if obj is not None:
        return state.objects.update(obj, props), False
    if not id_prop or id_prop == "hs_object_id":
        return None  # an unknown record id cannot be created under that id
    return state.objects.create(type_name, {**props, id_prop: wanted}), True


async def batch_upsert(request: web.Request) -> web.Response:
    started, state, type_name = iso_now(), state_of(request), request.match_info["type"]
    body = await read_object(request)
    results: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in _inputs(body):
        trace = item.get("objectWriteTraceId")
        done = _upsert_one(request, item)
        if done is None:
            errors.append(_missing(state, type_name, [str(item.get("id"))], trace))
            continue
        obj, created = done
        results.append(_traced(state, {**obj.render(everything=True), "new": created}, trace))
    return _answer(state, results, started, errors)


async def batch_archive(request: web.Request) -> web.Response:
    state = state_of(request)
    body = await read_object(request)
    for item in _inputs(body):
        state.objects.archive(request.match_info["type"], str(item.get("id", "")))
    return web.Response(status=204)
