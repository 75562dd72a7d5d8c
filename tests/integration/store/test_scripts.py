"""Script batches on one server and on a cluster, including servers that forgot the script."""

from __future__ import annotations

import redis.asyncio as aioredis

from proxy.store.scripts import run_script_batch
from tests.kit.cluster import RedisTarget

APPEND = "redis.call('RPUSH', KEYS[1], ARGV[1]); return redis.call('LLEN', KEYS[1])"


async def test_a_batch_runs_in_order_and_survives_a_script_flush(
    redis_target: RedisTarget,
) -> None:
    client: aioredis.Redis = redis_target.client()
    try:
        script = client.register_script(APPEND)
        keys = ["hubspot:{a}:log", "hubspot:{b}:log"]  # two slots, on a cluster two nodes maybe
        calls = [([keys[i % 2]], [str(i)]) for i in range(6)]
        assert await run_script_batch(client, script, calls) == [1, 1, 2, 2, 3, 3]
        await client.script_flush()  # every primary forgets it, as a promoted replica may
        assert await run_script_batch(client, script, calls[:2]) == [4, 4]
        assert await client.lrange(keys[0], 0, -1) == [b"0", b"2", b"4", b"0"]
    finally:
        await client.aclose()
