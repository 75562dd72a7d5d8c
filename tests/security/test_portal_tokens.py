"""Issue 13 (7): two tokens of one portal. A complete index knows what *its* credential created;
another token's misses go to HubSpot until the gateway has seen that token create. A rule with
`shared_by: portal` shares its index between the tokens of one portal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from proxy.app import SERVICES
from tests.kit.harness import ADMIN, AUTH, TOKEN, TOKEN_B, GatewayFactory
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)

BOOKINGS, EXAMS = "2-50158943", "2-50158913"
RESERVE = "/proxy/v1/counters/mock_exams/{}/reserve"
SEARCH = f"/crm/v3/objects/{BOOKINGS}/search"
AUTH_B = {"Authorization": f"Bearer {TOKEN_B}"}
DEFAULT_RULES = Path(__file__).parents[2] / "rules" / "default.yaml"


def by_key(key: str) -> dict[str, Any]:
    filters = [{"propertyName": "idempotency_key", "operator": "EQ", "value": key}]
    return {"filterGroups": [{"filters": filters}]}


async def test_a_rotated_token_sees_the_booking_the_old_token_created(
    strict_sim: Sim, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(strict_sim.url)
    booking = {"properties": {"contact_id": "c1", "exam_date": "2030-03-15",
                              "is_active": "Active", "idempotency_key": "k1"}}  # fmt: skip
    resp = await gw.post(f"/crm/v3/objects/{BOOKINGS}", json=booking, headers=AUTH)
    assert resp.status == 201, await resp.text()
    created = (await resp.json())["id"]
    resp = await gw.post(SEARCH, json=by_key("k2"), headers=AUTH)
    assert (await resp.json())["total"] == 0  # token A's own index answers its misses
    assert [c for c in await strict_sim.calls() if c[1] == SEARCH] == []

    resp = await gw.post(SEARCH, json=by_key("k1"), headers=AUTH_B)
    assert resp.status == 200
    assert [r["id"] for r in (await resp.json())["results"]] == [created]  # HubSpot's truth
    assert len([c for c in await strict_sim.calls(TOKEN_B) if c[1] == SEARCH]) == 1


@pytest.fixture
def shared_rules(tmp_path: Path) -> str:
    """default.yaml, with the idempotency index shared by the tokens of one portal."""
    rule = "  - name: booking-idempotency\n    type: search_index\n"
    text = DEFAULT_RULES.read_text()
    assert rule in text
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace(rule, rule + "    shared_by: portal\n"))
    return str(path)


async def test_tokens_of_one_portal_share_an_index_that_says_so(
    strict_sim: Sim, gateway_factory: GatewayFactory, shared_rules: str
) -> None:
    gw = await gateway_factory(strict_sim.url, rules_path=shared_rules)
    booking = {"properties": {"contact_id": "c1", "exam_date": "2030-03-15",
                              "is_active": "Active", "idempotency_key": "k1"}}  # fmt: skip
    resp = await gw.post(f"/crm/v3/objects/{BOOKINGS}", json=booking, headers=AUTH)
    assert resp.status == 201, await resp.text()
    created = (await resp.json())["id"]

    for key, found in (("k1", [created]), ("k2", []), ("k1", [created])):
        resp = await gw.post(SEARCH, json=by_key(key), headers=AUTH_B)
        assert resp.status == 200
        assert [r["id"] for r in (await resp.json())["results"]] == found
    resp = await gw.post(SEARCH, json=by_key("k3"), headers=AUTH)
    assert (await resp.json())["total"] == 0
    # Token B's first search went to HubSpot (nothing is kept for a token before HubSpot has
    # accepted it); every later answer came from the shared index.
    for token, searched in ((TOKEN, 0), (TOKEN_B, 1)):
        calls = await strict_sim.calls(token)
        assert len([c for c in calls if c[1] == SEARCH]) == searched
        assert calls.count(("GET", "/account-info/v3/details")) == 1  # asked once per token


def dup(contact: str) -> dict[str, Any]:
    filters = [
        {"propertyName": "contact_id", "operator": "EQ", "value": contact},
        {"propertyName": "exam_date", "operator": "EQ", "value": "2030-03-15"},
        {"propertyName": "is_active", "operator": "EQ", "value": "Active"},
    ]
    return {"filterGroups": [{"filters": filters}]}


async def test_a_shared_scope_is_loaded_once_for_the_portal_and_reconciled(
    strict_sim: Sim, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    text = DEFAULT_RULES.read_text().replace(
        "    type: search_index\n", "    type: search_index\n    shared_by: portal\n"
    )
    (tmp_path / "shared.yaml").write_text(text)
    gw = await gateway_factory(
        strict_sim.url, rules_path=str(tmp_path / "shared.yaml"), admin_token=ADMIN
    )
    booking = {"properties": {"contact_id": "c1", "exam_date": "2030-03-15",
                              "is_active": "Active", "idempotency_key": "k1"}}  # fmt: skip
    resp = await gw.post(f"/crm/v3/objects/{BOOKINGS}", json=booking, headers=AUTH)
    assert resp.status == 201
    created = (await resp.json())["id"]
    assert (await gw.post(SEARCH, json=dup("c2"), headers=AUTH)).status == 200  # loads the date
    assert gw.app is not None
    await gw.app[SERVICES].actions.loader.wait_idle()
    assert (await gw.get("/crm/v3/objects/contacts/1", headers=AUTH_B)).status in (200, 404)
    searched = len([c for c in await strict_sim.calls() if c[1] == SEARCH])

    resp = await gw.post(SEARCH, json=dup("c1"), headers=AUTH_B)  # A's booking, from the index
    assert [r["id"] for r in (await resp.json())["results"]] == [created]
    resp = await gw.post(SEARCH, json=dup("c3"), headers=AUTH_B)
    assert (await resp.json())["total"] == 0
    assert [c for c in await strict_sim.calls(TOKEN_B) if c[1] == SEARCH] == []

    resp = await gw.post(
        "/proxy/v1/jobs/reconcile/run", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    summary = await resp.json()
    assert resp.status == 200 and summary["credentialsFailed"] == 0, summary
    assert summary["drift"]["scopes"] == 1  # the portal's one loaded date, not one per token
    reloads = [c for t in (TOKEN, TOKEN_B) for c in await strict_sim.calls(t) if c[1] == SEARCH]
    assert len(reloads) == searched + 1  # with whichever of the portal's tokens came last


async def test_tokens_of_one_portal_share_a_counter_that_says_so(
    strict_sim: Sim,
    gateway_factory: GatewayFactory,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    rule = "  - name: exam-counter\n    type: counter\n"
    (tmp_path / "shared.yaml").write_text(
        DEFAULT_RULES.read_text().replace(rule, rule + "    shared_by: portal\n")
    )
    gw = await gateway_factory(
        strict_sim.url, rules_path=str(tmp_path / "shared.yaml"), admin_token=ADMIN
    )
    (exam,) = await strict_sim.seed(EXAMS, {"capacity": "3", "total_bookings": "0"})
    answers = []
    for auth, booking in ((AUTH, "b1"), (AUTH_B, "b2"), (AUTH_B, "b3"), (AUTH, "b4")):
        resp = await gw.post(RESERVE.format(exam), json={"bookingId": booking}, headers=auth)
        answers.append((resp.status, (await resp.json()).get("count")))
    assert answers == [(200, 1), (200, 2), (200, 3), (409, None)]  # one count for the portal
    keys = [k async for k in redis_client.scan_iter(match="hubspot:{*}:ctr:*")]
    assert {k.split(b"}")[0] for k in keys} == {b"hubspot:{portal-12345678"}

    resp = await gw.post(
        "/proxy/v1/jobs/sync_counters/run", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    summary = await resp.json()
    assert (summary["countersSent"], summary["credentialsFailed"]) == (1, 0), summary
    (stored,) = [o for o in await strict_sim.objects(EXAMS) if o["id"] == exam]
    assert stored["properties"]["total_bookings"] == "3"
