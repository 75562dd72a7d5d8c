"""The gateway's Lua scripts: package files under `proxy/store/lua/`, read once per process and
registered here, once per Redis client (redis-py then runs them by SHA, loading on NOSCRIPT)."""

from __future__ import annotations

import weakref
from functools import cache
from importlib import resources

import redis.asyncio as aioredis
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
