"""A short-TTL cache of object GETs (e.g. mock exams), dropped by writes through the gateway.

Entries are per credential, object and query string (the properties asked for change the
answer). Invalidation gives the object a new random generation instead of hunting down every
variant: an entry answers only while its generation is the object's current one. A GET that
read the generation before a concurrent PATCH fills under the old generation, so its possibly
stale copy is never served; no WATCH needed, and a read is one MGET. A read whose hit gets
counters overlaid (the exam read) reads them in the same round trip: `lua/cache_read.lua`
reads the entry and, when it is fresh, the counters, seeded from the cached body.

    oc:{type}:{id}:gen           the object's current generation (missing: "0")
    oc:{type}:{id}:q:{sha}       {"g": generation, "b": the answer body as HubSpot sent it}
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from proxy.store.keys import key, part
from proxy.store.rule_store import UNAVAILABLE, RuleRedis, Unavailable, s
from proxy.store.scripts import script

# A generation outlives the entries filled under the one before it by a wide margin (a fill
# may land up to an upstream timeout after its read), so an expired generation never revives
# an old entry.
GENERATION_EXTRA_MS: Final = 3_600_000
NO_GENERATION: Final = "0"


@lru_cache(maxsize=4096)  # a calendar reads the same few exams again and again
def _keys(cred: str, object_type: str, object_id: str, query: str) -> tuple[str, str]:
    base = key(cred, "oc", part(object_type), part(object_id))
    digest = hashlib.sha256(query.encode()).hexdigest()[:24]
    return base + ":gen", f"{base}:q:{digest}"


@lru_cache(maxsize=4096)
def _encoded(cred: str, object_type: str, object_id: str, query: str) -> tuple[bytes, ...]:
    """`_keys` and the object id as bytes, as a read with overlays sends them: redis-py then
    encodes nothing (it would on every call)."""
    gen_key, entry_key = _keys(cred, object_type, object_id, query)
    return gen_key.encode(), entry_key.encode(), object_id.encode()


@dataclass(frozen=True)
class OverlayRead:
    """A counter read along with the cache read: `counter_op`'s keys and argv of a read (its
    seed and capacity come from the cached body), and the properties it reads them from."""

    keys: list[str]
    args: list[str]
    count_property: str
    capacity_property: str

    @cached_property
    def encoded(self) -> tuple[list[bytes], list[bytes]]:
        """The keys, and the args with the properties, as bytes (made once, sent often)."""
        args = [*self.args, self.count_property, self.capacity_property]
        return [k.encode() for k in self.keys], [a.encode() for a in args]


@dataclass(frozen=True)
class CacheRead:
    body: bytes | None  # the cached answer, or None on a miss
    generation: str  # what a fill after this miss must carry
    # On a hit read with overlays, the script's reply for each: `counter_op`'s, "skip" or
    # "other" (see lua/cache_read.lua).
    overlaid: tuple[Any, ...] = ()


class ObjectCache:
    def __init__(self, store: RuleRedis) -> None:
        self.store = store
        client = store.client
        self._read = script(client, "counter_core", "cache_read") if client else None

    async def get(
        self,
        cred: str,
        object_type: str,
        object_id: str,
        query: str,
        overlays: Sequence[OverlayRead] = (),
    ) -> CacheRead | Unavailable:
        """The cached answer, and on a hit the `overlays` read in the same round trip (their
        keys must share the credential's hash tag)."""
        lua = self._read
        if overlays and lua is not None:
            gen_key, entry_key, encoded_id = _encoded(cred, object_type, object_id, query)
            keys = [gen_key, entry_key]
            args = [encoded_id]
            for o in overlays:
                o_keys, o_args = o.encoded
                keys += o_keys
                args += o_args
            got = await self.store.call_script("object_cache", lua, keys, args)
        else:
            plain = _keys(cred, object_type, object_id, query)
            got = await self.store.run("object_cache", lambda r: r.mget(plain))
        if isinstance(got, Unavailable):
            return UNAVAILABLE
        raw_gen, raw_entry, *overlaid = got
        generation = s(raw_gen) or NO_GENERATION
        if raw_entry is None:
            return CacheRead(None, generation)
        try:
            entry = orjson.loads(raw_entry)
            fresh = entry["g"] == generation
            body = entry["b"].encode() if fresh else None
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            body = None
        return CacheRead(body, generation, tuple(overlaid) if body is not None else ())

    async def fill(
        self,
        cred: str,
        object_type: str,
        object_id: str,
        query: str,
        generation: str,
        body: bytes,
        ttl_ms: int,
    ) -> bool:
        _, entry_key = _keys(cred, object_type, object_id, query)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return False
        value = orjson.dumps({"g": generation, "b": text})
        got = await self.store.run("object_cache", lambda r: r.set(entry_key, value, px=ttl_ms))
        return got is True

    async def invalidate(
        self, cred: str, object_type: str, object_ids: Iterable[str], ttl_ms: int
    ) -> bool:
        """Give each object a new generation; if Redis is away, do it as soon as it is back."""
        gen_keys = [_keys(cred, object_type, oid, "")[0] for oid in object_ids]
        if not gen_keys:
            return True

        px = ttl_ms + GENERATION_EXTRA_MS

        def bumper(chosen: list[str]) -> Callable[[aioredis.Redis], Awaitable[None]]:
            async def bump(r: aioredis.Redis) -> None:
                pipe = r.pipeline(transaction=False)
                for gen_key in chosen:
                    pipe.set(gen_key, uuid.uuid4().hex, px=px)
                await pipe.execute()

            return bump

        if isinstance(await self.store.run("object_cache", bumper(gen_keys)), Unavailable):
            for gen_key in gen_keys:
                self.store.repair_later("oc:" + gen_key, bumper([gen_key]))
            return False
        return True
