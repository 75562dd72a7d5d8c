"""The gateway's Lua scripts: package files under `proxy/store/lua/`, read once per process and
registered here, once per Redis client (redis-py then runs them by SHA, loading on NOSCRIPT)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, ResponseError

from proxy.store.client import is_cluster
from proxy.store.trips import Keys

_registered: weakref.WeakKeyDictionary[aioredis.Redis, dict[tuple[str, ...], AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class CounterChange:
    """A counter change that travels with a write: `counter_op`'s keys and argv (see
    `lua/counter_core.lua`), and the argv that undoes it should the write never reach HubSpot."""

    keys: tuple[str, ...]
    args: tuple[str, ...]
    undo: tuple[str, ...]


@cache
def lua_source(name: str) -> str:
    return resources.files("proxy.store").joinpath("lua", f"{name}.lua").read_text("utf-8")


def script(client: aioredis.Redis, *names: str) -> AsyncScript:
    """`lua/<name>.lua` (or several files as one program, see `lua_program`) registered with
    `client`; the same object on every call."""
    scripts = _registered.setdefault(client, {})
    if names not in scripts:
        scripts[names] = client.register_script(lua_program(*names))
    return scripts[names]


async def run_script_batch(
    client: aioredis.Redis, lua: AsyncScript, calls: Sequence[tuple[Keys, Sequence[Any]]]
) -> list[Any]:
    """`lua` (`script(client, name)`) once per (keys, args), in order, in one pipelined round
    trip on one server; the first call's error is raised (see `run_script_calls`)."""
    replies = await run_script_calls(client, lua, calls)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def run_script_calls(
    client: aioredis.Redis, lua: AsyncScript, calls: Sequence[tuple[Keys, Sequence[Any]]]
) -> list[Any]:
    """`lua` once per (keys, args), in order, in one pipelined round trip on one server; a
    call's own error (a script error) is its reply, a failed round trip raises.

    The pipeline carries bare EVALSHAs: redis-py's own script pipeline first asks SCRIPT EXISTS,
    a round trip of its own. A server that does not know the script (first use, SCRIPT FLUSH,
    a replica promoted by a failover) answers NOSCRIPT to each call it did not run; those go
    again one by one through the script object, which loads it. One call needs no pipeline.
    redis-py refuses EVALSHA in a cluster pipeline, so on a cluster the calls go one by one,
    still in order: the calls of one batch share a credential, hence a node.
    """
    if is_cluster(client) or len(calls) == 1:
        return [await _one(lua, keys, args) for keys, args in calls]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(lua.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    for n, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            keys, args = calls[n]
            replies[n] = await _one(lua, keys, args)
    return replies


async def _one(lua: AsyncScript, keys: Keys, args: Sequence[Any]) -> Any:
    try:
        return await lua(keys=keys, args=args)
    except ResponseError as exc:  # the call's own error; a connection's is raised
        return exc


def lua_program(*names: str) -> str:
    """One script from several files, in order: shared functions first (Lua has no import)."""
    return "\n".join(lua_source(name) for name in names)
