"""`/__sim/*`: what the simulator saw, and knobs for tests. Never rate limited nor faulted."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .assoc_store import default_type, labeled_type
from .limits import BUCKETS
from .responses import json_response, read_object
from .state import SimState, state_of
from .stats import TokenStats, token_hash


def _hash_from(source: dict[str, Any] | Any) -> str | None:
    if source.get("token"):
        return token_hash(str(source["token"]))
    hashed = source.get("token_hash")
    return str(hashed) if hashed else None


def _token_json(state: SimState, stats: TokenStats) -> dict[str, Any]:
    usage = state.budget(stats.token_hash).usage(state.clock(), state.config)
    return stats.to_json(usage)


async def get_stats(request: web.Request) -> web.Response:
    """All tokens (by hash) and totals; `?token=` or `?token_hash=` narrows to one token."""
    state = state_of(request)
    hashed = _hash_from(request.query)
    if hashed is not None:
        return json_response(_token_json(state, state.stats.for_hash(hashed)))
    body = {
        "tokens": {h: _token_json(state, s) for h, s in state.stats.tokens.items()},
        "totals": state.stats.totals(),
        "objects": state.objects.count(),
        "associations": state.assocs.count(),
        "uptime_s": state.clock() - state.origin,
    }
    return json_response(body)


async def get_calls(request: web.Request) -> web.Response:
    """Admitted calls of one token, with arrival times on the `time.monotonic()` clock."""
    state = state_of(request)
    hashed = _hash_from(request.query)
    if hashed is None:
        return json_response({"message": "token or token_hash is required"}, status=400)
    stats = state.stats.for_hash(hashed)
    calls = [c.to_json() for c in stats.calls]
    return json_response({"token_hash": hashed, "calls": calls, "now": state.clock()})


async def post_reset(request: web.Request) -> web.Response:
    state_of(request).reset()
    return json_response({"status": "reset"})


def _seed_ref(value: Any, created: list[dict[str, str]]) -> str:
    """Seeded associations may name a seeded object by position: "$0" is the first one."""
    text = str(value)
    return created[int(text[1:])]["id"] if text.startswith("$") else text


def _seed_associations(state: SimState, raw: list[Any], created: list[dict[str, str]]) -> int:
    for item in raw:
        from_type, to_type = str(item["from_type"]), str(item["to_type"])
        from_id = _seed_ref(item["from_id"], created)
        to_id = _seed_ref(item["to_id"], created)
        kinds = [
            labeled_type(str(t["associationCategory"]), int(t["associationTypeId"]))
            for t in item.get("types") or []
        ] or [default_type(from_type, to_type)]
        state.assocs.associate(from_type, from_id, to_type, to_id, kinds)
    return len(raw)


async def post_seed(request: web.Request) -> web.Response:
    """Create records and associations without touching limits or counters."""
    state = state_of(request)
    body = await read_object(request)
    created: list[dict[str, str]] = []
    try:
        for item in body.get("objects") or []:
            wanted = item.get("id")
            obj = state.objects.create(
                str(item["type"]),
                item.get("properties") or {},
                None if wanted is None else str(wanted),
            )
            created.append({"type": obj.type_id, "id": obj.id})
        linked = _seed_associations(state, body.get("associations") or [], created)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return json_response({"message": f"bad seed input: {exc!r}"}, status=400)
    return json_response({"objects": created, "associations": linked})


async def post_spend(request: web.Request) -> web.Response:
    """Spend budget as a second integration on the same token would."""
    state = state_of(request)
    body = await read_object(request)
    hashed = _hash_from(body)
    bucket, count = str(body.get("bucket", "general")), int(body.get("count", 1))
    if hashed is None or bucket not in BUCKETS or count < 0:
        message = f"need token (or token_hash), bucket in {list(BUCKETS)} and count >= 0"
        return json_response({"message": message}, status=400)
    now = state.clock()
    state.budget(hashed).spend(bucket, count, now, state.config)
    state.stats.for_hash(hashed).spent[bucket] += count
    usage = state.budget(hashed).usage(now, state.config)
    return json_response({"token_hash": hashed, "window_usage": usage})


async def get_config(request: web.Request) -> web.Response:
    return json_response(state_of(request).config.to_json())


async def post_config(request: web.Request) -> web.Response:
    """Change latency, faults or limits at runtime (unknown keys are refused)."""
    state = state_of(request)
    body = await read_object(request)
    for derived in ("general_max", "daily_max"):
        body.pop(derived, None)
    try:
        state.set_config(state.config.replace(body))
    except (TypeError, ValueError) as exc:
        return json_response({"message": str(exc)}, status=400)
    return json_response(state.config.to_json())


async def get_objects(request: web.Request) -> web.Response:
    """Every record of a type with all its properties, for assertions that cost no budget."""
    state = state_of(request)
    archived = request.query.get("archived", "false").lower() == "true"
    objs = state.objects.live(request.match_info["type"], archived=archived)
    return json_response({"results": [o.render(everything=True) for o in objs]})


async def get_associations(request: web.Request) -> web.Response:
    state = state_of(request)
    m = request.match_info
    targets = state.assocs.targets(m["from"], m["fromId"], m["to"])
    results = [
        {"toObjectId": to_id, "associationTypes": [k.with_label() for k in kinds]}
        for to_id, kinds in targets
    ]
    return json_response({"results": results})
