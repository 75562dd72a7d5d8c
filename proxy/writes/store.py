"""Where write-behind writes live in Redis: one stream, a status hash per write, dead letters.

Key layout (prefix `hubspot` by default)::

    hubspot:{writes}                      stream of accepted writes; consumer group `writers`
    hubspot:{writes}:dead                 dead-letter stream (write + last error)
    hubspot:{writes}:status:<write id>    hash: state, attempts, error, result, ... (TTL 7 days)
    hubspot:{writes}:created:<type>:<id>  which write created a record (TTL as status)
    hubspot:{writes}:assoc-types          learned default association type per type pair
    hubspot:{writes}:reader               lease of the replica reading new writes (worker)

One stream rather than one per credential: every replica then reads with one XREADGROUP, claims
with one XAUTOCLAIM and measures lag with one XPENDING, and stream order is a single total order,
which is what per-object ordering is checked against. The worker still groups batches by
credential. All keys share the `{writes}` hash tag so each state change below is one MULTI/EXEC
even on Redis Cluster: a write is never acked without its outcome, nor dead-lettered twice.

Acked entries are deleted in the same transaction (XACK + XDEL), so the stream holds exactly the
writes not yet finished and never needs trimming (trimming could drop unacked writes).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from proxy.store.client import is_cluster
from proxy.store.health import REDIS_TROUBLE
from proxy.store.keys import PREFIX, tagged
from proxy.store.replicated import Command, NotReplicated, transact_and_wait
from proxy.store.scripts import CounterChange, script
from proxy.writes.model import WriteItem

GROUP: Final = "writers"
QUEUED: Final = "queued"
SENT: Final = "sent"
FAILED: Final = "failed"
DEAD: Final = "dead"


def redis_fields(values: Mapping[str, Any]) -> dict[FieldT, EncodableT]:
    """The same mapping, typed as redis-py wants it."""
    return {k: v for k, v in values.items()}


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def now_ms() -> int:
    return int(time.time() * 1000)


class WriteKeys:
    def __init__(self, prefix: str = PREFIX) -> None:
        self.base = tagged("writes", prefix=prefix)
        self.stream = self.base
        self.dead = f"{self.base}:dead"
        self.assoc_types = f"{self.base}:assoc-types"
        self.reader = f"{self.base}:reader"  # lease: the replica that reads new writes

    def status(self, write_id: str) -> str:
        return f"{self.base}:status:{write_id}"

    def created(self, object_type: str, object_id: str) -> str:
        return f"{self.base}:created:{object_type}:{object_id}"


log = logging.getLogger("proxy.writes")


@dataclass(frozen=True)
class Backlog:
    pending: int  # delivered to a worker, not yet acked
    undelivered: int  # in the stream, not yet read by any worker
    oldest_age_s: float
    dead: int


Entry = tuple[str, Mapping[str, Any]]


def entries(raw: Any) -> list[Entry]:
    return [
        (text(eid), {text(k): v for k, v in (fields or {}).items()}) for eid, fields in raw or []
    ]


def _stream_reply(reply: Any) -> list[Entry]:
    """XREADGROUP's answer for our one stream, in RESP2 (list) or RESP3 (dict) form."""
    if not reply:
        return []
    if isinstance(reply, Mapping):
        return [e for value in reply.values() for e in entries(value[0] if value else [])]
    return [e for _name, messages in reply for e in entries(messages)]


