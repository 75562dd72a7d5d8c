"""Dead letters: writes HubSpot refused or that failed too often, kept with their reason.

Operators list them, re-enqueue one (after fixing its cause) or drop it. Re-enqueueing appends
the write at the end of the stream with its attempts reset; for an update this means it lands
after any later update of the same record (the operator's call, not the worker's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.exceptions import WatchError

from proxy.writes.store import QUEUED, Entry, WriteStore, entries, now_ms, redis_fields, text


class DeadLetters:
    """Admin operations on `hubspot:{writes}:dead`, by dead-letter id or by write id."""

    def __init__(self, store: WriteStore) -> None:
        self._redis = store.redis
        self._keys = store.keys
        self._ttl = store.status_ttl_s

    async def list(self, limit: int) -> list[Entry]:
        return entries(await self._redis.xrange(self._keys.dead, "-", "+", count=limit))

    async def find(self, ref: str) -> Entry | None:
        """A dead letter by its dead-stream id, or by write id (via the hint, else a scan)."""
        candidates = [ref] if _is_entry_id(ref) else []
        hint = await self._redis.hget(self._keys.status(ref), "dead_entry")
        if hint is not None:
            candidates.append(text(hint))
        for eid in candidates:
            for entry in entries(await self._redis.xrange(self._keys.dead, eid, eid)):
                if eid == ref or text(entry[1].get("w", b"")) == ref:
                    return entry
        return await self._scan_dead(ref)

    async def _scan_dead(self, write_id: str) -> Entry | None:
        start = "-"
        while True:
            page = entries(await self._redis.xrange(self._keys.dead, start, "+", count=500))
            for entry in page:
                if text(entry[1].get("w", b"")) == write_id:
                    return entry
            if len(page) < 500:
                return None
            start = "(" + page[-1][0]

    async def requeue(self, ref: str) -> str | None:
        """Move a dead letter back to the stream (attempts reset); returns its write id."""
        for _ in range(10):  # WATCH retries: the dead stream may change under us
            entry = await self.find(ref)
            if entry is None:
                return None
            dead_id, fields = entry
            original = {k: v for k, v in fields.items() if k in {"w", "c", "k", "r", "t"}}
            write_id = text(original.get("w", b""))
            try:
                await self._requeue(dead_id, original, write_id)
            except WatchError:
                continue
            return write_id
        raise RuntimeError("the dead-letter stream kept changing; try again")

    async def _requeue(self, dead_id: str, fields: Mapping[str, Any], write_id: str) -> None:
        key = self._keys.status(write_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self._keys.dead)
            if not await pipe.xrange(self._keys.dead, dead_id, dead_id):
                raise WatchError("already moved")
            pipe.multi()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            pipe.xadd(self._keys.stream, redis_fields(fields))
            pipe.xdel(self._keys.dead, dead_id)
            fresh = {"state": QUEUED, "attempts": "0", "updated_at": str(now_ms())}
            pipe.hset(key, mapping=redis_fields(fresh))
            pipe.hdel(key, "dead_entry", "dropped")
            pipe.expire(key, self._ttl)
            await pipe.execute()

    async def drop(self, ref: str) -> str | None:
        entry = await self.find(ref)
        if entry is None:
            return None
        dead_id, fields = entry
        write_id = text(fields.get("w", b""))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xdel(self._keys.dead, dead_id)
            if write_id:
                pipe.hset(self._keys.status(write_id), "dropped", str(now_ms()))
                pipe.hdel(self._keys.status(write_id), "dead_entry")
            await pipe.execute()
        return write_id or dead_id


def _is_entry_id(ref: str) -> bool:
    ms, dash, seq = ref.partition("-")
    return bool(dash) and ms.isdigit() and seq.isdigit()
