"""`/__sim/*` on the simulator: stats, reset, config, faults, latency, gzip, echo, large, slow."""

from __future__ import annotations

import base64
import gzip

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hubspot_sim import SimConfig, token_hash
from hubspot_sim.fixtures_api import large_body
from hubspot_sim.testing import SimServer
from tests.kit.clock import ManualClock
from tests.kit.sim_client import MakeSim

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]
TOKEN = "sim-introspection-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OBJECTS = "/crm/v3/objects/2-50158913"


async def test_stats_show_tokens_only_as_hashes(make_sim: MakeSim) -> None:
    client = await make_sim()
    await client.post(OBJECTS, headers=AUTH, json={"properties": {}})
    await client.get(f"{OBJECTS}/1", headers=AUTH)
    raw = await (await client.get("/__sim/stats")).text()
    assert TOKEN not in raw
    stats = await (await client.get("/__sim/stats")).json()
    mine = stats["tokens"][token_hash(TOKEN)]
    assert mine["by_status"] == {"201": 1, "404": 1}
    assert stats["totals"]["total"] == 2 and stats["objects"] == 1
    by_token = await (await client.get("/__sim/stats", params={"token": TOKEN})).json()
    by_hash = await (
        await client.get("/__sim/stats", params={"token_hash": token_hash(TOKEN)})
    ).json()
    assert by_token["by_status"] == by_hash["by_status"] == mine["by_status"]


async def test_reset_clears_data_and_counters(make_sim: MakeSim) -> None:
    client = await make_sim(general_limit=1)
    await client.post(OBJECTS, headers=AUTH, json={"properties": {}})
    assert (await client.get(OBJECTS, headers=AUTH)).status == 429
    assert (await client.post("/__sim/reset")).status == 200
    listed = await client.get(OBJECTS, headers=AUTH)
    assert listed.status == 200 and (await listed.json())["results"] == []
    stats = await (await client.get("/__sim/stats")).json()
    assert stats["totals"]["total"] == 1 and stats["objects"] == 0


async def test_injected_5xx_and_423_and_introspection_is_never_faulted(make_sim: MakeSim) -> None:
    client = await make_sim(fault_5xx_rate=1.0, seed=1)
    seen = {(await client.get(f"{OBJECTS}/1", headers=AUTH)).status for _ in range(20)}
    assert seen <= {502, 503, 504} and len(seen) > 1
    assert (await client.get("/__sim/stats")).status == 200
    assert (
        await client.post("/__sim/config", json={"fault_5xx_rate": 0, "fault_423_rate": 1})
    ).status == 200
    locked = await client.get(f"{OBJECTS}/1", headers=AUTH)
    assert locked.status == 423 and (await locked.json())["status"] == "error"
    stats = await (await client.get("/__sim/stats", params={"token": TOKEN})).json()
    assert stats["by_status"]["423"] == 1 and stats["window_usage"]["general"] == 21


async def fault_sequence(make_sim: MakeSim, seed: int) -> list[int]:
    client = await make_sim(fault_5xx_rate=0.3, fault_423_rate=0.2, seed=seed)
    return [(await client.get(f"{OBJECTS}/1", headers=AUTH)).status for _ in range(30)]


async def test_faults_are_deterministic_per_seed(make_sim: MakeSim) -> None:
    first = await fault_sequence(make_sim, 7)
    assert first == await fault_sequence(make_sim, 7)
    assert first != await fault_sequence(make_sim, 8)
    assert {404, 423} <= set(first) and set(first) & {502, 503, 504}


async def test_timeout_fault_sleeps_then_completes(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, fault_timeout_rate=1.0, timeout_s=0.2)
    resp = await client.post(OBJECTS, headers=AUTH, json={"properties": {}})
    assert resp.status == 201 and clock.slept == [0.2]
    waiting = await make_sim(fault_timeout_rate=1.0, timeout_s=0.2)  # sleeps for real
    with pytest.raises(TimeoutError):
        await waiting.post(
            OBJECTS, headers=AUTH, json={}, timeout=aiohttp.ClientTimeout(total=0.05)
        )


async def test_latency_range_applies_to_hubspot_paths_only(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, latency_ms=(60, 80), seed=3)
    await client.get(f"{OBJECTS}/1", headers=AUTH)
    [latency] = clock.slept
    assert 0.06 <= latency <= 0.08
    await client.get("/__sim/stats")
    assert clock.slept == [latency]
    config = await (await client.get("/__sim/config")).json()
    assert config["latency_ms"] == [60.0, 80.0]
    bad = await client.post("/__sim/config", json={"latency_ms": [5, 1]})
    assert bad.status == 400


async def test_gzip_for_large_bodies_when_accepted(make_sim: MakeSim) -> None:
    client = await make_sim()
    objects = [{"type": "2-1", "properties": {"n": i}} for i in range(30)]
    await client.post("/__sim/seed", json={"objects": objects})
    path = "/crm/v3/objects/2-1?limit=30"
    zipped = await client.get(
        path, headers={**AUTH, "Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(gzip.decompress(await zipped.read())) > 1024
    plain = await client.get(
        path, headers={**AUTH, "Accept-Encoding": "identity"}, auto_decompress=False
    )
    assert "Content-Encoding" not in plain.headers
    small = await client.get(
        f"{OBJECTS}/1", headers={**AUTH, "Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert "Content-Encoding" not in small.headers


async def test_echo_reports_exactly_what_it_received(make_sim: MakeSim) -> None:
    client = await make_sim()
    payload = bytes(range(256))
    resp = await client.patch(
        "/__sim/echo/crm/v3/x%2Fy?b=2&a=1&a=3&status=207&set_header=X-Test:%20yes",
        data=payload,
        headers={"X-Custom": "v1", "Content-Type": "application/octet-stream"},
    )
    assert resp.status == 207 and resp.headers["X-Test"] == "yes"
    body = await resp.json()
    assert body["method"] == "PATCH"
    assert body["raw_path"].startswith("/__sim/echo/crm/v3/x%2Fy?b=2&a=1&a=3")
    assert ["a", "3"] in body["query"] and ["b", "2"] in body["query"]
    assert ["X-Custom", "v1"] in body["headers"]
    assert base64.b64decode(body["body_b64"]) == payload and body["body_length"] == 256
    text = await (await client.post("/__sim/echo", data="héllo")).json()
    assert text["body_text"] == "héllo"


async def test_large_streams_exact_bytes_in_chunks(make_sim: MakeSim) -> None:
    client = await make_sim()
    resp = await client.get("/__sim/large", params={"bytes": "300000", "chunk": "65536"})
    assert resp.headers.get("Transfer-Encoding") == "chunked"
    assert await resp.read() == large_body(300_000)
    zipped = await client.get(
        "/__sim/large?bytes=5000", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
    )
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == large_body(5000)


async def test_slow_endpoint(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock)
    resp = await client.get("/__sim/slow", params={"ms": "150"})
    assert (await resp.json()) == {"slept_ms": 150.0}
    assert clock.slept == [0.15]


async def test_sim_server_on_a_real_port() -> None:
    async with SimServer(SimConfig(general_limit=1)) as sim, aiohttp.ClientSession() as session:
        async with session.get(f"{sim.url}/crm/v3/objects/contacts", headers=AUTH) as resp:
            assert resp.status == 200
        async with session.get(f"{sim.url}/crm/v3/objects/contacts", headers=AUTH) as resp:
            assert resp.status == 429
        assert sim.token_stats(TOKEN)["rate_limited"] == {"TEN_SECONDLY_ROLLING": 1}
