"""The simulator's limits over HTTP: each 429 at exactly the right call, with HubSpot's body.

Windows are checked on a ManualClock: the test moves the simulator's time to each edge.
"""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from hubspot_sim import token_hash
from tests.kit.clock import ManualClock
from tests.kit.sim_client import MakeSim

pytestmark = pytest.mark.timeout(30)

Client = TestClient[web.Request, web.Application]
TOKEN = "sim-limits-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GET_ONE = "/crm/v3/objects/contacts/1"
SEARCH = "/crm/v3/objects/contacts/search"
ASSOC_READ = "/crm/v4/associations/contacts/companies/batch/read"
RATE_HEADERS = (
    "X-HubSpot-RateLimit-Max",
    "X-HubSpot-RateLimit-Remaining",
    "X-HubSpot-RateLimit-Interval-Milliseconds",
    "X-HubSpot-RateLimit-Daily",
    "X-HubSpot-RateLimit-Daily-Remaining",
)


async def statuses(client: Client, n: int, method: str = "GET", path: str = GET_ONE) -> list[int]:
    out = []
    for _ in range(n):
        body: dict[str, Any] | None = {"inputs": []} if method == "POST" else None
        async with client.request(method, path, headers=AUTH, json=body) as resp:
            out.append(resp.status)
    return out


async def assert_rate_limited(client: Client, method: str, path: str, policy: str) -> None:
    body: dict[str, Any] | None = {"inputs": []} if method == "POST" else None
    resp = await client.request(method, path, headers=AUTH, json=body)
    assert resp.status == 429
    data = await resp.json()
    assert set(data) == {
        "status",
        "message",
        "errorType",
        "correlationId",
        "policyName",
        "groupName",
    }
    assert data["status"] == "error"
    assert data["errorType"] == "RATE_LIMIT"
    assert data["policyName"] == policy
    assert data["groupName"] == "publicapi:private-app:12345678"
    expected = {
        "TEN_SECONDLY_ROLLING": "You have reached your ten_secondly_rolling limit.",
        "SECONDLY": "You have reached your secondly limit.",
        "DAILY": "You have reached your daily limit.",
    }
    assert data["message"] == expected[policy]


async def test_general_limit_429s_on_call_n_plus_one(make_sim: MakeSim) -> None:
    client = await make_sim(general_limit=20, general_window_s=2)
    assert await statuses(client, 20) == [404] * 20  # processed (the record does not exist)
    await assert_rate_limited(client, "GET", GET_ONE, "TEN_SECONDLY_ROLLING")
    resp = await client.get(GET_ONE, headers=AUTH)
    assert resp.headers["X-HubSpot-RateLimit-Remaining"] == "0"  # headers on the 429 too
    assert resp.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "2000"


async def test_rate_limit_headers_count_down(make_sim: MakeSim) -> None:
    client = await make_sim(general_limit=10, daily_limit=100)
    seen = []
    for _ in range(3):
        resp = await client.get(GET_ONE, headers=AUTH)
        assert all(h in resp.headers for h in RATE_HEADERS)
        seen.append(
            (
                resp.headers["X-HubSpot-RateLimit-Remaining"],
                resp.headers["X-HubSpot-RateLimit-Daily-Remaining"],
            )
        )
    assert seen == [("9", "99"), ("8", "98"), ("7", "97")]
    assert resp.headers["X-HubSpot-RateLimit-Max"] == "10"
    assert resp.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"


async def test_window_is_rolling_and_recovers(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, general_limit=5, general_window_s=0.5)
    assert await statuses(client, 3) == [404] * 3
    clock.advance(0.25)
    assert await statuses(client, 3) == [404, 404, 429]
    clock.advance(0.2499)  # still inside the window of the first three
    assert await statuses(client, 1) == [429]
    # The first three leave the window 0.5 s after they arrived; the last two stay in it.
    clock.advance(0.0001)
    assert await statuses(client, 4) == [404, 404, 404, 429]


async def test_refused_calls_do_not_count(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, general_limit=2, general_window_s=0.3)
    assert await statuses(client, 12) == [404, 404] + [429] * 10
    clock.advance(0.3)
    assert await statuses(client, 3) == [404, 404, 429]


async def test_search_is_five_per_second_without_headers(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, search_window_s=0.5)
    for _ in range(5):
        resp = await client.post(SEARCH, headers=AUTH, json={})
        assert resp.status == 200
        assert not any(h in resp.headers for h in RATE_HEADERS)
    await assert_rate_limited(client, "POST", SEARCH, "SECONDLY")
    resp = await client.post(SEARCH, headers=AUTH, json={})
    assert not any(h in resp.headers for h in RATE_HEADERS)
    clock.advance(0.5)
    assert (await client.post(SEARCH, headers=AUTH, json={})).status == 200


