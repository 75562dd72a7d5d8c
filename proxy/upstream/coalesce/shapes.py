"""The batch call of a group of compatible calls: HubSpot's input shape per operation (pure).

    read       {inputs:[{id}], properties: the union asked, propertiesWithHistory: []}
    create     {inputs:[{properties, associations?, objectWriteTraceId}]}
    update     {inputs:[{id, properties, objectWriteTraceId}]}   an id at most once
    associate  {inputs:[{from:{id}, to:{id}}]}

Each create and update input carries its position as `objectWriteTraceId`, so results and
errors can be mapped back when HubSpot echoes it (mapping never depends on it: see `split`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from proxy.upstream.coalesce.calls import BatchableCall


def batch_body(calls: Sequence[BatchableCall]) -> bytes:
    operation = calls[0].operation
    if operation == "read":
        return orjson.dumps(_read_body(calls))
    inputs: list[dict[str, Any]]
    if operation == "associate":
        pairs = dict.fromkeys((c.object_id, c.to_id) for c in calls)  # associating is idempotent
        inputs = [{"from": {"id": a}, "to": {"id": b}} for a, b in pairs]
    elif operation == "update":
        inputs = [
            {"id": c.object_id, "properties": c.payload["properties"], "objectWriteTraceId": str(i)}
            for i, c in enumerate(calls)
        ]
    else:
        inputs = [{**c.payload, "objectWriteTraceId": str(i)} for i, c in enumerate(calls)]
    return orjson.dumps({"inputs": inputs})


def _read_body(calls: Sequence[BatchableCall]) -> dict[str, Any]:
    ids = dict.fromkeys(c.object_id for c in calls)
    union = dict.fromkeys(p for c in calls for p in c.properties or ())
    return {
        "inputs": [{"id": i} for i in ids],
        "properties": list(union),  # empty: the type's default properties, as a bare GET
        "propertiesWithHistory": [],
    }
