"""The gateway's Lua scripts, package files under `proxy/store/lua/`, read once per process."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources


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


def lua_program(*names: str) -> str:
    """One script from several files, in order: shared functions first (Lua has no import)."""
    return "\n".join(lua_source(name) for name in names)
