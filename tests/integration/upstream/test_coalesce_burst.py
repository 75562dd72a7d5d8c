"""Coalescing under backpressure, counted at the simulator: calls waiting for budget leave as
batch calls; a lone call with budget free leaves as itself."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import aiohttp
import pytest

from tests.kit.harness import AUTH

# The window is long enough for every call of a burst to have arrived before the first slot
# frees, on a loaded machine too: then the count of batch calls does not depend on arrival speed.
pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("window_s", [4])]


async def test_a_lone_read_with_budget_free_goes_out_as_the_single_get(
    gateway: Any, world: Any
) -> None:
    [contact] = await world.seed("0-1", {"email": "a@example.com"})
    resp = await gateway.get(f"/crm/v3/objects/contacts/{contact}", headers=AUTH)
    assert resp.status == 200
    assert (await resp.json())["id"] == contact
    assert await world.calls() == [("GET", f"/crm/v3/objects/contacts/{contact}")]


@pytest.mark.parametrize("count", [150])
async def test_a_burst_of_reads_on_a_spent_budget_leaves_as_full_batch_reads(
    gateway: Any, world: Any, saturate: Any, count: int, limit: int, window_s: int
) -> None:
    ids = await world.seed("0-1", *({"email": f"c{i}@example.com"} for i in range(count)))
    await saturate()
    before = len(await world.calls())

    base = str(gateway.make_url("")).rstrip("/")
    connector = aiohttp.TCPConnector(limit=0)  # every caller at once, as many clients would be
    async with aiohttp.ClientSession(connector=connector) as session:

        async def read(object_id: str) -> tuple[int, Any]:
            url = f"{base}/crm/v3/objects/contacts/{object_id}?properties=email"
            async with session.get(url, headers=AUTH) as resp:
                return resp.status, await resp.json()

        answers = await asyncio.gather(*(read(i) for i in ids))

    assert [status for status, _ in answers] == [200] * count
    assert [body["id"] for _, body in answers] == ids
    assert [body["properties"]["email"] for _, body in answers] == [
        f"c{i}@example.com" for i in range(count)
    ]
    timed = await world.timed_calls()
    spent_at, burst = timed[before - limit][0], timed[before:]
    # A call may leave alone only if it found budget free: on a machine stalled for a whole
    # window the budget frees before the burst arrives. Every call that waited rode a batch.
    alone = [(t, path) for t, method, path in burst if method == "GET"]
    assert all(t >= spent_at + window_s for t, _ in alone), (spent_at, alone)
    batches = math.ceil((count - len(alone)) / 100)
    batch_read = ("POST", "/crm/v3/objects/contacts/batch/read")
    assert [(m, p) for _, m, p in burst if m == "POST"] == [batch_read] * batches
    assert await world.rate_limited() == 0
    metrics = await (await gateway.get("/metrics")).text()
    saved = count - len(alone) - batches
    assert f'hubspot_proxy_coalesce_calls_saved_total{{operation="read"}} {saved}.0' in metrics
    assert f'hubspot_proxy_coalesced_batch_size_count{{operation="read"}} {batches}.0' in metrics
    held = metrics.split('hubspot_proxy_coalesce_hold_seconds_count{operation="read"} ')[1]
    assert float(held.split()[0]) >= count  # the warm-up's grouped calls count too


async def test_a_lone_create_with_budget_free_goes_out_as_the_single_post(
    gateway: Any, world: Any
) -> None:
    resp = await gateway.post(
        "/crm/v3/objects/companies", json={"properties": {"name": "solo"}}, headers=AUTH
    )
    assert resp.status == 201
    assert await world.calls() == [("POST", "/crm/v3/objects/companies")]


async def test_creates_hubspot_failed_after_applying_are_never_sent_again(
    gateway: Any, world: Any, saturate: Any
) -> None:
    await saturate()
    await world.configure(fault_5xx_after_rate=1.0)
    before = len(await world.calls())

    async def create(i: int) -> int:
        resp = await gateway.post(
            "/crm/v3/objects/companies", json={"properties": {"name": f"n{i}"}}, headers=AUTH
        )
        body = await resp.json()
        assert body["status"] == "error" and body["message"]  # HubSpot's error shape
        status: int = resp.status
        return status

    statuses = await asyncio.gather(*(create(i) for i in range(5)))

    assert all(status >= 500 for status in statuses), statuses
    assert (await world.calls())[before:] == [("POST", "/crm/v3/objects/companies/batch/create")]
    names = [o["properties"].get("name") for o in await world.objects("0-2")]
    assert sorted(n for n in names if n != "warm-up") == [f"n{i}" for i in range(5)]


@pytest.mark.parametrize("max_wait_ms", [100, 8000])
async def test_a_call_that_may_wait_less_than_its_group_rides_with_it_until_its_deadline(
    gateway: Any, world: Any, saturate: Any, max_wait_ms: int
) -> None:
    """Its deadline is earlier than the group's (30 s). Past it before the slot (100 ms): its
    own 429, and the group leaves with the other call alone. Not past it (8 s; the slot comes
    within the 4 s window): it rides in the group's batch read, not in a call of its own."""
    a, b = await world.seed("0-1", {"email": "a@x.com"}, {"email": "b@x.com"})
    await saturate()
    before = len(await world.calls())
    patient = asyncio.ensure_future(gateway.get(f"/crm/v3/objects/contacts/{a}", headers=AUTH))
    await asyncio.sleep(0.2)  # the patient call's group has asked for its slot
    sooner = await gateway.get(
        f"/crm/v3/objects/contacts/{b}",
        headers={**AUTH, "X-HubSpot-Proxy-Max-Wait-Ms": str(max_wait_ms)},
    )

    assert (await patient).status == 200
    calls = (await world.calls())[before:]
    if max_wait_ms == 100:
        assert sooner.status == 429
        assert (await sooner.json())["errorType"] == "RATE_LIMIT"
        assert int(sooner.headers["Retry-After"]) >= 1
        assert calls == [("GET", f"/crm/v3/objects/contacts/{a}")]
    else:
        assert sooner.status == 200 and (await sooner.json())["id"] == b
        assert calls == [("POST", "/crm/v3/objects/contacts/batch/read")]


