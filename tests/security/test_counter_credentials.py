"""Issue 13 (1, 8): the counter endpoints and the jobs behind them, against foreign tokens and
hostile object ids. Real gateway, real Valkey, the simulator as HubSpot."""

from __future__ import annotations

import secrets

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from proxy.http.credentials import credential_id
from tests.kit.harness import ADMIN, AUTH, CREDENTIAL_KEY, TOKEN, GatewayFactory
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)

EXAMS = "2-50158913"
RESERVE = "/proxy/v1/counters/mock_exams/{}/reserve"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}


async def counter_keys(redis: aioredis.Redis) -> list[bytes]:
    return [k async for k in redis.scan_iter(match="hubspot:{*}:ctr*")]


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_a_token_hubspot_refuses_creates_no_counter_state(
    strict_sim: Sim, gateway_factory: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    gw = await gateway_factory(strict_sim.url, admin_token=ADMIN)
    (exam,) = await strict_sim.seed(EXAMS, {"capacity": "10", "total_bookings": "0"})
    made_up = {"Authorization": f"Bearer {secrets.token_hex(16)}"}
    resp = await gw.post(RESERVE.format(exam), json={"capacity": 10}, headers=made_up)
    assert resp.status == 401
    assert (await resp.json())["category"] == "INVALID_AUTHENTICATION"
    assert await counter_keys(redis_client) == []

    resp = await gw.post(RESERVE.format(exam), json={"capacity": 10}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    assert len(await counter_keys(redis_client)) >= 1
    for job in ("sync_counters", "reconcile"):
        resp = await gw.post(f"/proxy/v1/jobs/{job}/run", headers=ADMIN_AUTH)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["credentialsFailed"] == 0


async def test_one_credential_the_jobs_cannot_serve_does_not_stop_the_others(
    strict_sim: Sim, gateway_factory: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    gw = await gateway_factory(strict_sim.url, admin_token=ADMIN)
    (exam,) = await strict_sim.seed(EXAMS, {"capacity": "10", "total_bookings": "0"})
    resp = await gw.post(RESERVE.format(exam), json={"bookingId": "b1"}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    # A counter whose token the vault does not hold (left from an older version, or its token
    # expired from the vault): neither job can serve it.
    mine = credential_id(TOKEN, CREDENTIAL_KEY.encode())
    (key,) = [
        k.decode() for k in await counter_keys(redis_client) if b":ctr:" in k and k.count(b":") == 4
    ]
    await redis_client.copy(key, key.replace(mine, "0123456789abcdef"))

    resp = await gw.post("/proxy/v1/jobs/sync_counters/run", headers=ADMIN_AUTH)
    assert resp.status == 200, await resp.text()
    summary = await resp.json()
    assert (summary["countersSent"], summary["credentialsFailed"]) == (1, 1)
    (stored,) = [o for o in await strict_sim.objects(EXAMS) if o["id"] == exam]
    assert stored["properties"]["total_bookings"] == "1"  # the served credential's count

    resp = await gw.post("/proxy/v1/jobs/reconcile/run", headers=ADMIN_AUTH)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["credentialsFailed"] == 1
    metrics = await (await gw.get("/metrics")).text()
    for task in ("sync_counters", "reconcile"):
        assert sample(metrics, "hubspot_proxy_job_credential_failures_total", task=task) == 1
        assert sample(metrics, "hubspot_proxy_job_runs_total", task=task, result="ok") == 1


@pytest.mark.parametrize(
    "object_id",
    ["..%2F..%2F..%2Foauth%2Fv1%2Fx", "1%3Fx=1", "1%23x", "-1", "01", "1.0", "%2E%2E"],
)
async def test_counter_object_ids_must_be_record_ids(
    strict_sim: Sim,
    gateway_factory: GatewayFactory,
    redis_client: aioredis.Redis,
    object_id: str,
) -> None:
    gw = await gateway_factory(strict_sim.url)
    resp = await gw.post(RESERVE.format(object_id), json={"capacity": 3}, headers=AUTH)
    assert resp.status in (400, 404)
    body = await resp.json()
    assert {"status", "message", "correlationId", "category"} <= set(body)
    assert await strict_sim.calls() == []  # nothing reached HubSpot
    assert await counter_keys(redis_client) == []
