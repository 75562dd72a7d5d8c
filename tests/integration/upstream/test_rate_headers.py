"""HubSpot's rate-limit headers: gauges per answer, the Redis hash off the answer path."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from proxy.metrics import Metrics
from proxy.store.credentials import KnownCredentials
from proxy.upstream.rate_headers import RateLimitRecorder, parse_headers

pytestmark = pytest.mark.timeout(30)

ANSWERS = 50


def rate_limits_key(credential: str) -> str:
    """The PRD's layout, which dashboards read: it must not move."""
    return f"hubspot:rate_limits:{{{credential}}}"


def headers(remaining: int) -> dict[str, str]:
    return {
        "X-HubSpot-RateLimit-Max": "190",
        "X-HubSpot-RateLimit-Remaining": str(remaining),
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    }


async def accepting(*credentials: str) -> KnownCredentials:
    """Credentials HubSpot has accepted: only those are recorded."""
    known = KnownCredentials(None)
    for credential in credentials:
        await known.accepted(credential)
    return known


def gauge(metrics: Metrics, credential: str, header: str) -> float | None:
    return metrics.registry.get_sample_value(
        "hubspot_proxy_ratelimit_header", {"credential": credential, "header": header}
    )


async def test_answers_update_gauges_at_once_and_redis_once_per_flush(
    redis_client: aioredis.Redis,
) -> None:
    metrics = Metrics()
    known = await accepting("credA", "credB")
    recorder = RateLimitRecorder(redis_client, metrics, credentials=known, flush_interval_s=3600)
    for remaining in range(ANSWERS, 0, -1):
        recorder.record("credA", parse_headers(headers(remaining)))
    recorder.record("credB", parse_headers(headers(7)))

    assert gauge(metrics, "credA", "remaining") == 1  # per answer, the latest
    assert await redis_client.exists(rate_limits_key("credA"), rate_limits_key("credB")) == 0
    assert await recorder.flush() == 2  # one write per credential, however many answers
    stored = await redis_client.hgetall(rate_limits_key("credA"))
    assert stored == {b"max": b"190", b"remaining": b"1", b"interval-milliseconds": b"10000"}
    assert await redis_client.hget(rate_limits_key("credB"), "remaining") == b"7"
    assert await recorder.flush() == 0  # nothing new: nothing written


async def test_stop_writes_what_is_pending(redis_client: aioredis.Redis) -> None:
    known = await accepting("credA")
    recorder = RateLimitRecorder(redis_client, Metrics(), credentials=known, flush_interval_s=3600)
    recorder.start()
    recorder.record("credA", parse_headers(headers(42)))
    await recorder.stop()
    assert await redis_client.hget(rate_limits_key("credA"), "remaining") == b"42"
    assert await redis_client.ttl(rate_limits_key("credA")) > 0