async def test_a_group_whose_slot_comes_too_late_for_its_leader_rides_on_without_it(
    gateway: Any, world: Any, saturate: Any
) -> None:
    hurried_id, *patient_ids = await world.seed(
        "0-1", *({"email": f"c{i}@example.com"} for i in range(6))
    )
    await saturate()
    before = len(await world.calls())
    alone_before = _alone_lines(await (await gateway.get("/metrics")).text())
    hurried = asyncio.ensure_future(
        gateway.get(
            f"/crm/v3/objects/contacts/{hurried_id}",
            headers={**AUTH, "X-HubSpot-Proxy-Max-Wait-Ms": "300"},
        )
    )
    await asyncio.sleep(0.01)  # the hurried call leads the group; the others join its hold
    patient = [gateway.get(f"/crm/v3/objects/contacts/{i}", headers=AUTH) for i in patient_ids]
    answers = await asyncio.gather(*patient)

    assert (await hurried).status == 429
    assert [resp.status for resp in answers] == [200] * len(patient_ids)
    assert [(await resp.json())["id"] for resp in answers] == patient_ids
    # The leader's deadline was the group's; when it passed, the others did not each go alone
    # (five singles for five callers) but joined the next group: one batch read.
    assert (await world.calls())[before:] == [("POST", "/crm/v3/objects/contacts/batch/read")]
    metrics = await (await gateway.get("/metrics")).text()
    regrouped = f'hubspot_proxy_coalesce_regrouped_total{{operation="read"}} {len(patient_ids)}.0'
    assert regrouped in metrics
    assert _alone_lines(metrics) == alone_before  # the warm-up's singles, and nothing since


def _alone_lines(metrics: str) -> list[str]:
    return [
        line for line in metrics.splitlines() if line.startswith("hubspot_proxy_coalesce_alone")
    ]


@pytest.mark.parametrize("gateway_settings", [{"read_timeout_s": 1.0}])
async def test_creates_whose_answer_never_comes_are_never_sent_again(
    gateway: Any, world: Any, saturate: Any
) -> None:
    await saturate()
    await world.configure(fault_timeout_after_rate=1.0, timeout_s=3.0)
    before = len(await world.calls())

    async def create(i: int) -> int:
        resp = await gateway.post(
            "/crm/v3/objects/companies", json={"properties": {"name": f"t{i}"}}, headers=AUTH
        )
        body = await resp.json()
        assert body["status"] == "error" and body["category"] == "GATEWAY_TIMEOUT"
        status: int = resp.status
        return status

    statuses = await asyncio.gather(*(create(i) for i in range(4)))

    assert statuses == [504] * 4
    assert (await world.calls())[before:] == [("POST", "/crm/v3/objects/companies/batch/create")]
    names = [o["properties"].get("name") for o in await world.objects("0-2")]
    assert sorted(n for n in names if n != "warm-up") == [f"t{i}" for i in range(4)]
