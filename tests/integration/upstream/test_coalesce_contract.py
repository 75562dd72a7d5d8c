"""The same calls, single versus coalesced, against the simulator: every caller of a batch gets
the status, body and headers its single call gets from HubSpot (ids and timestamps aside), under
each of HubSpot's batch answer variants (trace ids echoed or not, results shuffled, one bad input
failing the whole batch)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from tests.kit.harness import AUTH

VARIANTS = {
    "no-trace-ids": {},
    "trace-ids": {"echo_trace_ids": True},
    "shuffled": {"shuffle_batch_results": True, "seed": 7},
    "whole-batch-400": {"reject_whole_batch": True, "shuffle_batch_results": True, "seed": 3},
}
# What differs between two records, or two moments: never part of the contract.
VOLATILE = frozenset({
    "id", "hs_object_id", "createdate", "hs_lastmodifieddate", "lastmodifieddate",
    "createdAt", "updatedAt", "startedAt", "completedAt", "correlationId",
})  # fmt: skip
MISSING = "99999999"
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("sim_options", list(VARIANTS.values()), ids=list(VARIANTS)),
]
Call = tuple[str, str, Any]


def stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


async def through_gateway(gateway: Any, calls: list[Call]) -> list[tuple[int, Any, Any]]:
    """All at once: status, JSON body and headers of each answer."""

    async def one(method: str, path: str, body: Any) -> tuple[int, Any, Any]:
        resp = await gateway.request(method, path, json=body, headers=AUTH)
        return resp.status, await resp.json(), resp.headers

    return await asyncio.gather(*(one(*call) for call in calls))


def assert_same_contract(got: tuple[int, Any, Any], single: tuple[int, Any], what: str) -> None:
    status, body, headers = got
    assert (status, stable(body)) == (single[0], stable(single[1])), what
    assert headers["Content-Type"].startswith("application/json"), what
    assert "X-HubSpot-RateLimit-Remaining" in headers, what


def batch_paths(calls: list[tuple[str, str]]) -> Counter[str]:
    return Counter(path for method, path in calls if path.endswith(("/batch/read", "/batch/update",
                   "/batch/create", "/batch/associate/default")))  # fmt: skip


async def test_reads(gateway: Any, world: Any, saturate: Any) -> None:
    a, b, c, d, e, f = await world.seed(
        "0-1", *({"email": f"{n}@example.com", "firstname": n, "lastname": "L"} for n in "abcdef")
    )
    calls: list[Call] = [
        ("GET", f"/crm/v3/objects/contacts/{a}?properties=email", None),
        ("GET", f"/crm/v3/objects/contacts/{b}?properties=firstname&properties=lastname", None),
        ("GET", f"/crm/v3/objects/contacts/{MISSING}?properties=email", None),
        ("GET", f"/crm/v3/objects/contacts/{c}", None),  # the type's default properties
        ("GET", f"/crm/v3/objects/contacts/{d}?archived=false", None),
        ("GET", f"/crm/objects/2026-03/contacts/{e}?properties=firstname,email", None),
        ("GET", f"/crm/objects/2026-03/contacts/{f}?properties=lastname", None),
    ]
    await saturate()
    before = len(await world.calls())
    answers = await through_gateway(gateway, calls)
    burst = (await world.calls())[before:]

    assert burst and all(method == "POST" for method, _ in burst), burst
    assert batch_paths(burst) == {
        "/crm/v3/objects/contacts/batch/read": 2,  # chosen properties, and the defaults
        "/crm/objects/2026-03/contacts/batch/read": 1,
    }
    for call, got in zip(calls, answers, strict=True):
        assert_same_contract(got, await world.direct(call[0], call[1]), call[1])
    assert answers[2][0] == 404


async def test_updates(gateway: Any, world: Any, saturate: Any, sim_options: Any) -> None:
    a, b = await world.seed("0-1", {"firstname": "A"}, {"firstname": "B"})
    calls: list[Call] = [
        ("PATCH", f"/crm/v3/objects/contacts/{a}", {"properties": {"firstname": "A2"}}),
        ("PATCH", f"/crm/v3/objects/contacts/{b}", {"properties": {"lastname": "B2"}}),
        ("PATCH", f"/crm/v3/objects/contacts/{MISSING}", {"properties": {"firstname": "X"}}),
    ]
    await saturate()
    before = len(await world.calls())
    answers = await through_gateway(gateway, calls)
    burst = (await world.calls())[before:]

    assert batch_paths(burst)["/crm/v3/objects/contacts/batch/update"] >= 1
    if not sim_options.get("reject_whole_batch"):
        assert burst == [("POST", "/crm/v3/objects/contacts/batch/update")]
    for (method, path, body), got in zip(calls, answers, strict=True):
        assert_same_contract(got, await world.direct(method, path, body), path)
    assert [status for status, _, _ in answers] == [200, 200, 404]


async def test_updates_of_one_record_keep_their_order(
    gateway: Any, world: Any, saturate: Any
) -> None:
    a, b = await world.seed("0-1", {"firstname": "A"}, {"firstname": "B"})
    calls: list[Call] = [
        ("PATCH", f"/crm/v3/objects/contacts/{a}", {"properties": {"firstname": "one"}}),
        ("PATCH", f"/crm/v3/objects/contacts/{b}", {"properties": {"firstname": "one"}}),
        ("PATCH", f"/crm/v3/objects/contacts/{a}", {"properties": {"firstname": "two"}}),
    ]
    await saturate()
    answers = await through_gateway(gateway, calls)

    assert [status for status, _, _ in answers] == [200, 200, 200]
    assert [body["properties"]["firstname"] for _, body, _ in answers] == ["one", "one", "two"]
    _, final = await world.direct("GET", f"/crm/v3/objects/contacts/{a}?properties=firstname")
    assert final["properties"]["firstname"] == "two"


async def test_creates(gateway: Any, world: Any, saturate: Any, sim_options: Any) -> None:
    link = [{"to": {"id": MISSING}, "types": [
        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]  # fmt: skip
    calls: list[Call] = [
        ("POST", "/crm/v3/objects/companies", {"properties": {"name": f"co{i}"}}) for i in range(3)
    ]
    calls.insert(1, ("POST", "/crm/v3/objects/companies", {
        "properties": {"name": "bad"}, "associations": link}))  # fmt: skip
    await saturate()
    before = len(await world.calls())
    answers = await through_gateway(gateway, calls)
    burst = (await world.calls())[before:]

    assert [status for status, _, _ in answers] == [201, 400, 201, 201]
    assert batch_paths(burst)["/crm/v3/objects/companies/batch/create"] >= 1
    if sim_options.get("reject_whole_batch"):  # halves, then each input of the bad half alone
        assert Counter(burst) == {
            ("POST", "/crm/v3/objects/companies/batch/create"): 3,
            ("POST", "/crm/v3/objects/companies"): 2,
        }
    else:  # the bad input's own 400 comes from its single call
        assert Counter(burst) == {
            ("POST", "/crm/v3/objects/companies/batch/create"): 1,
            ("POST", "/crm/v3/objects/companies"): 1,
        }
    names = [body["properties"]["name"] for status, body, _ in answers if status == 201]
    assert names == ["co0", "co1", "co2"]
    created = [o for o in await world.objects("0-2") if o["properties"].get("name", "")[:2] == "co"]
    assert sorted(o["id"] for o in created) == sorted(
        body["id"] for status, body, _ in answers if status == 201
    )
    for (method, path, body), got in zip(calls, answers, strict=True):
        assert_same_contract(got, await world.direct(method, path, body), str(body))


async def test_default_associations(gateway: Any, world: Any, saturate: Any) -> None:
    c1, c2 = await world.seed("0-1", {"firstname": "A"}, {"firstname": "B"})
    k1, k2 = await world.seed("0-2", {"name": "X"}, {"name": "Y"})
    base, dated = "/crm/v4/objects/contacts", "/crm/objects/2026-03/contacts"
    calls: list[Call] = [
        ("PUT", f"{base}/{c1}/associations/default/companies/{k1}", None),
        ("PUT", f"{base}/{c2}/associations/default/companies/{k2}", None),
        ("PUT", f"{base}/{MISSING}/associations/default/companies/{k2}", None),
        ("PUT", f"{dated}/{c1}/associations/default/companies/{k2}", None),
        ("PUT", f"{dated}/{c2}/associations/default/companies/{k1}", None),
    ]
    await saturate()
    before = len(await world.calls())
    answers = await through_gateway(gateway, calls)
    burst = (await world.calls())[before:]

    assert Counter(burst) == {
        ("POST", "/crm/v4/associations/contacts/companies/batch/associate/default"): 1,
        ("PUT", calls[2][1]): 1,  # the pair HubSpot refused: its own 404 from its single call
        ("POST", "/crm/associations/2026-03/contacts/companies/batch/associate/default"): 1,
    }
    assert [status for status, _, _ in answers] == [200, 200, 404, 200, 200]
    for (method, path, _), got in zip(calls, answers, strict=True):
        assert_same_contract(got, await world.direct(method, path), path)
