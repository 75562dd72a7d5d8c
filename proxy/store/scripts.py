"""The gateway's Lua scripts: package files under `proxy/store/lua/`, read once per process and
registered here, once per Redis client (redis-py then runs them by SHA, loading on NOSCRIPT)."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Final

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

    The round trip carries bare EVALSHAs, packed here and written on one pooled connection:
    redis-py's own script pipeline first asks SCRIPT EXISTS, a round trip of its own, and its
    plain pipeline packs every argument of every call (a call made again and again is packed
    once here, `_evalsha`). A server that does not know the script (first use, SCRIPT FLUSH,
    a replica promoted by a failover) answers NOSCRIPT to each call it did not run; those go
    again one by one through the script object, which loads it. redis-py refuses EVALSHA in a
    cluster pipeline, so on a cluster the calls go one by one, still in order: the calls of
    one batch share a credential, hence a node. A lone call is packed here too: through the
    script object it cost about 80 us of CPU against 58 (redis-py's command machinery, its
    packing of every argument, its event dispatch), and at one connection every call is lone.
    """
    if is_cluster(client):
        return [await _one(lua, keys, args) for keys, args in calls]
    pool = client.connection_pool
    encode = pool.get_encoder().encode  # type: ignore[no-untyped-call]
    sent = b"".join([_evalsha(encode, lua.sha, keys, args) for keys, args in calls])
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        # As redis-py's pipeline does: a dropped connection is reconnected and asked again.
        replies: list[Any] = await conn.retry.call_with_retry(
            lambda: _exchange(conn, sent, len(calls)), lambda _error: conn.disconnect()
        )
    except BaseException:
        await conn.disconnect()  # replies may be left unread: never hand it out again as is
        raise
    finally:
        await pool.release(conn)
    for n, reply in enumerate(replies):
        if isinstance(reply, NoScriptError):
            keys, args = calls[n]
            replies[n] = await _one(lua, keys, args)
    return replies


async def _exchange(conn: Any, sent: bytes, count: int) -> list[Any]:
    await conn.send_packed_command(sent)
    replies: list[Any] = []
    for _ in range(count):
        try:
            replies.append(await conn.read_response())
        except ResponseError as exc:  # the call's own error, read whole: the next ones follow
            replies.append(exc)
    return replies


def _evalsha(encode: Callable[[Any], Any], sha: str, keys: Keys, args: Sequence[Any]) -> bytes:
    """EVALSHA of (keys, args) in Redis's protocol. A call whose keys and args come as bytes
    (made once by its caller: an exam read, sent again and again) is packed once: redis-py
    packed every argument of every call."""
    memo_key = (sha, *keys, *args)
    try:
        found = _PACKED.get(memo_key)
    except TypeError:  # an unhashable argument (a bytearray): packed, never kept
        found, memo_key = None, ()
    if found is not None:
        return found
    parts = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *map(encode, keys), *map(encode, args)]
    packed = b"*%d\r\n%s" % (len(parts), b"".join([b"$%d\r\n%s\r\n" % (len(p), p) for p in parts]))
    if memo_key and all(type(part) is bytes for part in memo_key[1:]):
        if len(_PACKED) >= PACKED_MAX:
            _PACKED.clear()  # bounded: objects and credentials come and go
        _PACKED[memo_key] = packed
    return packed


PACKED_MAX: Final = 4096
_PACKED: dict[tuple[Any, ...], bytes] = {}


async def _one(lua: AsyncScript, keys: Keys, args: Sequence[Any]) -> Any:
    try:
        return await lua(keys=keys, args=args)
    except ResponseError as exc:  # the call's own error; a connection's is raised
        return exc


def lua_program(*names: str) -> str:
    """One script from several files, in order: shared functions first (Lua has no import)."""
    return "\n".join(lua_source(name) for name in names)
