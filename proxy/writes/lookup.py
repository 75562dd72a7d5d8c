"""Finding records a create may already have made, before sending that create again.

Why this exists: HubSpot has no idempotency key for CRM creates, and notes take no custom
property that could carry the write id (HubSpot rejects unknown properties, and notes have no
unique `idProperty` for batch/upsert). `objectWriteTraceId` is echoed in the answer only, never
stored. So a create whose answer was lost (the worker crashed after sending, or the call timed
out or got a 5xx) is resolved by asking HubSpot what exists:

1. Before sending creates, the worker marks each write `sending` (time stamped) in its status.
2. A write found `sending` when it is picked up again may exist in HubSpot. The worker searches
   its object type for records modified since the mark (minus a clock-skew margin) and, for notes,
   with `hs_timestamp` among the writes' own timestamps, and pairs records with writes whose every
   property matches (dates compared as instants, numbers as numbers).
3. Records already recorded as made by another write (`...:created:<type>:<id>`) are skipped, and
   each record pairs with one write at most, so two identical notes stay two notes.
4. A write with a match is recorded as sent with that record; the others are sent again.

The replay waits `lookup_delay_s` after the mark, since HubSpot indexes new records for search
"after a few moments"; a claimed entry has been idle for the claim timeout (30 s) anyway. What
remains is at-least-once: a duplicate note only if HubSpot's index lags by more than that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import orjson

from proxy.hubspot.batch_results import instant, normalised, properties_match
from proxy.hubspot.urls import api_path
from proxy.writes.model import WriteItem
from proxy.writes.store import WriteStore

SKEW_MS: Final = 120_000  # replica clocks vs HubSpot's, generously
PAGE: Final = 200  # HubSpot's search page limit
MAX_PAGES: Final = 5
MAX_BODY_CHARS: Final = 2800  # HubSpot refuses search bodies over 3,000 characters
TIMESTAMP: Final = "hs_timestamp"

# (method, path, body) -> (status, parsed JSON body)
CallJson = Callable[[str, str, bytes], Awaitable[tuple[int, Any]]]


class LookupFailed(Exception):
    """HubSpot could not be asked; the writes stay in flight and are looked up again later."""


async def find_created(
    call: CallJson,
    store: WriteStore,
    object_type: str,
    in_flight: Sequence[tuple[WriteItem, int]],
) -> dict[str, Mapping[str, Any]]:
    """write id -> the record HubSpot already holds for it, for writes marked `sending` at ms."""
    found: dict[str, Mapping[str, Any]] = {}
    for chunk in _chunks(in_flight):
        candidates = await _search(call, object_type, chunk)
        owners = await store.creators(object_type, [str(c.get("id")) for c in candidates])
        found.update(_pair(chunk, candidates, owners))
    return found


def _chunks(in_flight: Sequence[tuple[WriteItem, int]]) -> list[list[tuple[WriteItem, int]]]:
    """Groups small enough for one search body each."""
    chunks: list[list[tuple[WriteItem, int]]] = [[]]
    for entry in in_flight:
        trial = [*chunks[-1], entry]
        if chunks[-1] and len(orjson.dumps(_search_body(trial, None))) > MAX_BODY_CHARS:
            chunks.append([entry])
        else:
            chunks[-1] = trial
    return [c for c in chunks if c]


def _filters(chunk: Sequence[tuple[WriteItem, int]]) -> list[dict[str, Any]]:
    """A rule's unique property names the records exactly; else the time sent (and, for notes,
    their timestamps) narrows the search, and pairing checks every property."""
    uniques = {item.request.unique_property for item, _ in chunk}
    if len(uniques) == 1 and (unique := uniques.pop()) is not None:
        values = sorted({normalised(item.request.properties.get(unique)) for item, _ in chunk})
        return [{"propertyName": unique, "operator": "IN", "values": values}]
    since = min(ms for _, ms in chunk) - SKEW_MS
    filters: list[dict[str, Any]] = [
        {"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(since)}
    ]
    stamps = [item.request.properties.get(TIMESTAMP) for item, _ in chunk]
    if all(s is not None for s in stamps):
        values = sorted({_instant_text(s) for s in stamps})
        filters.append({"propertyName": TIMESTAMP, "operator": "IN", "values": values})
    return filters


def _search_body(chunk: Sequence[tuple[WriteItem, int]], after: str | None) -> dict[str, Any]:
    filters = _filters(chunk)
    names = sorted({name for item, _ in chunk for name in item.request.properties})
    body: dict[str, Any] = {
        "filterGroups": [{"filters": filters}],
        "properties": names,
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "limit": PAGE,
    }
    if after is not None:
        body["after"] = after
    return body


async def _search(
    call: CallJson, object_type: str, chunk: Sequence[tuple[WriteItem, int]]
) -> list[Mapping[str, Any]]:
    path = api_path("crm", "v3", "objects", object_type, "search")
    results: list[Mapping[str, Any]] = []
    after: str | None = None
    for _ in range(MAX_PAGES):
        status, body = await call("POST", path, orjson.dumps(_search_body(chunk, after)))
        if status != 200 or not isinstance(body, Mapping):
            raise LookupFailed(f"search answered {status}")
        results += [r for r in body.get("results") or [] if isinstance(r, Mapping)]
        after = ((body.get("paging") or {}).get("next") or {}).get("after")
        if after is None:
            return results
    # Records left unread may be these writes': "not found" would resend them (duplicates).
    raise LookupFailed(f"search matched over {MAX_PAGES * PAGE} records; looking again later")


def _pair(
    chunk: Sequence[tuple[WriteItem, int]],
    candidates: Sequence[Mapping[str, Any]],
    owners: Mapping[str, str],
) -> dict[str, Mapping[str, Any]]:
    """Each write to the earliest unclaimed record created after its mark that matches it."""
    ordered = sorted(
        candidates, key=lambda c: (instant(c.get("createdAt")) or 0.0, str(c.get("id")))
    )
    taken: set[str] = set()
    paired: dict[str, Mapping[str, Any]] = {}
    for item, since_ms in chunk:
        for cand in ordered:
            cid = str(cand.get("id"))
            owner = owners.get(cid)
            if cid in taken or (owner is not None and owner != item.write_id):
                continue
            created = instant(cand.get("createdAt"))
            if created is not None and created < since_ms - SKEW_MS:
                continue
            if properties_match(item.request.properties, cand.get("properties") or {}):
                taken.add(cid)
                paired[item.write_id] = cand
                break
    return paired


def _instant_text(value: Any) -> str:
    """A timestamp as HubSpot's search filters take it: epoch milliseconds when it parses."""
    moment = instant(value)
    return str(int(moment)) if moment is not None else normalised(value)
