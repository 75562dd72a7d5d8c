"""Which inputs of a HubSpot batch call were applied, failed or may have been applied (pure).

HubSpot promises little about a batch answer: `objectWriteTraceId` is optional in its results
(the v3 reference example has none), results come in no promised order, and one bad input can
make the whole batch a `400`. So an answer is read back to its inputs by whatever names them:

- a result or error carrying an input's `objectWriteTraceId` names that input;
- a create (or upsert) result names the input whose properties it holds, after HubSpot's value
  normalisation (numbers and booleans come back as strings); identical inputs are
  interchangeable, so either may take either result;
- an update, read or archive result names the input with its id; an association result the
  pair, in either direction;
- a `207` error names inputs by `context.objectWriteTraceId`, `context.ids` (or the association
  `fromObjectId`/`toObjectId` lists), or, failing those, by the input ids its message quotes.

A `200/201` with status `COMPLETE` and no errors applied every input, named or not. A whole-batch
4xx failed every input with that error; a 5xx or no answer at all (status 0: timeout, reset)
leaves every input unknown. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Operation = Literal["create", "update", "read", "upsert", "archive", "associate"]
State = Literal["applied", "failed", "unknown"]

NO_ANSWER = 0  # the status to pass when the call timed out or the connection broke


@dataclass(frozen=True)
class InputOutcome:
    index: int  # position in the submitted inputs
    state: State
    result: Mapping[str, Any] | None = None  # HubSpot's result object for this input, when applied
    error: Mapping[str, Any] | None = None  # HubSpot's error entry for this input, when failed


def map_batch_answer(
    operation: Operation, inputs: Sequence[Mapping[str, Any]], status: int, body: Any
) -> list[InputOutcome]:
    """One outcome per input, in input order."""
    count = len(inputs)
    if 200 <= status < 300 and (status == 204 or not isinstance(body, Mapping)):
        # 204 is archive's answer; any other 2xx without a readable body says nothing per input.
        state: State = "applied" if status == 204 else "unknown"
        return [InputOutcome(i, state) for i in range(count)]
    if status in (200, 201, 207):
        return _per_input(operation, inputs, status, body)
    if 400 <= status < 500:
        error = body if isinstance(body, Mapping) else {"status": "error", "message": str(body)}
        return [InputOutcome(i, "failed", error=error) for i in range(count)]
    return [InputOutcome(i, "unknown") for i in range(count)]


def _per_input(
    operation: Operation, inputs: Sequence[Mapping[str, Any]], status: int, body: Mapping[str, Any]
) -> list[InputOutcome]:
    results = [r for r in body.get("results") or [] if isinstance(r, Mapping)]
    errors = [e for e in body.get("errors") or [] if isinstance(e, Mapping)]
    failed, unattributed = _attribute_errors(operation, inputs, errors)
    applied, spare = _attribute_results(operation, inputs, results, set(failed))
    rest = [i for i in range(len(inputs)) if i not in failed and i not in applied]
    complete = status in (200, 201) and body.get("status", "COMPLETE") == "COMPLETE"
    if rest and ((not errors and complete) or (not unattributed and len(spare) == len(rest))):
        # Every error is placed and the results left over are as many as the inputs left over
        # (or HubSpot said COMPLETE): each of those inputs was applied.
        applied.update(_pair_leftovers(rest, spare))
    elif rest and not spare and len(unattributed) == len(rest):
        # As many unplaced errors as unplaced inputs, and every result placed: all of them failed.
        failed.update(zip(rest, unattributed, strict=True))
    outcomes: list[InputOutcome] = []
    for i in range(len(inputs)):
        if i in failed:
            outcomes.append(InputOutcome(i, "failed", error=failed[i]))
        elif i in applied:
            outcomes.append(InputOutcome(i, "applied", result=applied[i]))
        else:
            outcomes.append(InputOutcome(i, "unknown"))
    return outcomes


def _pair_leftovers(
    rest: list[int], spare: list[Mapping[str, Any]]
) -> dict[int, Mapping[str, Any] | None]:
    """Inputs a COMPLETE answer applied without naming them; one left of each pairs up."""
    if len(rest) == 1 and len(spare) == 1:
        return {rest[0]: spare[0]}
    return dict.fromkeys(rest)


# -- errors ---------------------------------------------------------------------------------------


def _attribute_errors(
    operation: Operation, inputs: Sequence[Mapping[str, Any]], errors: list[Mapping[str, Any]]
) -> tuple[dict[int, Mapping[str, Any]], list[Mapping[str, Any]]]:
    failed: dict[int, Mapping[str, Any]] = {}
    unattributed: list[Mapping[str, Any]] = []
    for error in errors:
        hits = _error_hits(operation, inputs, error)
        if not hits:
            unattributed.append(error)
        for hit in hits:
            failed.setdefault(hit, error)
    return failed, unattributed


def _error_hits(
    operation: Operation, inputs: Sequence[Mapping[str, Any]], error: Mapping[str, Any]
) -> list[int]:
    context = error.get("context")
    context = context if isinstance(context, Mapping) else {}
    traces = {str(t) for t in _as_list(context.get("objectWriteTraceId"))}
    hits = [i for i, one in enumerate(inputs) if _trace(one) in traces]
    if hits or operation == "create":
        return hits
    names = _error_names(operation, context)
    hits = [i for i, one in enumerate(inputs) if _input_names(operation, one) & names]
    if hits:
        return hits
    quoted = set(re.findall(r"\d+", str(error.get("message") or "")))
    return [i for i, one in enumerate(inputs) if _input_ids(operation, one) & quoted]


def _error_names(operation: Operation, context: Mapping[str, Any]) -> set[str]:
    if operation == "associate":
        froms = _as_list(context.get("fromObjectId"))
        tos = _as_list(context.get("toObjectId"))
        return {f"{a}>{b}" for a, b in zip(froms, tos, strict=False)}
    return {str(i) for i in _as_list(context.get("ids"))}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return list(value)
    return [] if value is None else [value]


# -- results --------------------------------------------------------------------------------------


def _attribute_results(
    operation: Operation,
    inputs: Sequence[Mapping[str, Any]],
    results: list[Mapping[str, Any]],
    taken: set[int],
) -> tuple[dict[int, Mapping[str, Any] | None], list[Mapping[str, Any]]]:
    """Results placed on inputs (by trace id, then by content), and the results left over."""
    applied: dict[int, Mapping[str, Any] | None] = {}
    by_trace = {_trace(one): i for i, one in enumerate(inputs) if _trace(one)}
    spare: list[Mapping[str, Any]] = []
    for result in results:
        hit = by_trace.get(str(result.get("objectWriteTraceId") or ""))
        if hit is not None and hit not in taken and hit not in applied:
            applied[hit] = result
        else:
            spare.append(result)
    matches = _MATCHERS[operation]
    # Inputs naming more properties first: an input whose properties are a subset of another's
    # would otherwise take the other's result.
    order = sorted(
        (i for i in range(len(inputs)) if i not in taken and i not in applied),
        key=lambda i: -len(_properties(inputs[i])),
    )
    for i in order:
        for n, result in enumerate(spare):
            if matches(inputs[i], result):
                applied[i] = spare.pop(n)
                break
    return applied, spare


def _trace(one: Mapping[str, Any]) -> str:
    return str(one.get("objectWriteTraceId") or "")


def _properties(one: Mapping[str, Any]) -> Mapping[str, Any]:
    props = one.get("properties")
    return props if isinstance(props, Mapping) else {}


def normalised(value: Any) -> str:
    """A property value as HubSpot hands it back: every value is a string."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def instant(value: Any) -> float | None:
    """Numbers as numbers, dates (ISO or epoch ms) as epoch ms; None for anything else."""
    if value is None:
        return None
    raw = normalised(value).strip()
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # HubSpot's dates without a zone are UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


