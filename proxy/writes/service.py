"""Write-behind: accept a HubSpot write durably now, send it later in a batch (invariant 5).

The app hands an accepted call to `WriteBehind.accept`; the write is in Redis (status hash and
stream entry, one MULTI) before the app answers, and Redis trouble refuses it with a 503 instead
(a call arriving while Redis stalls waits up to `STALL_WAIT_S` for it first).
The worker (`writes.worker`) sends it later within budget; `status` reports its fate; dead
letters can be listed, retried and dropped. Where the reasoning lives (in `proxy/writes/`):

    model      what a write is, how it is parsed from a call and stored in the stream
    answers    the HubSpot-shaped answers given at acceptance
    store      Redis layout (one stream, `{writes}` hash tag) and every state change
    worker     read, claim, send, record-then-ack, retry, dead-letter
    order      per-object order across replicas
    lookup     creates replayed after a crash are looked up, not made twice
    dead       dead-letter admin
    batching   coalescing into batch calls and reading per-item outcomes (pure)

Calls go out through `upstream.background.BackgroundClient` (background priority, one budget).

    writes = WriteBehind(redis, vault, config=WriteConfig(), metrics=metrics, client=client)
    await writes.start()                      # runs the worker (every replica)
    answer = await writes.accept(cred, token, "associate_default",
                                 WriteRequest.from_call("associate_default", path_qs, body))
    ...
    await writes.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import redis.asyncio as aioredis

from proxy.errors import BadRequest, ServiceUnavailable
from proxy.hubspot.protocol import DEFAULT_ASSOCIATION_TYPES as KNOWN_TYPES
from proxy.metrics import Metrics
from proxy.store.client import pool_share
from proxy.store.health import REDIS_TROUBLE, STALL_WAIT_S, RedisHealth, once_more_if_dropped
from proxy.store.replicated import NotReplicated
from proxy.store.scripts import CounterChange
from proxy.store.vault import TokenVault
from proxy.upstream.background import BackgroundClient
from proxy.writes.answers import Accepted, AssocSpec, accepted, type_pair
from proxy.writes.dead import DeadLetters
from proxy.writes.model import ASSOCIATE_DEFAULT, KINDS, WriteConfig, WriteItem, WriteRequest
from proxy.writes.store import WriteKeys, WriteStore, now_ms, text
from proxy.writes.worker import WriteWorker

__all__ = ["Accepted", "CounterNotSeeded", "WriteBehind", "WriteConfig", "WriteRequest"]

LEARNED_TYPES_REFRESH_S = 60.0
# More accept timeouts an accept may take while Redis answers other calls (busy, not away).
ACCEPT_PATIENCE: Final = 2


class CounterNotSeeded(Exception):
    """The counter a write changes has no count yet; the write was not stored."""


def new_write_id() -> str:
    return uuid.uuid4().hex


class WriteBehind:
    """The app's one handle on write-behind: accept, status, dead letters, worker lifecycle."""

    def __init__(
        self,
        redis: aioredis.Redis,
        vault: TokenVault,
        *,
        config: WriteConfig | None = None,
        metrics: Metrics | None = None,
        client: BackgroundClient | None = None,
        health: RedisHealth | None = None,
    ) -> None:
        self.config = config or WriteConfig()
        self.metrics = metrics or Metrics()
        keys = WriteKeys(self.config.key_prefix)
        self.store = WriteStore(
            redis,
            keys,
            status_ttl_s=self.config.status_ttl_s,
            group=self.config.group,
            wait_replicas=self.config.wait_replicas,
            wait_timeout_ms=self.config.wait_timeout_ms,
        )
        self.dead = DeadLetters(self.store)
        self._vault = vault
        self._health = health or RedisHealth()  # shared with the limiter in the gateway
        self._types: dict[tuple[str, str], AssocSpec] = _configured_types(self.config)
        self._types_read_at = -LEARNED_TYPES_REFRESH_S
        # Bounds this path's share of the Redis pool: a burst of writes waits here (within the
        # accept timeout) instead of exhausting the pool the limiter and caches need too.
        self._accepting = asyncio.Semaphore(pool_share(redis, self.config.accept_concurrency))
        self.worker: WriteWorker | None = None
        if client is not None:
            self.worker = WriteWorker(
                self.store, client, vault, self.metrics, self.config, health=self._health
            )

    # -- accepting --------------------------------------------------------------------------------

    async def accept(
        self,
        credential: str,
        token: str,
        kind: str,
        request: WriteRequest,
        counter: CounterChange | None = None,
    ) -> Accepted:
        """Store the write durably, then return the answer to give; 503 if Redis cannot.

        With `counter`, the count change is stored in the same step as the write (one script):
        a busy Redis refuses both, never one. Raises CounterNotSeeded when the counter has no
        count yet (nothing was stored): seed it from HubSpot and accept again.
        """
        if kind not in KINDS:
            raise BadRequest(f"Unknown write kind {kind!r}")
        item = WriteItem(new_write_id(), "", credential, kind, request, now_ms())
        if not await self._health.try_within(STALL_WAIT_S):
            raise self._refused(kind)  # Redis has been away for longer than a stall
        probing = self._health.is_open
        timeout_s = self._accept_timeout(probing)
        answers_before = self._health.answers
        try:
            await self._patiently(self._accept_steps(item, token, counter), timeout_s)
        except NotReplicated as exc:
            # Redis answered (no replica took the write in time): no reason to rest Redis, and
            # a breaker held open by refused writes would keep the limiter in process too.
            self._health.succeeded()
            raise self._refused(kind) from exc
        except REDIS_TROUBLE as exc:
            self._health.failed(exc, answers_before=answers_before)
            raise self._refused(kind) from exc
        self._health.succeeded()
        self.metrics.writes.labels(kind, "accepted").inc()
        return accepted(
            item.write_id,
            kind,
            request,
            known_types=self._types,
            fallback_type_id=self.config.fallback_association_type_id,
            status_path=self.config.status_path.format(id=item.write_id),
        )

    async def _accept_steps(
        self, item: WriteItem, token: str, counter: CounterChange | None
    ) -> None:
        async with self._accepting:
            await self._vault.remember(item.credential, token)
            if item.kind == ASSOCIATE_DEFAULT:
                await self._learn_pair(item.request)
            await self._store(item, counter)

    async def _patiently(self, steps: Coroutine[Any, Any, None], timeout_s: float) -> None:
        """`steps` within `timeout_s`, or TimeoutError; while Redis answers other calls (busy,
        not away) the same steps get up to ACCEPT_PATIENCE more timeouts. An accept given up
        may still be stored and sent, and its client, told 503, would end a booking HubSpot
        goes on to hold; on a starved machine that left 90 of 3,000 bookings half done."""
        task = asyncio.ensure_future(steps)
        try:
            for _ in range(1 + ACCEPT_PATIENCE):
                answers = self._health.answers
                done, _pending = await asyncio.wait({task}, timeout=timeout_s)
                if done:
                    return task.result()
                if self._health.answers == answers:
                    break  # nothing Redis answered meanwhile: it is away, not busy
            raise TimeoutError(f"Redis did not store the write within {timeout_s} s")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, *REDIS_TROUBLE):
                    await task

    def _accept_timeout(self, probing: bool) -> float:
        if not probing:
            return self.config.accept_timeout_s
        # A probing accept may also wait for replicas (WAIT): that wait is no sign of a Redis
        # away, and a probe cut short by it would keep the shared breaker open.
        replicas_s = self.config.wait_timeout_ms / 1000 if self.config.wait_replicas else 0.0
        return self.config.accept_probe_timeout_s + replicas_s

    def _refused(self, kind: str) -> ServiceUnavailable:
        self.metrics.writes.labels(kind, "refused").inc()
        self.metrics.redis_errors.labels("writes").inc()
        return ServiceUnavailable(
            "The gateway could not store this write, so it was not accepted; retry later.",
            headers={"Retry-After": "1"},
        )

    async def _store(self, item: WriteItem, counter: CounterChange | None) -> None:
        if counter is None:
            await self.store.enqueue(item)
            return
        state, entry = await self.store.enqueue_counted(item, counter)
        if entry is None:
            raise CounterNotSeeded(state)

    async def _learn_pair(self, request: WriteRequest) -> None:
        """For a custom type pair, the type ids the worker learned from HubSpot (once/process)."""
        pair = type_pair(request.object_type, request.to_type or "")
        now = time.monotonic()
        if pair in self._types or pair in KNOWN_TYPES:
            return
        if now - self._types_read_at < LEARNED_TYPES_REFRESH_S:
            return
        self._types_read_at = now
        for name, spec in (await self.store.learned_types()).items():
            parsed = _parse_pair(name, spec)
            if parsed is not None:
                self._types.setdefault(*parsed)

    async def queued_links(self) -> set[tuple[str, str, str, str, str]]:
        """(credential, from type, from id, to type, to id) of every association accepted and
        not yet sent: HubSpot does not show it yet, though its count was taken at acceptance."""
        links: set[tuple[str, str, str, str, str]] = set()
        for entry_id, fields in await self.store.unfinished():
            try:
                item = WriteItem.from_fields(entry_id, fields)
            except (KeyError, ValueError, TypeError):
                continue  # the worker dead-letters what it cannot read
            request = item.request
            if item.kind == ASSOCIATE_DEFAULT and request.object_id and request.to_id:
                ends = (request.object_type, request.object_id, request.to_type or "")
                links.add((item.credential, *ends, request.to_id))
        return links

    # -- status and dead letters ------------------------------------------------------------------

    async def status(self, write_id: str, credential: str | None) -> dict[str, Any] | None:
        """The body of `GET /proxy/v1/writes/{id}`, or None when the write is unknown to this
        credential (None: any credential, for the admin)."""
        raw = await once_more_if_dropped(lambda: self.store.status(write_id))
        if raw is None or (credential is not None and raw.get("credential") != credential):
            return None
        return public_status(raw)

    async def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        found = await once_more_if_dropped(lambda: self.dead.list(limit))
        return [public_dead_letter(eid, f) for eid, f in found]

    async def retry_dead(self, ref: str) -> str | None:
        """Re-enqueue a dead letter (by dead-letter id or write id); its write id, or None."""
        return await self.dead.requeue(ref)

    async def drop_dead(self, ref: str) -> str | None:
        """Delete a dead letter for good; its write id, or None when there was none."""
        return await self.dead.drop(ref)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.worker is not None:
            await self.worker.start()

    async def stop(self, grace_s: float = 10.0) -> None:
        if self.worker is not None:
            await self.worker.stop(grace_s)


