"""`/readyz` says whether the gateway uses Redis, not only whether Redis answers a ping."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.app import SERVICES
from tests.kit.echo import EchoUpstream
from tests.kit.harness import GatewayFactory

pytestmark = pytest.mark.timeout(60)


async def test_a_ping_redis_answers_puts_the_gateway_back_on_redis(
    upstream: EchoUpstream, gateway_factory: GatewayFactory
) -> None:
    gw = await gateway_factory(upstream.url)
    assert gw.app is not None
    limiter = gw.app[SERVICES].limiter
    limiter.health.failed(RedisConnectionError())  # a blip: the breaker waits a second to probe
    assert limiter.fallback_active and not limiter.health.should_try()

    ready = await (await gw.get("/readyz")).json()

    assert ready["checks"]["redis"] == "ok"
    assert not limiter.fallback_active  # what the probe said is what the gateway does
