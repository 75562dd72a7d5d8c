"""Which objects a HubSpot call touched, read from its path, body and answer (pure).

Single and batch endpoints spell the same facts differently (`objectId` in the path, `inputs`
in the body, `results` in the answer); the rules runtime asks here instead of knowing each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from proxy.reads.index_entries import Record, text


def answered_objects(answer: Any) -> list[dict[str, Any]]:
    """Objects in an answer: the object itself, or `results` of a batch or a search."""
    if not isinstance(answer, dict):
        return []
    if isinstance(answer.get("results"), list):
        return [o for o in answer["results"] if isinstance(o, dict) and "properties" in o]
    return [answer] if "id" in answer and isinstance(answer.get("properties"), dict) else []


def input_properties(body: Any, object_id: str | None) -> dict[str, dict[str, Any]]:
    """{id: properties written} for a PATCH (`object_id` from the path) or a batch update."""
    found: dict[str, dict[str, Any]] = {}
    if object_id is not None and isinstance(body, dict):
        props = body.get("properties")
        if isinstance(props, dict):
            found[object_id] = props
    for item in _inputs(body):
        props, oid = item.get("properties"), text(item.get("id"))
        if oid and isinstance(props, dict):
            found[oid] = props
    return found


def written_records(
    answer: Any, body: Any, object_id: str | None = None, *, create: bool = False
) -> list[Record]:
    """Records as they are after a create or update: the answer, completed by what was written."""
    written = input_properties(body, object_id)
    if create and isinstance(body, dict):
        created = [body] if isinstance(body.get("properties"), dict) else list(_inputs(body))
        created_props = [c.get("properties") for c in created]
    else:
        created_props = []
    records: list[Record] = []
    for i, obj in enumerate(answered_objects(answer)):
        record = Record.from_object(obj)
        if record is None:
            continue
        sent = written.get(record.id)
        if sent is None and i < len(created_props) and isinstance(created_props[i], dict):
            sent = created_props[i]  # batch create answers in input order (no ids to match)
        for name, value in (sent or {}).items():
            record.properties.setdefault(str(name), text(value))
        records.append(record)
    return records


def deleted_ids(body: Any, object_id: str | None) -> list[str]:
    """Objects a DELETE, batch archive or merge removes."""
    if object_id is not None:
        return [object_id]
    if isinstance(body, dict) and body.get("objectIdToMerge") is not None:
        merged = text(body.get("objectIdToMerge"))
        return [merged] if merged else []
    return [oid for item in _inputs(body) if (oid := text(item.get("id")))]


def association_pairs(params: Mapping[str, str], body: Any) -> list[tuple[str, str]]:
    """(from id, to id) of an association call: from the path, or each batch input."""
    if params.get("fromObjectId") and params.get("toObjectId"):
        return [(params["fromObjectId"], params["toObjectId"])]
    pairs: list[tuple[str, str]] = []
    for item in _inputs(body):
        from_id = _id_of(item.get("from"))
        targets = item.get("to")
        for target in targets if isinstance(targets, list) else [targets]:
            to_id = _id_of(target)
            if from_id and to_id:
                pairs.append((from_id, to_id))
    return pairs


def _id_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return text(value.get("id") if "id" in value else value.get("toObjectId"))
    return None


def _inputs(body: Any) -> Iterator[dict[str, Any]]:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    for item in inputs if isinstance(inputs, list) else []:
        if isinstance(item, dict):
            yield item
