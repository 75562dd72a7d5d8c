"""The write-behind worker: read the stream, coalesce, send within budget, record, then ack.

Every replica runs one, as a member of one consumer group. The rules it keeps:

- Ack only after the outcome is recorded (one MULTI: status + XACK + XDEL), so a crash at any
  point leaves the entry pending; another replica claims it (XAUTOCLAIM) once it has been idle
  for `claim_idle_s`. While a worker holds entries it refreshes their idle time, so only a dead
  (or stalled) worker loses them.
- Replays are idempotent: a write already recorded `sent` or `dead` is just acked; associations
  are idempotent in HubSpot; updates are re-applied only while no later update of the object was
  sent (see ordering); creates marked `sending` are looked up before being sent again
  (`writes.lookup`).
- Per-object order: an update is sent only when no earlier entry of the same object is pending
  anywhere in the group (XPENDING is the group-wide list of unfinished entries; stream order is
  delivery order). A failing update therefore holds back the later ones of its object, and a
  retry can never be overtaken.
- One replica at a time reads new writes (a lease, `reader_lease_s`, renewed at each read), so a
  burst's writes gather on one replica into full batches; the others claim abandoned entries
  and take over reading when the lease lapses (a reader gone, full, or busy past its TTL).
- Budget is spent at `Priority.BACKGROUND` through the shared `AdmittedCaller`, so interactive
  calls go first; a batch that cannot get budget in `send_wait_s` is postponed, not failed.
  A kind of write leaves at most once per `flush_interval_s` unless its batch is full
  (`cadence`), so a burst's writes ride in a few full batches.
- A stream read Redis answered tells the breaker shared with the gateway (`store.health`) that
  Redis is back, so a gateway with no client traffic recovers by itself (invariant 7).
- Transient failures back off exponentially with jitter, up to `max_attempts`; then, or at once
  for an input HubSpot rejects, the write goes to the dead-letter stream with its reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import aiohttp
import orjson
from redis.exceptions import ResponseError

from proxy.errors import GatewayError
from proxy.hubspot.protocol import canonical_object_type
from proxy.metrics import Metrics
from proxy.store.health import REDIS_TROUBLE, RedisHealth
from proxy.store.lease import Lease
from proxy.store.vault import TokenVault
from proxy.upstream.admitted import RateLimited
from proxy.upstream.background import BackgroundClient
from proxy.writes.batching import Batch, Outcome, Split, Verdict, judge, plan
from proxy.writes.cadence import FlushCadence
from proxy.writes.lookup import LookupFailed, find_created
from proxy.writes.model import OP_ASSOCIATE, OP_CREATE, WriteConfig, WriteItem
from proxy.writes.order import Held, OrderGate
from proxy.writes.store import DEAD, SENT, Entry, WriteStore, now_ms

log = logging.getLogger("proxy.writes")


CONSUMER_FORGET_MS: Final = 24 * 3600 * 1000


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


def backoff_s(attempts: int, base: float, cap: float) -> float:
    """Exponential with jitter, so writes failing together do not retry together."""
    return min(cap, base * 2.0 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)


class WriteWorker:
    def __init__(
        self,
        store: WriteStore,
        client: BackgroundClient,
        vault: TokenVault,
        metrics: Metrics,
        config: WriteConfig | None = None,
        health: RedisHealth | None = None,
    ) -> None:
        self.store = store
        self.config = config or WriteConfig()
        self._health = health or RedisHealth()
        self.consumer = self.config.consumer or default_consumer()
        self._client = client
        self._vault = vault
        self._metrics = metrics
        self._held: dict[str, Held] = {}
        self._solo: set[str] = set()  # objects whose merged update HubSpot refused
        self._order = OrderGate(store)
        self._cadence = FlushCadence(self.config.flush_interval_s, self.config.max_inputs)
        lease_s = self.config.reader_lease_s
        self._reader = Lease(store.redis, store.keys.reader, lease_s) if lease_s > 0 else None
        self._learned: dict[str, str] = {}
        self._last_claim = -float("inf")
        self._group_ready = False
        self._stopping = False
        self._reading = False
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._ensure_group()
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._run(), name="writes-worker"),
            asyncio.create_task(self._every(self.config.claim_idle_s / 3, self.heartbeat)),
            asyncio.create_task(self._every(self.config.metrics_interval_s, self.update_metrics)),
        ]

    async def stop(self, grace_s: float = 10.0) -> None:
        """Finish the batch in flight, then stop; unfinished entries stay pending for others.

        After `grace_s` the batch is abandoned too (it may be waiting for budget): its writes
        stay pending, and a replay is safe (see the module docstring).
        """
        self._stopping = True
        for i, task in enumerate(self._tasks):
            # The reader is cancelled at once only while blocked in XREADGROUP: nothing is in
            # flight then.
            if i > 0 or self._reading:
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace_s)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._reader is not None:
            await self._reader.release()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.cycle(self._block_ms())
            except Exception as exc:  # the loop must outlive any one bad cycle
                self._trouble(exc, "cycle")
                await asyncio.sleep(1.0)

    async def _every(self, interval_s: float, step: Callable[[], Awaitable[Any]]) -> None:
        while not self._stopping:
            await asyncio.sleep(interval_s)
            try:
                await step()
            except Exception as exc:
                self._trouble(exc, step.__name__)

    def _trouble(self, exc: Exception, where: str) -> None:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # redis-py may turn a cancellation into a connection error: stop anyway.
            raise asyncio.CancelledError from exc
        if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            self._group_ready = False  # the stream was deleted: recreate the group and go on
        if isinstance(exc, REDIS_TROUBLE):
            self._metrics.redis_errors.labels("writes").inc()
            log.warning("write worker: Redis trouble", extra={"where": where, "error": repr(exc)})
        else:
            log.exception("write worker: %s failed", where)

    def _block_ms(self) -> int | None:
        if not self._held:
            return int(self.config.block_s * 1000)
        wait = min(h.due for h in self._held.values()) - time.monotonic()
        return None if wait <= 0.001 else int(min(wait, self.config.block_s) * 1000)

    # -- one cycle --------------------------------------------------------------------------------

    async def cycle(self, block_ms: int | None = None) -> int:
        """Fetch what there is, send what is due; returns the number of writes now finished."""
        await self.fetch(block_ms)
        finished = 0
        for batch in await self.due_batches():
            if self._stopping:
                break
            finished += await self.process(batch)
        return finished

    async def fetch(self, block_ms: int | None = None) -> int:
        """Claim abandoned entries, then read new ones (lingering to gather a batch)."""
        await self._ensure_group()
        count = await self._claim()
        room = self.config.max_held - len(self._held)
        if room <= 0:
            if self._reader is not None:
                await self._reader.release()  # full: let another replica read
            return count
        want = min(room, self.config.read_count)
        block = None if count or block_ms is None else max(1, block_ms)
        self._reading = True
        try:
            if self._reader is not None and not await self._reader.acquire():
                # Another replica reads new writes: wait as a blocking read would have. Redis
                # answered, so the shared breaker closes as after a read (see below).
                self._health.succeeded()
                await asyncio.sleep((block or 0) / 1000)
                return count
            entries = await self.store.read_new(self.consumer, want, block)
        finally:
            self._reading = False
        # Redis answered: the shared breaker closes now rather than at the next client call's
        # probe, which may be long in coming; until then reads are forwarded for no reason.
        self._health.succeeded()
        if entries and len(entries) < want and self.config.linger_s > 0 and not self._stopping:
            await asyncio.sleep(self.config.linger_s)
            entries += await self.store.read_new(self.consumer, want - len(entries), None)
        return count + await self._hold(entries)

    async def _ensure_group(self) -> None:
        if not self._group_ready:
            await self.store.ensure_group()
            self._group_ready = True

    async def _claim(self) -> int:
        now = time.monotonic()
        if now - self._last_claim < self.config.claim_idle_s / 2:
            return 0
        self._last_claim = now
        room = self.config.max_held - len(self._held)
        if room <= 0:
            return 0
        idle_ms = int(self.config.claim_idle_s * 1000)
        return await self._hold(await self.store.claim_idle(self.consumer, idle_ms, room))

    async def _hold(self, entries: Sequence[Entry]) -> int:
        added = 0
        for entry_id, fields in entries:
            if entry_id in self._held:
                continue
            try:
                item = WriteItem.from_fields(entry_id, fields)
            except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
                await self.store.bury_unreadable(entry_id, fields, f"unreadable entry: {exc!r}")
                self._metrics.writes.labels("unknown", "dead").inc()
                continue
            self._held[entry_id] = Held(item, time.monotonic())
            added += 1
        return added

    # -- choosing what to send --------------------------------------------------------------------

    async def due_batches(self) -> list[Batch]:
        held = list(self._held.values())
        items = await self._screen(await self._order.eligible(held, self._held.keys()))
        batches = plan(items, max_inputs=self.config.max_inputs, solo_keys=frozenset(self._solo))
        if self._stopping:
            return batches
        send, later, due = self._cadence.due(batches, time.monotonic())
        for batch in later:  # held until their kind's next flush; the reader wakes for it
            for item in batch.items:
                self._held[item.entry_id].due = max(self._held[item.entry_id].due, due)
        return send

    async def _screen(self, items: list[WriteItem]) -> list[WriteItem]:
        """Drop replays of finished writes; resolve creates that may already exist."""
        if not items:
            return items
        statuses = await self.store.statuses([i.write_id for i in items])
        done = [i for i in items if statuses[i.write_id].get("state") in (SENT, DEAD)]
        if done:
            await self.store.ack([i.entry_id for i in done])
            for item in done:
                self._forget(item)
        finished = {i.entry_id for i in done}
        rest = [i for i in items if i.entry_id not in finished]
        in_flight = [
            (i, int(statuses[i.write_id]["sending"]))
            for i in rest
            if i.op == OP_CREATE and "sending" in statuses[i.write_id]
        ]
        if not in_flight:
            return rest
        unresolved = await self._resolve(in_flight)
        return [
            i for i in rest if i.write_id in unresolved or "sending" not in statuses[i.write_id]
        ]

    async def _resolve(self, in_flight: list[tuple[WriteItem, int]]) -> set[str]:
        """Look up creates that may have landed; returns the write ids to send (again)."""
        ready_ms = now_ms() - int(self.config.lookup_delay_s * 1000)
        to_send: set[str] = set()
        groups: dict[tuple[str, str], list[tuple[WriteItem, int]]] = {}
        for item, since in in_flight:
            if since > ready_ms:  # HubSpot's search may not show it yet: look later
                self._postpone([item], (since - ready_ms) / 1000)
                continue
            key = (item.credential, item.request.object_type)
            groups.setdefault(key, []).append((item, since))
        for (credential, object_type), group in groups.items():
            to_send |= await self._resolve_group(credential, object_type, group)
        return to_send

    async def _resolve_group(
        self, credential: str, object_type: str, group: list[tuple[WriteItem, int]]
    ) -> set[str]:
        token = await self._vault.token_for(credential)
        items = [item for item, _ in group]
        if token is None:
            return {i.write_id for i in items}  # process() dead-letters them for want of a token

        async def call(method: str, path: str, body: bytes) -> tuple[int, Any]:
            return await self._send(credential, token, method, path, body, idempotent=True)

        try:
            found = await find_created(call, self.store, object_type, group)
        except RateLimited as exc:
            self._postpone(items, exc.retry_after_s)  # no budget to look: not an attempt
            return set()
        except (LookupFailed, GatewayError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("write worker: lookup failed", extra={"error": repr(exc)})
            await self._retry(items, Outcome("retry", error=f"lookup: {exc}", maybe_applied=True))
            return set()
        recovered = [(i, found[i.write_id]) for i in items if i.write_id in found]
        await self.store.finish_sent(recovered, counted=False)
        for item, _ in recovered:
            self._forget(item)
            self._metrics.writes.labels(item.kind, "sent").inc()
        return {i.write_id for i in items if i.write_id not in found}

    # -- sending ----------------------------------------------------------------------------------

    async def process(self, batch: Batch) -> int:
        """Send one batch (bisecting a whole-batch rejection) and record every write's outcome."""
        token = await self._vault.token_for(batch.credential)
        if token is None:
            for item in batch.items:  # the vault keeps tokens 30 days: nothing can send these
                await self._bury(item, "no token is stored for this credential", counted=False)
            return len(batch.items)
        verdict = await self.transmit(batch, token)
        return await self._conclude(batch, verdict, token)

    async def transmit(self, batch: Batch, token: str | None = None) -> Verdict | None:
        """Mark creates in flight, send, and read the answer; records nothing else.

        None: the budget was not granted in time (or no token is known), so nothing was sent.
        """
        token = token or await self._vault.token_for(batch.credential)
        if token is None:
            return None
        if batch.op == OP_CREATE:
            await self.store.mark_sending(batch.items, now_ms())
        idempotent = batch.op != OP_CREATE
        try:
            status, body = await self._send(
                batch.credential, token, "POST", batch.path, batch.body(), idempotent=idempotent
            )
        except RateLimited as exc:
            if batch.op == OP_CREATE:
                await self.store.clear_sending(batch.items)
            self._postpone(batch.items, exc.retry_after_s)
            return None
        except (GatewayError, aiohttp.ClientError, TimeoutError) as exc:
            error = getattr(exc, "message", None) or repr(exc)
            return [Outcome("retry", error=error, maybe_applied=True)] * len(batch.units)
        self._metrics.batch_size.labels(batch.items[0].kind).observe(len(batch.units))
        return judge(batch, status, body)

    async def _send(
        self, credential: str, token: str, method: str, path: str, body: bytes, *, idempotent: bool
    ) -> tuple[int, Any]:
        """(status, parsed JSON or None); raises RateLimited when no budget came in time."""
        answer = await self._client.call(
            credential,
            token,
            method,
            path,
            body,
            wait_s=self.config.send_wait_s,
            idempotent=idempotent,
        )
        return answer.status, answer.json()

    async def _conclude(self, batch: Batch, verdict: Verdict | None, token: str) -> int:
        if verdict is None:
            return 0
        if isinstance(verdict, Split):
            log.info("batch refused whole; bisecting", extra={"error": verdict.error})
            finished = 0
            for half in batch.halves():
                finished += await self._conclude(half, await self.transmit(half, token), token)
            return finished
        return await self._settle(batch, verdict)

    # -- recording --------------------------------------------------------------------------------

    async def _settle(self, batch: Batch, outcomes: Sequence[Outcome]) -> int:
        sent: list[tuple[WriteItem, Any]] = []
        finished = 0
        for unit, outcome in zip(batch.units, outcomes, strict=True):
            if outcome.fate == "sent":
                sent += [(item, outcome.result) for item in unit.items]
            elif outcome.fate == "retry":
                finished += await self._retry(unit.items, outcome)
            elif len(unit.items) > 1:
                # A merged update was refused: resend its writes one at a time to find the bad one.
                key = unit.items[0].order_key
                if key is not None:
                    self._solo.add(key)
            else:
                await self._bury(unit.items[0], outcome.error, counted=True)
                finished += 1
        await self.store.finish_sent(sent)
        for item, _ in sent:
            self._forget(item)
            self._metrics.writes.labels(item.kind, "sent").inc()
        if batch.op == OP_ASSOCIATE:
            await self._learn_types(batch, outcomes)
        return finished + len(sent)

    async def _retry(self, items: Sequence[WriteItem], outcome: Outcome) -> int:
        buried = 0
        for item in items:
            attempts = await self.store.note_failure(
                item, outcome.error, maybe_applied=outcome.maybe_applied
            )
            self._metrics.writes.labels(item.kind, "failed").inc()
            if attempts >= self.config.max_attempts:
                error = f"gave up after {attempts} attempts: {outcome.error}"
                await self._bury(item, error, counted=False, maybe_applied=outcome.maybe_applied)
                buried += 1
                continue
            delay = backoff_s(attempts, self.config.backoff_base_s, self.config.backoff_max_s)
            if outcome.maybe_applied and item.op == OP_CREATE:
                delay = max(delay, self.config.lookup_delay_s)
            self._postpone([item], delay)
        return buried

    async def _bury(
        self, item: WriteItem, error: str, *, counted: bool, maybe_applied: bool = False
    ) -> None:
        await self.store.bury(item, error, counted=counted, maybe_applied=maybe_applied)
        if not maybe_applied and await self.store.undo_counter(item.write_id):
            # HubSpot never took it: the seat its acceptance counted is free again.
            log.info("counter change undone", extra={"write_id": item.write_id})
        self._forget(item)
        self._metrics.writes.labels(item.kind, "dead").inc()
        log.warning(
            "write dead-lettered",
            extra={"write_id": item.write_id, "kind": item.kind, "error": error},
        )

    def _postpone(self, items: Sequence[WriteItem], delay_s: float) -> None:
        due = time.monotonic() + max(0.0, delay_s)
        for item in items:
            held = self._held.get(item.entry_id)
            if held is not None:
                held.due = max(held.due, due)

    def _forget(self, item: WriteItem) -> None:
        self._held.pop(item.entry_id, None)
        key = item.order_key
        if key in self._solo and not any(h.item.order_key == key for h in self._held.values()):
            self._solo.discard(key)

    async def _learn_types(self, batch: Batch, outcomes: Sequence[Outcome]) -> None:
        """Remember HubSpot's type ids for custom pairs, so accepted answers can carry them."""
        found: dict[str, str] = {}
        from_type = canonical_object_type(batch.object_type)
        to_type = canonical_object_type(batch.to_type or "")
        for unit, outcome in zip(batch.units, outcomes, strict=True):
            if outcome.fate != "sent":
                continue
            from_id = str(unit.payload["from"]["id"])
            results = outcome.result if isinstance(outcome.result, list) else [outcome.result]
            for result in results:
                spec = _spec_of(result)
                if spec is None:
                    continue
                forward = str((result.get("from") or {}).get("id")) == from_id
                pair = f"{from_type}>{to_type}" if forward else f"{to_type}>{from_type}"
                found[pair] = spec
        new = {k: v for k, v in found.items() if self._learned.get(k) != v}
        if new:
            await self.store.learn_types(new)
            self._learned.update(new)

    # -- housekeeping -----------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Keep held entries from looking abandoned; let go of any another worker took."""
        held = list(self._held)
        owned = await self.store.touch(self.consumer, held)
        for entry_id in held:
            if entry_id not in owned and entry_id in self._held:
                self._held.pop(entry_id)

    async def update_metrics(self) -> None:
        backlog = await self.store.backlog()
        self._metrics.write_pending.set(backlog.pending + backlog.undelivered)
        self._metrics.write_lag.set(backlog.oldest_age_s)
        self._metrics.dead_letters.set(backlog.dead)
        await self.store.forget_idle_consumers(CONSUMER_FORGET_MS)

    async def drain(self, timeout_s: float = 10.0) -> None:
        """Cycle until the stream holds no unfinished write (tests, tooling); the flush
        cadence may hold a kind back for up to one interval."""
        deadline = time.monotonic() + timeout_s
        while True:
            await self.cycle(block_ms=50)
            if not self._held:
                backlog = await self.store.backlog()
                if backlog.pending + backlog.undelivered == 0:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"writes not drained in {timeout_s} s")

    @property
    def held(self) -> int:
        return len(self._held)


def _spec_of(result: Any) -> str | None:
    if not isinstance(result, Mapping):
        return None
    spec = result.get("associationSpec")
    if not isinstance(spec, Mapping) or spec.get("associationTypeId") is None:
        return None
    return f"{spec.get('associationCategory')}:{spec.get('associationTypeId')}"
