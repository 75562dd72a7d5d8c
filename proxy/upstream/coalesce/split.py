"""A batch answer cut back into the answer each single call would have had (pure).

Results are matched to calls by what HubSpot puts in them (record id, association pair), never
by position or `objectWriteTraceId`: HubSpot promises neither an order nor echoed trace ids.
A call the answer does not settle exactly (an error other than "not found", no result) is
`None`: the gatherer sends it on its own, and its caller gets HubSpot's own answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from proxy.hubspot.protocol import OBJECT_NOT_FOUND_MESSAGE, error_body
from proxy.upstream.coalesce.calls import BatchableCall

# HubSpot shows these on every object, whatever properties were asked for.
ALWAYS_SHOWN: Final = ("hs_object_id", "createdate", "hs_lastmodifieddate")
NOT_FOUND: Final = "OBJECT_NOT_FOUND"


@dataclass(frozen=True)
class Made:
    """The status and JSON body HubSpot would have answered the single call."""

    status: int
    body: Any


def split_answer(calls: Sequence[BatchableCall], body: Mapping[str, Any]) -> list[Made | None]:
    """One entry per call of a 200/201/207 batch answer (`create` is not mapped here)."""
    results = [r for r in body.get("results") or [] if isinstance(r, Mapping)]
    operation = calls[0].operation
    if operation == "associate":
        return [_association(call, results, body) for call in calls]
    by_id = {str(r.get("id")): r for r in results}
    missing = _not_found_ids(body.get("errors"))
    return [_record(call, by_id, missing) for call in calls]


def _not_found_ids(errors: Any) -> set[str]:
    ids: set[str] = set()
    for error in errors if isinstance(errors, list) else ():
        if not isinstance(error, Mapping) or error.get("category") != NOT_FOUND:
            continue
        context = error.get("context")
        if isinstance(context, Mapping) and isinstance(context.get("ids"), list):
            ids.update(str(i) for i in context["ids"])
    return ids


def _record(call: BatchableCall, by_id: Mapping[str, Any], missing: set[str]) -> Made | None:
    result = by_id.get(call.object_id)
    if result is not None:
        return Made(200, single_object(result, call.properties))
    if call.object_id in missing:
        return Made(404, error_body(OBJECT_NOT_FOUND_MESSAGE, NOT_FOUND))
    return None


def single_object(result: Mapping[str, Any], asked: tuple[str, ...] | None) -> dict[str, Any]:
    """A batch result as the single call shows it: no trace id, only the properties asked."""
    shown = {k: v for k, v in result.items() if k != "objectWriteTraceId"}
    properties = result.get("properties")
    if asked is not None and isinstance(properties, Mapping):
        wanted = (*asked, *ALWAYS_SHOWN)
        shown["properties"] = {k: properties[k] for k in wanted if k in properties}
    return shown


def _association(
    call: BatchableCall, results: list[Mapping[str, Any]], body: Mapping[str, Any]
) -> Made | None:
    pair = (call.object_id, call.to_id)
    forward = [r for r in results if _ends(r) == pair]
    backward = [r for r in results if _ends(r) == pair[::-1]]
    if not forward:
        return None
    single = {
        "status": body.get("status", "COMPLETE"),
        "results": forward + backward,
        "startedAt": body.get("startedAt"),
        "completedAt": body.get("completedAt"),
    }
    return Made(200, single)


def _ends(result: Mapping[str, Any]) -> tuple[str, str]:
    def end(side: str) -> str:
        value = result.get(side)
        return str(value.get("id")) if isinstance(value, Mapping) else ""

    return end("from"), end("to")
