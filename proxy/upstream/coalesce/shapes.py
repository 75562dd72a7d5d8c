"""The batch call of a group of compatible calls: HubSpot's input shape per operation (pure).

    read       {inputs:[{id}], properties: the union asked, propertiesWithHistory: []}
    create     {inputs:[{properties, associations?, objectWriteTraceId}]}
    update     {inputs:[{id, properties, objectWriteTraceId}]}   an id at most once
    associate  {inputs:[{from:{id}, to:{id}}]}

Reads of one id and associations of one pair share an input. Create and update inputs carry a
trace id, which HubSpot may echo; reading the answer back never depends on it (`split`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from proxy.upstream.coalesce.calls import BatchableCall


@dataclass(frozen=True)
class BatchCall:
    inputs: list[dict[str, Any]]
    positions: list[int]  # the input of each call, in call order
    body: bytes


def batch_call(calls: Sequence[BatchableCall]) -> BatchCall:
    operation = calls[0].operation
    if operation == "create":
        inputs = [{**c.payload, "objectWriteTraceId": str(i)} for i, c in enumerate(calls)]
        return _made(inputs, list(range(len(calls))))
    if operation == "update":
        inputs = [
            {"id": c.object_id, "properties": c.payload["properties"], "objectWriteTraceId": str(i)}
            for i, c in enumerate(calls)
        ]
        return _made(inputs, list(range(len(calls))))
    if operation == "associate":
        pairs = list(dict.fromkeys((c.object_id, c.to_id) for c in calls))
        inputs = [{"from": {"id": a}, "to": {"id": b}} for a, b in pairs]
        return _made(inputs, [pairs.index((c.object_id, c.to_id)) for c in calls])
    ids = list(dict.fromkeys(c.object_id for c in calls))
    union = list(dict.fromkeys(p for c in calls for p in c.properties or ()))
    extra = {"properties": union, "propertiesWithHistory": []}  # no properties: the defaults
    return _made([{"id": i} for i in ids], [ids.index(c.object_id) for c in calls], extra)


def _made(
    inputs: list[dict[str, Any]], positions: list[int], extra: dict[str, Any] | None = None
) -> BatchCall:
    return BatchCall(inputs, positions, orjson.dumps({"inputs": inputs, **(extra or {})}))
