"""RuleRedis.call_script on a real server: concurrent calls share round trips, each gets its
own reply, and a script error fails only its own call."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from proxy.metrics import Metrics
from proxy.store.rule_store import UNAVAILABLE, RuleRedis
from tests.kit.cluster import RedisTarget

APPEND = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])
"""


async def test_concurrent_calls_are_each_answered_and_one_failure_is_its_own(
    redis_target: RedisTarget,
) -> None:
    client: aioredis.Redis = redis_target.client()
    try:
        store = RuleRedis(client, timeout_s=2.0, metrics=Metrics())
        script = client.register_script(APPEND)
        key = "hubspot:{t}:trips"
        # One call first: a cluster client learns the cluster's shape on its first call.
        replies = [await store.call_script("t", script, [key], ["0"])]
        replies += await asyncio.gather(
            *(store.call_script("t", script, [key], [str(n)]) for n in range(1, 30))
        )
        assert sorted(replies) == list(range(1, 31))
        logged = await client.lrange(key, 0, -1)
        assert sorted(int(x) for x in logged) == list(range(30))
        mixed = await asyncio.gather(
            store.call_script("t", script, [key], ["x"]),
            store.call_script("t", script, [key], ["fail"]),
            store.call_script("t", script, [key], ["y"]),
        )
        assert mixed[0] == 31 and mixed[1] is UNAVAILABLE and mixed[2] == 32
    finally:
        await client.aclose()