class WriteStore:
    """Every Redis command of the write-behind path; no policy beyond "record, then ack"."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: WriteKeys | None = None,
        *,
        status_ttl_s: int = 7 * 24 * 3600,
        group: str = GROUP,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 250,
    ) -> None:
        self.redis = redis
        self.keys = keys or WriteKeys()
        self.group = group
        self.status_ttl_s = status_ttl_s
        # >0: writes the gateway vouches for wait until that many replicas have them
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._accept_counted = script(redis, "counter_core", "write_accept")
        self._counter_op = script(redis, "counter_core", "counter_ops")

    # -- accepting --------------------------------------------------------------------------------

    async def enqueue(self, item: WriteItem) -> str:
        """Status hash and stream entry in one transaction; returns the entry id."""
        if self.wait_replicas:
            return await self._enqueue_replicated(item)
        status = self.keys.status(item.write_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(status, mapping=redis_fields(_fresh_status(item)))
            pipe.expire(status, self.status_ttl_s)
            pipe.xadd(self.keys.stream, redis_fields(item.to_fields()))
            results = await pipe.execute()
        return text(results[-1])

    async def _enqueue_replicated(self, item: WriteItem) -> str:
        """As `enqueue`, acknowledged by `wait_replicas` replicas; if they do not answer in
        time the write is withdrawn (best effort) and refused, so no client is told a write
        was accepted that a failover could lose."""
        status = self.keys.status(item.write_id)
        commands = [
            ("HSET", status, *_flat(_fresh_status(item))),
            ("EXPIRE", status, self.status_ttl_s),
            ("XADD", self.keys.stream, "*", *_flat(item.to_fields())),
        ]
        executed, acked = await transact_and_wait(
            self.redis, self.keys.stream, commands, self.wait_replicas, self.wait_timeout_ms
        )
        entry_id = text(executed[-1])
        if acked < self.wait_replicas:
            with contextlib.suppress(*REDIS_TROUBLE):
                await self.redis.xdel(self.keys.stream, entry_id)
                await self.redis.delete(status)
            raise NotReplicated(f"{acked} of {self.wait_replicas} replicas acknowledged")
        return entry_id

    async def enqueue_counted(
        self, item: WriteItem, change: CounterChange
    ) -> tuple[str, str | None]:
        """The counter change, status hash and stream entry in one script (`write_accept`).

        Returns (the counter's status, the entry id); no entry id when the counter refused (it
        is not seeded yet, say), and then nothing was written.
        """
        if is_cluster(self.redis):
            return await self._enqueue_counted_apart(item, change)
        stream_fields = [v for k, raw in item.to_fields().items() for v in (k, text(raw))]
        undo = orjson.dumps({"keys": change.keys, "args": change.undo}).decode()
        args = [
            *change.args,
            str(self.status_ttl_s),
            undo,
            orjson.dumps(_fresh_status(item)).decode(),
            orjson.dumps(stream_fields).decode(),
        ]
        keys = [*change.keys, self.keys.status(item.write_id), self.keys.stream]
        reply = await self._accept_counted(keys=keys, args=args)
        entry = reply[3]
        return text(reply[0]), None if entry is None or entry is False else text(entry)

    async def _enqueue_counted_apart(
        self, item: WriteItem, change: CounterChange
    ) -> tuple[str, str | None]:
        """`enqueue_counted` on a Redis Cluster, where the counter (its credential's slot) and the
        stream (the `{writes}` slot) live apart and no one script may hold both: the count moves
        first, then the write is stored with the change's undo, and a write that cannot be
        stored takes its count back. A crash between the two steps leaves a count without its
        write, which `reconcile` repairs (one server keeps them in one script instead)."""
        reply = await self._counter_op(keys=list(change.keys), args=list(change.args))
        state = text(reply[0])
        if state not in ("ok", "unchanged"):
            return state, None
        try:
            entry = await self.enqueue(item)
        except BaseException:
            if state == "ok":
                with contextlib.suppress(*REDIS_TROUBLE):
                    await self._counter_op(keys=list(change.keys), args=list(change.undo))
            raise
        if state == "ok":  # 'unchanged': another write counted this record and owns the undo
            undo = orjson.dumps({"keys": change.keys, "args": change.undo}).decode()
            await self.redis.hset(self.keys.status(item.write_id), "undo", undo)
        return state, entry

    async def undo_counter(self, write_id: str) -> bool:
        """Take back the counter change accepted with a write that will never reach HubSpot.

        The undo is read and deleted first, so it runs at most once whoever buries the write.
        """
        key = self.keys.status(write_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(key, "undo")
            pipe.hdel(key, "undo")
            raw, _ = await pipe.execute()
        if not raw:
            return False
        undo = orjson.loads(raw)
        await self._counter_op(keys=list(undo["keys"]), args=list(undo["args"]))
        return True

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- reading ----------------------------------------------------------------------------------

    async def read_new(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        reply = await self.redis.xreadgroup(
            self.group, consumer, {self.keys.stream: ">"}, count=count, block=block_ms
        )
        return _stream_reply(reply)

    async def claim_idle(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another (dead) consumer held longer than `min_idle_ms`, now ours."""
        claimed: list[Entry] = []
        start = "0-0"
        while len(claimed) < count:
            reply = await self.redis.xautoclaim(
                self.keys.stream,
                self.group,
                consumer,
                min_idle_ms,
                start,
                count=count - len(claimed),
            )
            claimed += [e for e in entries(reply[1]) if e[1]]  # deleted entries come back empty
            start = text(reply[0])
            if start == "0-0":
                break
        return claimed

    async def touch(self, consumer: str, entry_ids: Sequence[str]) -> set[str]:
        """Reset the idle time of the entries still ours, so nobody claims them; returns those."""
        if not entry_ids:
            return set()
        wanted = set(entry_ids)
        mine = {eid for eid, _ in await self._pending(consumer=consumer) if eid in wanted}
        if mine:
            ids: list[int | bytes | str | memoryview] = list(mine)
            await self.redis.xclaim(self.keys.stream, self.group, consumer, 0, ids, justid=True)
        return mine

    async def pending_owners(self, up_to: str) -> list[tuple[str, str]]:
        """(entry id, consumer) of every delivered, unacked entry up to `up_to`, in order."""
        return await self._pending(up_to=up_to)

    async def _pending(
        self, *, up_to: str = "+", consumer: str | None = None, page: int = 1000
    ) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        start = "-"
        while True:
            rows = await self.redis.xpending_range(
                self.keys.stream, self.group, start, up_to, page, consumername=consumer
            )
            found += [(text(r["message_id"]), text(r["consumer"])) for r in rows]
            if len(rows) < page:
                return found
            start = "(" + found[-1][0]

    async def unfinished(self, page: int = 1000) -> list[Entry]:
        """Every write not yet finished: the stream holds exactly those (acked ones are deleted)."""
        found: list[Entry] = []
        start = "-"
        while True:
            batch = entries(await self.redis.xrange(self.keys.stream, start, "+", count=page))
            found += batch
            if len(batch) < page:
                return found
            start = "(" + batch[-1][0]

    async def fetch(self, entry_ids: Iterable[str]) -> dict[str, Mapping[str, Any]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            ids = list(entry_ids)
            for eid in ids:
                pipe.xrange(self.keys.stream, eid, eid)
            replies = await pipe.execute()
        return {eid: fields for reply in replies for eid, fields in entries(reply)}

    async def statuses(self, write_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for wid in write_ids:
                pipe.hgetall(self.keys.status(wid))
            replies = await pipe.execute()
        return {
            wid: {text(k): text(v) for k, v in (raw or {}).items()}
            for wid, raw in zip(write_ids, replies, strict=True)
        }

    async def status(self, write_id: str) -> dict[str, str] | None:
        found = (await self.statuses([write_id]))[write_id]
        return found or None

    # -- recording outcomes -----------------------------------------------------------------------

    async def mark_sending(self, items: Sequence[WriteItem], since_ms: int) -> None:
        """Creates about to be sent: a replay must look for them before creating them again.

        With `wait_replicas`, the marks are given up to `wait_timeout_ms` to reach the
        replicas before the creates go out: a mark lost in a failover would let the replay
        create them a second time. The creates go out even if no replica answers: refusing
        would stall every accepted create for as long as the primary has no replica (as after
        a failover, until the old primary comes back as a replica)."""
        if self.wait_replicas and items:
            commands: list[Command] = []
            for item in items:
                key = self.keys.status(item.write_id)
                commands.append(("HSET", key, "sending", str(since_ms)))
                commands.append(("EXPIRE", key, self.status_ttl_s))
            _, acked = await transact_and_wait(
                self.redis, self.keys.stream, commands, self.wait_replicas, self.wait_timeout_ms
            )
            if acked < self.wait_replicas:
                log.warning("in-flight marks not replicated", extra={"replicas": acked})
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                pipe.hset(self.keys.status(item.write_id), "sending", str(since_ms))
                pipe.expire(self.keys.status(item.write_id), self.status_ttl_s)
            await pipe.execute()

    async def clear_sending(self, items: Sequence[WriteItem]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for item in items:
                pipe.hdel(self.keys.status(item.write_id), "sending")
            await pipe.execute()

    async def finish_sent(
        self, done: Sequence[tuple[WriteItem, Any]], *, counted: bool = True
    ) -> None:
        """Record each write's HubSpot answer, then ack: one transaction, so never one alone."""
        if not done:
            return
        stamp = str(now_ms())
        async with self.redis.pipeline(transaction=True) as pipe:
            for item, result in done:
                key = self.keys.status(item.write_id)
                fields = {"state": SENT, "result": orjson.dumps(result), "updated_at": stamp}
                pipe.hset(
                    key, mapping=redis_fields({**_identity(item), **fields, "sent_at": stamp})
                )
                pipe.hdel(key, "sending")
                if counted:
                    pipe.hincrby(key, "attempts", 1)
                pipe.expire(key, self.status_ttl_s)
                created_id = _created_id(item, result)
                if created_id is not None:
                    created = self.keys.created(item.request.object_type, created_id)
                    pipe.set(created, item.write_id, ex=self.status_ttl_s)
            self._ack(pipe, [item.entry_id for item, _ in done])
            await pipe.execute()

    async def note_failure(self, item: WriteItem, error: str, *, maybe_applied: bool) -> int:
        """Count a failed attempt; returns the write's attempts so far."""
        key = self.keys.status(item.write_id)
        fields = {**_identity(item), "state": FAILED, "error": error, "updated_at": str(now_ms())}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, mapping=redis_fields(fields))
            if not maybe_applied:
                pipe.hdel(key, "sending")
            pipe.expire(key, self.status_ttl_s)
            results = await pipe.execute()
        return int(results[0])

    async def bury(
        self, item: WriteItem, error: str, *, counted: bool, maybe_applied: bool = False
    ) -> str:
        """Move a write to the dead-letter stream with its reason, and ack it: one transaction.

        A create that may have landed keeps its `sending` mark, so retrying the dead letter
        looks for the record before creating it again.
        """
        key = self.keys.status(item.write_id)
        stamp = str(now_ms())
        dead_fields = {**item.to_fields(), "e": error, "x": item.entry_id, "d": stamp}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.keys.dead, redis_fields(dead_fields))
            fields = {**_identity(item), "state": DEAD, "error": error, "updated_at": stamp}
            pipe.hset(key, mapping=redis_fields(fields))
            if not maybe_applied:
                pipe.hdel(key, "sending")
            if counted:
                pipe.hincrby(key, "attempts", 1)
            pipe.expire(key, self.status_ttl_s)
            self._ack(pipe, [item.entry_id])
            results = await pipe.execute()
        dead_id = text(results[0])
        # A hint for the admin API; a lost one only costs a scan of the dead letters.
        await self.redis.hset(key, "dead_entry", dead_id)
        return dead_id

    async def bury_unreadable(self, entry_id: str, fields: Mapping[str, Any], error: str) -> None:
        """An entry this code cannot decode still must not vanish: dead-letter it as it is."""
        async with self.redis.pipeline(transaction=True) as pipe:
            dead = {**fields, "e": error, "x": entry_id, "d": str(now_ms())}
            pipe.xadd(self.keys.dead, redis_fields(dead))
            self._ack(pipe, [entry_id])
            await pipe.execute()

    async def ack(self, entry_ids: Sequence[str]) -> None:
        """Ack writes whose outcome is already recorded (a replay found them finished)."""
        if entry_ids:
            async with self.redis.pipeline(transaction=True) as pipe:
                self._ack(pipe, entry_ids)
                await pipe.execute()

    def _ack(self, pipe: Any, entry_ids: Sequence[str]) -> None:
        pipe.xack(self.keys.stream, self.group, *entry_ids)
        pipe.xdel(self.keys.stream, *entry_ids)

    async def creators(self, object_type: str, object_ids: Sequence[str]) -> dict[str, str]:
        """Which write (if any) is recorded as having created each record."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for oid in object_ids:
                pipe.get(self.keys.created(object_type, oid))
            replies = await pipe.execute()
        return {oid: text(w) for oid, w in zip(object_ids, replies, strict=True) if w is not None}

    # -- association types learned from HubSpot ----------------------------------------------------

    async def learned_types(self) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.assoc_types)
        return {text(k): text(v) for k, v in raw.items()}

    async def learn_types(self, found: Mapping[str, str]) -> None:
        if found:
            await self.redis.hset(self.keys.assoc_types, mapping=redis_fields(found))

    # -- health -----------------------------------------------------------------------------------

    async def backlog(self) -> Backlog:
        """Unfinished writes and the age of the oldest one.

        Finished entries are deleted as they are acked, so the stream holds exactly the
        unfinished writes: its length is the backlog and its first entry the oldest.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xlen(self.keys.stream)
            pipe.xpending(self.keys.stream, self.group)
            pipe.xrange(self.keys.stream, "-", "+", count=1)
            pipe.xlen(self.keys.dead)
            total, summary, first, dead = await pipe.execute()
        # Apart: a cluster pipeline refuses keyless commands such as TIME.
        seconds, micros = await self.redis.time()
        pending = int(summary.get("pending") or 0)
        age = 0.0
        oldest = entries(first)
        if oldest:
            born_ms = int(oldest[0][0].split("-")[0])
            age = max(0.0, seconds + micros / 1e6 - born_ms / 1000)
        return Backlog(pending, max(0, int(total) - pending), age, int(dead))

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Remove consumers that hold nothing and were idle for long (replicas long gone)."""
        removed = 0
        for c in await self.redis.xinfo_consumers(self.keys.stream, self.group):
            if int(c.get("pending") or 0) == 0 and int(c.get("idle") or 0) > idle_ms:
                await self.redis.xgroup_delconsumer(self.keys.stream, self.group, c["name"])
                removed += 1
        return removed


def _identity(item: WriteItem) -> dict[str, str]:
    return {
        "id": item.write_id,
        "kind": item.kind,
        "entry": item.entry_id,
        "credential": item.credential,
    }


def _fresh_status(item: WriteItem) -> dict[str, str]:
    stamp = str(item.accepted_ms)
    return {
        "id": item.write_id,
        "kind": item.kind,
        "credential": item.credential,
        "state": QUEUED,
        "attempts": "0",
        "accepted_at": stamp,
        "updated_at": stamp,
    }


def _created_id(item: WriteItem, result: Any) -> str | None:
    if item.op != "create" or not isinstance(result, Mapping) or result.get("id") is None:
        return None
    return str(result["id"])


def _flat(fields: Mapping[str, str | bytes]) -> list[str | bytes]:
    return [part for pair in fields.items() for part in pair]
