"""The gateway's Lua scripts, package files under `proxy/store/lua/`, read once per process."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


@cache
def lua_source(name: str) -> str:
    return resources.files("proxy.store").joinpath("lua", f"{name}.lua").read_text("utf-8")


async def run_script_batch(
    client: aioredis.Redis, script: AsyncScript, calls: Sequence[tuple[list[str], list[str]]]
) -> list[Any]:
    """`script` once per (keys, args), in order, in one pipelined round trip on one server.

    A server that does not know the script yet (first use, SCRIPT FLUSH, a restart) answers
    NOSCRIPT without running it; those calls alone run again through the script object, which
    loads it, so no batch pays a SCRIPT EXISTS first. redis-py refuses EVALSHA in a cluster
    pipeline, so on a cluster the calls go one by one, still in order: the calls of one batch
    share a credential, hence a node, and each is its own round trip there.
    """
    if isinstance(client, RedisCluster):
        return [await script(keys=keys, args=args) for keys, args in calls]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for i, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            keys, args = calls[i]
            replies[i] = await script(keys=keys, args=args)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
