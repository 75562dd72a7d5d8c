"""Coalescing single writes into HubSpot batch calls, and reading each write's fate back (pure).

- Notes and other creates go to `POST /crm/v3/objects/{type}/batch/create`, one input per write,
  its `objectWriteTraceId` being the write id, so per-item errors of a 207 map back to the write.
- Default associations go to `POST /crm/v4/associations/{from}/{to}/batch/associate/default`;
  the same pair written twice is one input (associating is idempotent).
- Updates go to `POST /crm/v3/objects/{type}/batch/update`. HubSpot refuses the same id twice in
  one batch, so consecutive updates of one object become one input: their properties merged in
  stream order, the last write winning per property.

At most `max_inputs` (HubSpot: 100) inputs per call. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from proxy.hubspot.batch_results import InputOutcome, Operation, map_batch_answer
from proxy.hubspot.protocol import canonical_object_type, dumps_exact
from proxy.hubspot.urls import api_path
from proxy.writes.model import OP_ASSOCIATE, OP_CREATE, OP_UPDATE, WriteItem, entry_sort_key

MAX_INPUTS: Final = 100
# A 4xx naming the whole batch: some input is bad, so halves are tried to find it.
SPLITTABLE: Final = frozenset({400, 409, 413, 422})
# A 4xx that no input can fix (the batch endpoint itself is wrong for these writes).
HOPELESS: Final = frozenset({404, 405, 410})
# Per-item categories that say "try later" rather than "this input is wrong".
TRANSIENT_CATEGORIES: Final = frozenset(
    {"RATE_LIMIT", "RATE_LIMITS", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE", "LOCKED", "TIMEOUT"}
)


@dataclass(frozen=True)
class Unit:
    """One input of a batch call and the writes it carries (more than one only when merged)."""

    items: tuple[WriteItem, ...]
    payload: Mapping[str, Any]
    refs: tuple[str, ...]  # names HubSpot may use for this input: trace id, record id, pair


@dataclass(frozen=True)
class Batch:
    credential: str
    op: str
    object_type: str  # as the first write spelled it (HubSpot takes names and ids alike)
    to_type: str | None
    units: tuple[Unit, ...]

    @property
    def path(self) -> str:
        if self.op == OP_ASSOCIATE:
            pair = (self.object_type, self.to_type or "")
            return api_path("crm", "v4", "associations", *pair, "batch", "associate", "default")
        return api_path("crm", "v3", "objects", self.object_type, "batch", self.op)

    @property
    def items(self) -> tuple[WriteItem, ...]:
        return tuple(item for unit in self.units for item in unit.items)

    def body(self) -> bytes:
        return dumps_exact({"inputs": [dict(u.payload) for u in self.units]})

    def halves(self) -> tuple[Batch, Batch]:
        mid = len(self.units) // 2
        return self.with_units(self.units[:mid]), self.with_units(self.units[mid:])

    def with_units(self, units: Sequence[Unit]) -> Batch:
        return Batch(self.credential, self.op, self.object_type, self.to_type, tuple(units))


def _group_key(item: WriteItem) -> tuple[str, ...]:
    req = item.request
    key = (item.credential, item.op, canonical_object_type(req.object_type))
    if item.op == OP_ASSOCIATE:
        return (*key, canonical_object_type(req.to_type or ""))
    return key


def plan(
    items: Iterable[WriteItem],
    *,
    max_inputs: int = MAX_INPUTS,
    solo_keys: frozenset[str] = frozenset(),
) -> list[Batch]:
    """Batches for `items`, in stream order; writes of a key in `solo_keys` are not merged.

    For a solo key only its earliest write is planned: a merged input HubSpot refused must be
    retried one write at a time, in order, to find the write at fault.
    """
    groups: dict[tuple[str, ...], list[WriteItem]] = {}
    for item in _sendable_now(items, solo_keys):
        groups.setdefault(_group_key(item), []).append(item)
    batches: list[Batch] = []
    for members in groups.values():
        units = _units(members)
        first = members[0]
        for start in range(0, len(units), max_inputs):
            chunk = tuple(units[start : start + max_inputs])
            batches.append(
                Batch(
                    first.credential,
                    first.op,
                    first.request.object_type,
                    first.request.to_type,
                    chunk,
                )
            )
    return batches


def _sendable_now(items: Iterable[WriteItem], solo_keys: frozenset[str]) -> list[WriteItem]:
    """`items` in stream order, less the writes that must wait for an earlier one of their key.

    A key's writes go out together only while they share the first one's credential: writes of
    one record under two credentials land in two batches, which must not overtake each other.
    """
    kept: list[WriteItem] = []
    heads: dict[str, WriteItem] = {}
    stopped: set[str] = set()
    for item in sorted(items, key=lambda i: entry_sort_key(i.entry_id)):
        key = item.order_key
        if key is None:
            kept.append(item)
            continue
        head = heads.setdefault(key, item)
        if key in stopped or (
            head is not item and (key in solo_keys or head.credential != item.credential)
        ):
            stopped.add(key)
            continue
        kept.append(item)
    return kept


def _units(members: list[WriteItem]) -> list[Unit]:
    op = members[0].op
    if op == OP_CREATE:
        return [_create_unit(item) for item in members]
    by_ref: dict[str, list[WriteItem]] = {}
    for item in members:
        ref = item.order_key if op == OP_UPDATE else _pair_ref(item)
        assert ref is not None  # updates always have an order key
        by_ref.setdefault(ref, []).append(item)
    if op == OP_UPDATE:
        return [_update_unit(group) for group in by_ref.values()]
    return [_association_unit(group) for group in by_ref.values()]


def _create_unit(item: WriteItem) -> Unit:
    payload: dict[str, Any] = {
        "properties": dict(item.request.properties),
        "objectWriteTraceId": item.write_id,
    }
    if item.request.associations:
        payload["associations"] = list(item.request.associations)
    return Unit((item,), payload, (item.write_id,))


def merge_properties(items: Sequence[WriteItem]) -> dict[str, Any]:
    """Last write wins, per property, in the order given (stream order)."""
    merged: dict[str, Any] = {}
    for item in items:
        merged.update(item.request.properties)
    return merged


def _update_unit(group: list[WriteItem]) -> Unit:
    first = group[0]
    object_id = str(first.request.object_id)
    payload = {
        "id": object_id,
        "properties": merge_properties(group),
        "objectWriteTraceId": first.write_id,
    }
    return Unit(tuple(group), payload, (first.write_id, object_id))


def _pair_ref(item: WriteItem) -> str:
    return f"{item.request.object_id}>{item.request.to_id}"


def _association_unit(group: list[WriteItem]) -> Unit:
    req = group[0].request
    payload = {"from": {"id": str(req.object_id)}, "to": {"id": str(req.to_id)}}
    return Unit(tuple(group), payload, (_pair_ref(group[0]),))


# -- reading the answer ---------------------------------------------------------------------------

Fate = Literal["sent", "rejected", "retry"]


@dataclass(frozen=True)
class Outcome:
    """What happened to one input. `maybe_applied`: the call may have landed (5xx, timeout)."""

    fate: Fate
    result: Any = None
    error: str = ""
    maybe_applied: bool = False


@dataclass(frozen=True)
class Split:
    """HubSpot refused the batch as a whole; send its halves to find the bad input."""

    error: str


Verdict = Split | list[Outcome]  # one Outcome per unit, in unit order


def describe_error(status: int, body: Any) -> str:
    if isinstance(body, Mapping):
        category = body.get("category") or body.get("errorType") or ""
        message = body.get("message") or ""
        return f"{status} {category}: {message}".strip()
    return f"HTTP {status}"


def judge(batch: Batch, status: int, body: Any) -> Verdict:
    """Each input's outcome from HubSpot's answer to `batch` (status 0: no answer came)."""
    if status in SPLITTABLE:
        if len(batch.units) > 1:
            return Split(describe_error(status, body))
    elif status in HOPELESS:
        return [Outcome("rejected", error=describe_error(status, body))] * len(batch.units)
    elif 400 <= status < 500:
        # 401/403/423/429 and the like: HubSpot applied nothing, and later it may.
        return [Outcome("retry", error=describe_error(status, body))] * len(batch.units)
    operation = cast(Operation, batch.op)
    mapped = map_batch_answer(operation, [u.payload for u in batch.units], status, body)
    unknown = [m for m in mapped if m.state == "unknown"]
    if unknown and status == 207 and batch.op != OP_CREATE and len(unknown) > 1:
        # An error nobody can be blamed for: halving tells whose it is (resending is harmless).
        return Split(describe_error(status, body))
    results = (body.get("results") if isinstance(body, Mapping) else None) or []
    by_ref = _results_by_ref(results) if batch.op == OP_ASSOCIATE else {}
    return [_outcome(batch, m, status, body, results, by_ref) for m in mapped]


def _outcome(
    batch: Batch,
    mapped: InputOutcome,
    status: int,
    body: Any,
    results: Sequence[Any],
    by_ref: Mapping[str, list[int]],
) -> Outcome:
    if mapped.state == "applied":
        if batch.op == OP_ASSOCIATE:
            unit = batch.units[mapped.index]
            positions = sorted({n for ref in unit.refs for n in by_ref.get(ref, ())})
            return Outcome("sent", result=[results[n] for n in positions])
        return Outcome("sent", result=mapped.result)
    if mapped.state == "failed":
        error = mapped.error or {}
        category = str(error.get("category") or "")
        text = f"{category}: {error.get('message') or ''}".strip()
        if status < 300:
            return Outcome("retry" if category in TRANSIENT_CATEGORIES else "rejected", error=text)
        return Outcome("rejected", error=describe_error(status, error))
    # 5xx, no answer, or an answer that does not say: the input may have been applied.
    why = describe_error(status, body) if status else "no answer from HubSpot"
    return Outcome("retry", error=why, maybe_applied=True)


def _results_by_ref(results: Sequence[Any]) -> dict[str, list[int]]:
    """Where each association (either direction) is in HubSpot's results: a unit's results are
    both directions HubSpot reports for it (for learning type ids), found once per batch rather
    than by scanning every result for every unit (100 x 200 per batch)."""
    found: dict[str, list[int]] = {}
    for n, result in enumerate(results):
        if isinstance(result, Mapping):
            for ref in _both_directions(result):
                found.setdefault(ref, []).append(n)
    return found


def _both_directions(result: Mapping[str, Any]) -> list[str]:
    a = str((result.get("from") or {}).get("id", ""))
    b = str((result.get("to") or {}).get("id", ""))
    return [f"{a}>{b}", f"{b}>{a}"]
