"""RuleRedis.call_script on a real server: concurrent calls share round trips, each gets its
own reply, and a script error fails only its own call."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from proxy.metrics import Metrics
from proxy.store import rule_store
from proxy.store.rule_store import UNAVAILABLE, RuleRedis
from proxy.store.scripts import run_script_calls
from tests.kit.cluster import RedisTarget

APPEND = """
if ARGV[1] == 'fail' then return redis.error_reply('asked to fail') end
redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])
"""


async def test_concurrent_calls_are_each_answered_and_one_failure_is_its_own(
    redis_target: RedisTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[int] = []

    async def counted(client: aioredis.Redis, lua: AsyncScript, calls: Sequence[Any]) -> Any:
        trips.append(len(calls))
        return await run_script_calls(client, lua, calls)

    monkeypatch.setattr(rule_store, "run_script_calls", counted)
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
        if not redis_target.cluster:  # a cluster's calls go one by one (keys on many nodes)
            assert sum(trips) == 30 and len(trips) < 30  # the first alone, the rest together
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