def _configured_types(config: WriteConfig) -> dict[tuple[str, str], AssocSpec]:
    configured: dict[tuple[str, str], AssocSpec] = {}
    for name, (category, type_id) in config.association_types.items():
        from_type, _, to_type = name.partition(">")
        configured[type_pair(from_type, to_type)] = (category, int(type_id))
    return configured


def _parse_pair(name: str, spec: str) -> tuple[tuple[str, str], AssocSpec] | None:
    from_type, _, to_type = name.partition(">")
    category, _, type_id = spec.partition(":")
    if not (from_type and to_type and type_id.isdigit()):
        return None
    return type_pair(from_type, to_type), (category, int(type_id))


def _iso(ms: str | None) -> str | None:
    if not ms or not ms.isdigit():
        return None
    moment = datetime.fromtimestamp(int(ms) / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def public_status(raw: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": raw.get("id"),
        "kind": raw.get("kind"),
        "state": raw.get("state", "queued"),
        "attempts": int(raw.get("attempts", "0") or 0),
        "lastError": raw.get("error") or None,
        "result": orjson.loads(raw["result"]) if raw.get("result") else None,
        "acceptedAt": _iso(raw.get("accepted_at")),
        "updatedAt": _iso(raw.get("updated_at")),
        "sentAt": _iso(raw.get("sent_at")),
        "inFlight": "sending" in raw,
    }
    if raw.get("dead_entry"):
        body["deadLetterId"] = raw["dead_entry"]
    if raw.get("dropped"):
        body["droppedAt"] = _iso(raw["dropped"])
    return body


def public_dead_letter(dead_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    request = fields.get("r")
    return {
        "id": dead_id,
        "writeId": text(fields.get("w", b"")) or None,
        "kind": text(fields.get("k", b"")) or None,
        "credential": text(fields.get("c", b"")) or None,
        "error": text(fields.get("e", b"")),
        "deadAt": _iso(text(fields.get("d", b""))),
        "entryId": text(fields.get("x", b"")) or None,
        "request": _loads_or_text(request),
    }


def _loads_or_text(raw: Any) -> Any:
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return text(raw)
