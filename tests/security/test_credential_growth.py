"""Issue 13 (11): made-up tokens leave no Redis keys and no metric labels; labels are bounded.

Real gateway, real Valkey, the simulator answering 401 to every token it does not know."""

from __future__ import annotations

import secrets

import pytest
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from proxy.http.credentials import credential_id
from tests.kit.harness import CREDENTIAL_KEY, TOKEN, TOKEN_B, GatewayFactory
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)

CONTACT = "/crm/v3/objects/contacts/1"
# A search the duplicate index (a rule) would answer: rules keep nothing for refused tokens either.
DUPLICATE_SEARCH = {
    "filterGroups": [{"filters": [
        {"propertyName": "contact_id", "operator": "EQ", "value": "c1"},
        {"propertyName": "exam_date", "operator": "EQ", "value": "2030-03-15"},
        {"propertyName": "is_active", "operator": "EQ", "value": "Active"},
    ]}],
    "properties": ["booking_id"],
}  # fmt: skip


OWN_TAGS = {"hubspot:{writes", "hubspot:{jobs"}


async def keys(redis: aioredis.Redis) -> set[bytes]:
    return {k async for k in redis.scan_iter()}


def credential_labels(text: str) -> set[str]:
    return {
        s.labels["credential"]
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if "credential" in s.labels
    }


def total(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_a_hundred_refused_tokens_leave_no_keys_and_no_labels(
    strict_sim: Sim, gateway_factory: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    gw = await gateway_factory(strict_sim.url)
    refused: list[str] = []
    for _ in range(100):
        token = secrets.token_hex(16)
        refused.append(credential_id(token, CREDENTIAL_KEY.encode()))
        headers = {"Authorization": f"Bearer {token}"}
        resp = await gw.get(CONTACT, headers=headers)
        assert resp.status == 401
        resp = await gw.post(
            "/crm/v3/objects/2-50158943/search", json=DUPLICATE_SEARCH, headers=headers
        )
        assert resp.status == 401
    metrics = await (await gw.get("/metrics")).text()
    # Only the gateway's own keys (the write-behind stream and its reader's lease, the jobs'),
    # whenever its background work made them; none of any credential.
    names = [key.decode() for key in await keys(redis_client)]
    assert {name.split("}")[0] for name in names} <= OWN_TAGS
    assert not [name for name in names for cred in refused if cred in name]
    assert credential_labels(metrics) == set()
    assert total(metrics, "hubspot_proxy_upstream_calls_total", status="401") == 200
    assert (await strict_sim.totals())["unauthenticated"] == 200

    resp = await gw.get(CONTACT, headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status in (200, 404)  # accepted: the token is real, whatever the object
    metrics = await (await gw.get("/metrics")).text()
    accepted = credential_id(TOKEN, CREDENTIAL_KEY.encode())
    assert credential_labels(metrics) == {accepted}
    assert [key for key in await keys(redis_client) if accepted in key.decode()]  # its budget


async def test_credential_labels_are_bounded(
    strict_sim: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(strict_sim.url, credential_labels=1)
    for token in (TOKEN, TOKEN_B, TOKEN):
        resp = await gw.get(CONTACT, headers={"Authorization": f"Bearer {token}"})
        assert resp.status in (200, 404)
    metrics = await (await gw.get("/metrics")).text()
    assert credential_labels(metrics) == {credential_id(TOKEN, CREDENTIAL_KEY.encode()), "other"}
