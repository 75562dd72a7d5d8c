"""A batch answer cut back into the answer each single call would have had (pure).

Which input got which result is `proxy.hubspot.batch_results`' business (HubSpot promises no
order and no echoed trace id). Here each outcome becomes the single call's answer:

    applied, with its result   200 (201 for a create) and the object as the single call shows it
    failed, OBJECT_NOT_FOUND   404 with HubSpot's single-call body (reads and updates)
    failed, anything else      None: the call goes out on its own and gets HubSpot's own error
    unknown                    None for reads, updates and associations (safe to send again);
                               a create may exist already: `AMBIGUOUS`, never sent again
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from proxy.hubspot.batch_results import InputOutcome, map_batch_answer
from proxy.hubspot.protocol import OBJECT_NOT_FOUND_MESSAGE, error_body
from proxy.upstream.coalesce.calls import BatchableCall
from proxy.upstream.coalesce.shapes import BatchCall

# HubSpot shows these on every object, whatever properties were asked for.
ALWAYS_SHOWN: Final = ("hs_object_id", "createdate", "hs_lastmodifieddate")
NOT_FOUND: Final = "OBJECT_NOT_FOUND"


@dataclass(frozen=True)
class Made:
    """The status and JSON body HubSpot would have answered the single call."""

    status: int
    body: Any


class Ambiguous:
    """A create HubSpot may or may not have applied: its caller gets a 502, like a single call
    whose answer was lost, and nothing is sent again."""


AMBIGUOUS: Final = Ambiguous()
Single = Made | Ambiguous | None


def split_answer(
    calls: Sequence[BatchableCall], batch: BatchCall, status: int, body: Any
) -> list[Single]:
    """One entry per call of a 200/201/207 batch answer."""
    operation = calls[0].operation
    outcomes = map_batch_answer(operation, batch.inputs, status, body)
    results = body.get("results") if isinstance(body, Mapping) else None
    singles: list[Single] = []
    for call, position in zip(calls, batch.positions, strict=True):
        outcome = outcomes[position]
        if operation == "associate":
            singles.append(_association(call, outcome, results, body))
        else:
            singles.append(_record(call, outcome))
    return singles


def _record(call: BatchableCall, outcome: InputOutcome) -> Single:
    creating = call.operation == "create"
    if outcome.state == "applied" and outcome.result is not None:
        return Made(201 if creating else 200, single_object(outcome.result, call.properties))
    if outcome.state == "failed" and not creating and _category(outcome) == NOT_FOUND:
        return Made(404, error_body(OBJECT_NOT_FOUND_MESSAGE, NOT_FOUND))
    if creating and outcome.state != "failed":
        return AMBIGUOUS  # applied, but which new record is its own cannot be told
    return None


def _category(outcome: InputOutcome) -> str:
    return str((outcome.error or {}).get("category") or "")


def single_object(result: Mapping[str, Any], asked: tuple[str, ...] | None) -> dict[str, Any]:
    """A batch result as the single call shows it: no trace id, only the properties asked."""
    shown = {k: v for k, v in result.items() if k != "objectWriteTraceId"}
    properties = result.get("properties")
    if asked is not None and isinstance(properties, Mapping):
        wanted = (*asked, *ALWAYS_SHOWN)
        shown["properties"] = {k: properties[k] for k in wanted if k in properties}
    return shown


def _association(call: BatchableCall, outcome: InputOutcome, results: Any, body: Any) -> Single:
    """The single PUT's body: this pair's results, both directions, from the batch answer."""
    if outcome.state != "applied" or not isinstance(results, list):
        return None
    pair = (call.object_id, call.to_id)
    ends = [(r, _ends(r)) for r in results if isinstance(r, Mapping)]
    forward = [r for r, e in ends if e == pair]
    backward = [r for r, e in ends if e == pair[::-1]]
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
