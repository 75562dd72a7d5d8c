"""The simulator's batch answer variants: HubSpot's documented ways of answering a batch call."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from hubspot_sim import SimConfig, create_app
from hubspot_sim.cli import build_arg_parser, config_from_args

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]
AUTH = {"Authorization": "Bearer sim-variants-token"}
NOTES = "/crm/v3/objects/0-46"


async def start(aiohttp_client: AiohttpClient, **config: Any) -> Client:
    app = create_app(SimConfig(general_limit=10_000, search_limit=10_000, seed=7, **config))
    client: Client = await aiohttp_client(app)
    return client


def notes(n: int, bad: int | None = None) -> dict[str, Any]:
    inputs: list[dict[str, Any]] = []
    for i in range(n):
        one: dict[str, Any] = {
            "properties": {"hs_note_body": f"n{i}"},
            "objectWriteTraceId": f"t{i}",
        }
        if i == bad:
            one["associations"] = [{"to": {"id": "999999"}, "types": [{"associationTypeId": 1}]}]
        inputs.append(one)
    return {"inputs": inputs}


async def note_count(client: Client) -> int:
    resp = await client.get("/__sim/objects/0-46")
    return len((await resp.json())["results"])


async def test_trace_ids_can_be_omitted_from_results_and_errors(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await start(aiohttp_client, echo_trace_ids=False)
    resp = await client.post(f"{NOTES}/batch/create", json=notes(3, bad=1), headers=AUTH)
    body = await resp.json()
    assert resp.status == 207 and len(body["results"]) == 2 and body["numErrors"] == 1
    assert all("objectWriteTraceId" not in r for r in body["results"])
    assert "objectWriteTraceId" not in body["errors"][0]["context"]


async def test_results_can_come_back_shuffled(aiohttp_client: AiohttpClient) -> None:
    client = await start(aiohttp_client, shuffle_batch_results=True)
    resp = await client.post(f"{NOTES}/batch/create", json=notes(20), headers=AUTH)
    body = await resp.json()
    traces = [r["objectWriteTraceId"] for r in body["results"]]
    assert resp.status == 201 and sorted(traces) == sorted(f"t{i}" for i in range(20))
    assert traces != [f"t{i}" for i in range(20)]


async def test_one_invalid_input_can_fail_the_whole_batch(aiohttp_client: AiohttpClient) -> None:
    client = await start(aiohttp_client, reject_whole_batch=True)
    resp = await client.post(f"{NOTES}/batch/create", json=notes(5, bad=3), headers=AUTH)
    body = await resp.json()
    assert resp.status == 400 and body["category"] == "VALIDATION_ERROR"
    assert body["status"] == "error" and body["message"]
    assert await note_count(client) == 0  # nothing of the batch was applied
    ok = await client.post(f"{NOTES}/batch/create", json=notes(5), headers=AUTH)
    assert ok.status == 201 and await note_count(client) == 5


async def test_a_5xx_after_applying_still_wrote_the_batch(aiohttp_client: AiohttpClient) -> None:
    client = await start(aiohttp_client, fault_5xx_after_rate=1.0)
    resp = await client.post(f"{NOTES}/batch/create", json=notes(4), headers=AUTH)
    body = await resp.json()
    assert resp.status in (502, 503, 504) and body["status"] == "error"
    assert await note_count(client) == 4


async def test_a_timeout_after_applying_still_wrote_the_batch(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await start(aiohttp_client, fault_timeout_after_rate=1.0, timeout_s=30.0)
    with pytest.raises(asyncio.TimeoutError):
        await client.post(
            f"{NOTES}/batch/create",
            json=notes(4),
            headers=AUTH,
            timeout=aiohttp.ClientTimeout(total=0.5),
        )
    assert await note_count(client) == 4


def test_every_variant_is_a_command_line_flag() -> None:
    ns = build_arg_parser().parse_args(
        [
            "--omit-trace-ids",
            "--shuffle-batch-results",
            "--reject-whole-batch",
            "--fault-5xx-after-rate",
            "0.1",
            "--fault-timeout-after-rate",
            "0.2",
            "--fault-423-rate",
            "0.3",
        ]
    )
    config = config_from_args(ns)
    assert (config.echo_trace_ids, config.shuffle_batch_results, config.reject_whole_batch) == (
        False,
        True,
        True,
    )
    assert config.fault_rates[2:] == (0.3, 0.1, 0.2)


async def test_variants_can_be_switched_on_a_running_simulator(
    aiohttp_client: AiohttpClient,
) -> None:
    client = await start(aiohttp_client)
    resp = await client.post(
        "/__sim/config", json={"echo_trace_ids": False, "reject_whole_batch": True}
    )
    assert resp.status == 200
    made = await client.post(f"{NOTES}/batch/create", json=notes(2), headers=AUTH)
    assert all("objectWriteTraceId" not in r for r in (await made.json())["results"])
