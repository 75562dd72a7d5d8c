"""The gateway's Lua scripts, package files under `proxy/store/lua/`, read once per process."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def lua_source(name: str) -> str:
    return resources.files("proxy.store").joinpath("lua", f"{name}.lua").read_text("utf-8")
