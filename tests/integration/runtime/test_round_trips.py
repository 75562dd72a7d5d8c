"""Redis round trips of a forwarded call, counted by Valkey's MONITOR: one, its admission."""

from __future__ import annotations

import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.monitor import watched

pytestmark = pytest.mark.timeout(60)

CALLS = 20


async def test_a_forwarded_call_makes_one_round_trip(
    upstream: EchoUpstream, gateway_factory: GatewayFactory, redis_url: str
) -> None:
    gw = await gateway_factory(upstream.url)
    path = "/files/v3/files/1"  # no rule, not shared by singleflight: forwarded as it comes
    for _ in range(2):  # scripts loaded, the credential known
        assert (await gw.get(path, headers=AUTH)).status == 200

    async def calls() -> list[int]:
        return [(await gw.get(path, headers=AUTH)).status for _ in range(CALLS)]

    statuses, seen = await watched(redis_url, calls())

    assert statuses == [200] * CALLS
    assert seen.sent_by_requests() == {"evalsha": CALLS}  # admit.lua, nothing else
    assert len(upstream.seen) == CALLS + 2