def same_value(submitted: Any, returned: Any) -> bool:
    """HubSpot hands back strings, and dates sent as epoch ms come back as ISO text."""
    a, b = normalised(submitted).strip(), normalised(returned).strip()
    if a == b:
        return True
    x = instant(a)
    return x is not None and x == instant(b)


def properties_match(submitted: Mapping[str, Any], returned: Mapping[str, Any]) -> bool:
    """Every submitted property came back with its value (HubSpot adds its own, e.g. createdate)."""
    return all(same_value(v, returned.get(k)) for k, v in submitted.items())


def _content_match(one: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    return properties_match(_properties(one), _properties(result))


def _upsert_match(one: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    returned = _properties(result)
    id_property = one.get("idProperty")
    if id_property and not same_value(one.get("id"), returned.get(str(id_property))):
        return False
    return properties_match(_properties(one), returned)


def _id_match(one: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    return one.get("id") is not None and str(one.get("id")) == str(result.get("id"))


def _pair_match(one: Mapping[str, Any], result: Mapping[str, Any]) -> bool:
    return bool(_input_names("associate", one) & _result_pairs(result))


_MATCHERS: dict[Operation, Callable[[Mapping[str, Any], Mapping[str, Any]], bool]] = {
    "create": _content_match,
    "upsert": _upsert_match,
    "update": _id_match,
    "read": _id_match,
    "archive": _id_match,
    "associate": _pair_match,
}


# -- association and id names ---------------------------------------------------------------------


def _side_id(value: Any) -> str:
    return str(value.get("id", "")) if isinstance(value, Mapping) else str(value or "")


def _input_names(operation: Operation, one: Mapping[str, Any]) -> set[str]:
    if operation == "associate":
        a, b = _side_id(one.get("from")), _side_id(one.get("to"))
        return {f"{a}>{b}"}
    return {str(one["id"])} if one.get("id") is not None else set()


def _input_ids(operation: Operation, one: Mapping[str, Any]) -> set[str]:
    if operation == "associate":
        return {_side_id(one.get("from")), _side_id(one.get("to"))} - {""}
    return _input_names(operation, one)


def _result_pairs(result: Mapping[str, Any]) -> set[str]:
    """Both directions: HubSpot reports a default association from each side."""
    if "fromObjectId" in result:  # v4 batch/create results
        a, b = str(result.get("fromObjectId")), str(result.get("toObjectId"))
    else:
        a, b = _side_id(result.get("from")), _side_id(result.get("to"))
    return {f"{a}>{b}", f"{b}>{a}"}
