"""The gateway's Lua scripts: package files under `proxy/store/lua/`, read once per process and
registered here, once per Redis client (redis-py then runs them by SHA, loading on NOSCRIPT)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

_registered: weakref.WeakKeyDictionary[aioredis.Redis, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


@cache
def lua_source(name: str) -> str:
    return resources.files("proxy.store").joinpath("lua", f"{name}.lua").read_text("utf-8")


def script(client: aioredis.Redis, name: str) -> AsyncScript:
    """`lua/<name>.lua` registered with `client`; the same object on every call."""
    scripts = _registered.setdefault(client, {})
    if name not in scripts:
        scripts[name] = client.register_script(lua_source(name))
    return scripts[name]


async def run_script_batch(
    client: aioredis.Redis, lua: AsyncScript, calls: Sequence[tuple[list[str], list[str]]]
) -> list[Any]:
    """`lua` (`script(client, name)`) once per (keys, args), in order, in one pipelined round
    trip on one server.

    redis-py refuses EVALSHA in a cluster pipeline, so on a cluster the calls go one by one,
    still in order: the calls of one batch share a credential, hence a node. Either way a
    server that does not know the script (first use, SCRIPT FLUSH, a replica promoted by a
    failover) gets it loaded: the pipeline checks and loads its scripts before it runs, and
    the script object reloads on NOSCRIPT.
    """
    if isinstance(client, RedisCluster):
        return [await lua(keys=keys, args=args) for keys, args in calls]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            await lua(keys=keys, args=args, client=pipe)
        replies: list[Any] = await pipe.execute()
    return replies