async def test_search_and_association_batches_are_exempt_from_the_general_bucket(
    make_sim: MakeSim,
) -> None:
    client = await make_sim(general_limit=2, general_window_s=5)
    assert await statuses(client, 3) == [404, 404, 429]
    assert await statuses(client, 5, "POST", SEARCH) == [200] * 5
    assert await statuses(client, 10, "POST", ASSOC_READ) == [200] * 10
    dated = "/crm/associations/2026-03/contacts/companies/batch/read"
    assert await statuses(client, 2, "POST", dated) == [200] * 2
    stats = await (await client.get("/__sim/stats", params={"token": TOKEN})).json()
    assert stats["window_usage"] == {"general": 2, "search": 5, "daily": 19}
    assert stats["by_kind"] == {"general": 3, "search": 5, "assoc_batch": 12}


async def test_daily_limit_counts_search_and_resets(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, daily_limit=4, daily_window_s=0.5)
    assert await statuses(client, 2) == [404, 404]
    assert await statuses(client, 2, "POST", SEARCH) == [200, 200]
    await assert_rate_limited(client, "GET", GET_ONE, "DAILY")
    await assert_rate_limited(client, "POST", SEARCH, "DAILY")
    await assert_rate_limited(client, "POST", ASSOC_READ, "DAILY")
    stats = await (await client.get("/__sim/stats", params={"token": TOKEN})).json()
    assert stats["rate_limited"] == {"DAILY": 3}
    clock.advance(0.5)
    assert await statuses(client, 1) == [404]


async def test_tokens_have_separate_budgets(make_sim: MakeSim) -> None:
    client = await make_sim(general_limit=1)
    assert await statuses(client, 2) == [404, 429]
    other = await client.get(GET_ONE, headers={"Authorization": "Bearer another"})
    assert other.status == 404


@pytest.mark.parametrize("header", [None, "", "Bearer ", "Bearer    ", "Basic abc"])
async def test_missing_token_is_401(make_sim: MakeSim, header: str | None) -> None:
    client = await make_sim()
    headers = {} if header is None else {"Authorization": header}
    resp = await client.get(GET_ONE, headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    totals = (await (await client.get("/__sim/stats")).json())["totals"]
    assert totals["unauthenticated"] == 1
    assert totals["total"] == 0


async def test_peak_window_and_call_log(make_sim: MakeSim) -> None:
    clock = ManualClock()
    client = await make_sim(clock=clock, general_limit=4, general_window_s=0.3)
    first = clock()
    assert await statuses(client, 5) == [404] * 4 + [429]
    clock.advance(0.3)
    assert await statuses(client, 2) == [404, 404]
    await statuses(client, 2, "POST", SEARCH)
    stats = await (await client.get("/__sim/stats", params={"token": TOKEN})).json()
    assert stats["max_in_window"] == {"general": 4, "search": 2}
    assert stats["total"] == 9
    assert stats["by_kind_status"]["general"] == {"404": 6, "429": 1}
    calls = (await (await client.get("/__sim/calls", params={"token": TOKEN})).json())["calls"]
    assert [c["kind"] for c in calls] == ["general"] * 6 + ["search"] * 2
    times = [c["t"] for c in calls if c["kind"] == "general"]
    assert times == [first] * 4 + [first + 0.3] * 2
    assert all(sum(1 for u in times if t - 0.3 < u <= t) <= 4 for t in times)
    assert calls[0] == {
        "t": times[0],
        "kind": "general",
        "method": "GET",
        "path": GET_ONE,
        "status": 404,
    }


async def test_spend_acts_as_a_second_integration(make_sim: MakeSim) -> None:
    client = await make_sim(general_limit=5, general_window_s=5)
    resp = await client.post("/__sim/spend", json={"token": TOKEN, "bucket": "general", "count": 4})
    assert (await resp.json())["window_usage"]["general"] == 4
    assert await statuses(client, 2) == [404, 429]
    stats = await (await client.get("/__sim/stats", params={"token": TOKEN})).json()
    assert stats["by_kind"] == {"general": 2}
    assert stats["spent"] == {"general": 4}
    assert stats["window_usage"]["general"] == 5
    await client.post("/__sim/spend", json={"token": TOKEN, "bucket": "search", "count": 5})
    await assert_rate_limited(client, "POST", SEARCH, "SECONDLY")
    bad = await client.post("/__sim/spend", json={"token": TOKEN, "bucket": "weekly", "count": 1})
    assert bad.status == 400
    assert stats["token_hash"] == token_hash(TOKEN)


async def test_limits_can_change_at_runtime(make_sim: MakeSim) -> None:
    client = await make_sim(general_limit=1)
    assert await statuses(client, 2) == [404, 429]
    resp = await client.post("/__sim/config", json={"general_limit": 3})
    assert (await resp.json())["general_max"] == 3
    assert await statuses(client, 3) == [404, 404, 429]
