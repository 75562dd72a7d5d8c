"""Write-behind against a real Valkey and the HubSpot simulator: batching, failures, order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer
from redis.exceptions import ConnectionError as RedisConnectionError

from proxy.budget.limiter import BucketSpec, Limiter, Priority
from proxy.budget.plans import CallPlan
from proxy.config import Settings
from proxy.errors import ServiceUnavailable
from proxy.hubspot.protocol import is_association_batch, is_search
from proxy.metrics import Metrics
from proxy.store.health import RedisHealth
from proxy.store.vault import TokenVault
from proxy.upstream.admitted import AdmittedCaller
from proxy.upstream.background import BackgroundClient
from proxy.upstream.rate_headers import RateLimitRecorder
from proxy.upstream.transport import Upstream
from proxy.writes.answers import WRITE_ID_HEADER
from proxy.writes.model import (
    ASSOCIATE_DEFAULT,
    NOTE_CREATE,
    UPDATE,
    WriteConfig,
    WriteItem,
    WriteRequest,
)
from proxy.writes.service import WriteBehind
from tests.kit.harness import TOKEN, sim_url

CRED = "cred0001"
EXAM_TYPE = "2-50158913"

FAST = {
    "linger_s": 0.1,
    "block_s": 0.05,
    "backoff_base_s": 0.05,
    "backoff_max_s": 0.2,
    "lookup_delay_s": 0.0,
    "send_wait_s": 5.0,
    "metrics_interval_s": 0.2,
}


def plan_for(credential: str, method: str, path: str) -> CallPlan:
    if is_search(method, path):
        buckets = [BucketSpec("search", 5, 1000)]
    elif is_association_batch(path):
        buckets = [BucketSpec("associations", 150, 10_000)]  # exempt from the 10 s bucket
    else:
        buckets = [BucketSpec("general", 100, 10_000)]
    return CallPlan(credential, buckets, Priority.BACKGROUND, deadline=0.0, idempotent=False)


@dataclass
class Harness:
    """Gateway parts a replica would run, minus the HTTP front: one WriteBehind per replica."""

    redis_url: str
    sim: TestServer
    replicas: list[WriteBehind] = field(default_factory=list)
    _closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return sim_url(self.sim)

    async def replica(self, health: RedisHealth | None = None, **config: Any) -> WriteBehind:
        redis = aioredis.from_url(self.redis_url)
        metrics = Metrics()
        upstream = Upstream(Settings(upstream=self.url))
        await upstream.start()
        limiter = Limiter(redis, redis_timeout_s=2.0)
        caller = AdmittedCaller(limiter, upstream, RateLimitRecorder(redis, metrics), metrics)
        writes = WriteBehind(
            redis,
            TokenVault(redis, "test-secret"),
            config=WriteConfig(**{**FAST, **config}),
            metrics=metrics,
            client=BackgroundClient(caller, plan_for),
            health=health,
        )
        self.replicas.append(writes)
        self._closers += [writes.stop, limiter.aclose, upstream.close, redis.aclose]
        return writes

    async def close(self) -> None:
        for close in self._closers:
            await close()

    async def sim_get(self, path: str, **params: str) -> Any:
        async with aiohttp.ClientSession() as s, s.get(self.url + path, params=params) as r:
            return await r.json()

    async def sim_post(self, path: str, body: Any) -> Any:
        async with aiohttp.ClientSession() as s, s.post(self.url + path, json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()

    async def seed(self, object_type: str, ids: list[str], **props: Any) -> None:
        objects = [{"type": object_type, "id": i, "properties": props} for i in ids]
        await self.sim_post("/__sim/seed", {"objects": objects})

    async def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = (await self.sim_get("/__sim/calls", token=TOKEN))["calls"]
        return calls

    async def objects(self, object_type: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.sim_get(f"/__sim/objects/{object_type}"))[
            "results"
        ]
        return found

    async def associated(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        body = await self.sim_get(f"/__sim/associations/{from_type}/{from_id}/{to_type}")
        return [str(r["toObjectId"]) for r in body["results"]]


@pytest.fixture
async def harness(redis_url: str, sim: TestServer) -> AsyncIterator[Harness]:
    h = Harness(redis_url, sim)
    yield h
    await h.close()


def assoc_req(from_id: str, to_id: str, from_type: str = "contacts", to_type: str = "deals") -> Any:
    path = f"/crm/v4/objects/{from_type}/{from_id}/associations/default/{to_type}/{to_id}"
    return WriteRequest.from_call(ASSOCIATE_DEFAULT, path, b"")


def note_req(body: str, ts: str = "1767261600000", **extra: Any) -> WriteRequest:
    return WriteRequest("notes", properties={"hs_note_body": body, "hs_timestamp": ts}, **extra)


async def wait_states(
    writes: WriteBehind, ids: list[str], states: set[str], within_s: float = 10.0
) -> list[dict[str, Any]]:
    async with asyncio.timeout(within_s):
        while True:
            found = [await writes.status(i, None) for i in ids]
            if all(s is not None and s["state"] in states for s in found):
                return [s for s in found if s is not None]
            await asyncio.sleep(0.02)


# -- batching ------------------------------------------------------------------------------------


async def test_100_concurrent_association_writes_cost_at_most_two_calls(harness: Harness) -> None:
    contacts = [str(100 + i) for i in range(100)]
    await harness.seed("contacts", contacts)
    await harness.seed("deals", ["9"])
    writes = await harness.replica()
    await writes.start()
    answers = await asyncio.gather(
        *(writes.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req(c, "9")) for c in contacts)
    )
    assert {a.status for a in answers} == {200}
    assert all(a.headers[WRITE_ID_HEADER] == a.write_id for a in answers)
    done = await wait_states(writes, [a.write_id for a in answers], {"sent"})
    assert {s["attempts"] for s in done} == {1}
    calls = await harness.calls()
    assert 1 <= len(calls) <= 2
    assert all(c["path"].endswith("/batch/associate/default") for c in calls)
    assert sorted(await harness.associated("deals", "9", "contacts")) == sorted(contacts)


async def test_100_concurrent_notes_cost_at_most_two_calls(harness: Harness) -> None:
    writes = await harness.replica()
    await writes.start()
    answers = await asyncio.gather(
        *(writes.accept(CRED, TOKEN, NOTE_CREATE, note_req(f"note {i}")) for i in range(100))
    )
    assert {a.status for a in answers} == {202}
    assert answers[0].body["status"] == "PENDING" and answers[0].body["writeId"]
    done = await wait_states(writes, [a.write_id for a in answers], {"sent"})
    calls = await harness.calls()
    assert 1 <= len(calls) <= 2
    notes = {n["id"]: n["properties"]["hs_note_body"] for n in await harness.objects("notes")}
    assert len(notes) == 100
    # Each write's status names the note HubSpot made for it (mapped by objectWriteTraceId).
    for i, status in enumerate(done):
        assert notes[status["result"]["id"]] == f"note {i}"


async def test_a_stream_of_writes_leaves_once_per_flush_interval(harness: Harness) -> None:
    contacts = [str(300 + i) for i in range(40)]
    await harness.seed("contacts", contacts)
    await harness.seed("deals", ["9"])
    writes = await harness.replica(flush_interval_s=2.0)
    await writes.start()
    assert writes.worker is not None
    answers = []
    for wave in range(4):  # four waves of ten; the first is sent before the others arrive
        wave_answers = await asyncio.gather(
            *(
                writes.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req(c, "9"))
                for c in contacts[wave * 10 : wave * 10 + 10]
            )
        )
        answers += wave_answers
        if wave == 0:
            await wait_states(writes, [a.write_id for a in wave_answers], {"sent"})
    await asyncio.sleep(0.3)  # several worker cycles (linger 0.1 s): each would send a batch

    assert len(await harness.calls()) == 1  # the kind left once; the next flush is not due
    assert writes.worker.held == 30
    await wait_states(writes, [a.write_id for a in answers], {"sent"})
    assert len(await harness.calls()) == 2  # waves 2-4 rode in one batch at the next flush
    assert sorted(await harness.associated("deals", "9", "contacts")) == sorted(contacts)


# -- bad items -----------------------------------------------------------------------------------


async def test_a_bad_note_goes_to_dead_letters_alone(harness: Harness) -> None:
    await harness.seed("contacts", ["1"])
    writes = await harness.replica()
    await writes.start()
    types = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}]
    link = [{"to": {"id": "1"}, "types": types}]
    bad_link = [{"to": {"id": "404"}, "types": types}]
    reqs = [note_req(f"n{i}", associations=tuple(link)) for i in range(9)]
    reqs.insert(4, note_req("bad", associations=tuple(bad_link)))
    answers = [await writes.accept(CRED, TOKEN, NOTE_CREATE, r) for r in reqs]
    done = await wait_states(writes, [a.write_id for a in answers], {"sent", "dead"})
    assert [s["state"] for s in done].count("dead") == 1 and done[4]["state"] == "dead"
    assert "does not exist" in done[4]["lastError"]
    assert len(await harness.calls()) == 1  # per-item errors: no bisecting needed
    assert len(await harness.objects("notes")) == 9
    [dead] = await writes.dead_letters()
    assert dead["writeId"] == answers[4].write_id and dead["kind"] == NOTE_CREATE
    assert "does not exist" in dead["error"]


async def test_an_association_to_a_missing_record_dies_alone_and_can_be_retried(
    harness: Harness,
) -> None:
    await harness.seed("contacts", ["1", "2", "3"])
    await harness.seed("deals", ["9"])
    writes = await harness.replica()
    await writes.start()
    pairs = [("1", "9"), ("2", "77"), ("3", "9")]
    answers = [await writes.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req(*p)) for p in pairs]
    done = await wait_states(writes, [a.write_id for a in answers], {"sent", "dead"})
    assert [s["state"] for s in done] == ["sent", "dead", "sent"]
    assert sorted(await harness.associated("deals", "9", "contacts")) == ["1", "3"]
    # The operator fixes the cause and retries the dead letter: it lands, and leaves the list.
    await harness.seed("deals", ["77"])
    assert await writes.retry_dead(answers[1].write_id) == answers[1].write_id
    [after] = await wait_states(writes, [answers[1].write_id], {"sent"})
    assert after["attempts"] == 1 and await writes.dead_letters() == []
    assert await harness.associated("deals", "77", "contacts") == ["2"]


async def test_drop_dead_forgets_a_dead_letter(harness: Harness) -> None:
    writes = await harness.replica()
    await writes.start()
    answer = await writes.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req("1", "2"))
    await wait_states(writes, [answer.write_id], {"dead"})
    [dead] = await writes.dead_letters()
    assert await writes.drop_dead(dead["id"]) == answer.write_id
    assert await writes.dead_letters() == [] and await writes.drop_dead(dead["id"]) is None
    status = await writes.status(answer.write_id, None)
    assert status is not None and status["state"] == "dead" and status["droppedAt"]


async def test_a_batch_refused_whole_is_bisected_to_the_bad_input(
    redis_url: str, aiohttp_server: Any
) -> None:
    """HubSpot answers 400 for a whole batch when one input is invalid; halves find it."""
    from aiohttp import web

    seen: list[int] = []

    async def batch_create(request: web.Request) -> web.Response:
        inputs = (await request.json())["inputs"]
        seen.append(len(inputs))
        if any(i["properties"].get("hs_note_body") == "BAD" for i in inputs):
            body = {"status": "error", "category": "VALIDATION_ERROR", "message": "bad value"}
            return web.json_response(body, status=400)
        results = [
            {"id": str(1000 + len(seen) * 100 + n), "objectWriteTraceId": i["objectWriteTraceId"]}
            for n, i in enumerate(inputs)
        ]
        return web.json_response({"status": "COMPLETE", "results": results}, status=201)

    app = web.Application()
    app.router.add_post("/crm/v3/objects/notes/batch/create", batch_create)
    harness = Harness(redis_url, await aiohttp_server(app))
    try:
        writes = await harness.replica()
        bodies = [f"n{i}" for i in range(16)]
        bodies[11] = "BAD"
        answers = [await writes.accept(CRED, TOKEN, NOTE_CREATE, note_req(b)) for b in bodies]
        assert writes.worker is not None
        await writes.worker.drain()
        states = [(await writes.status(a.write_id, None) or {})["state"] for a in answers]
        assert states == ["sent"] * 11 + ["dead"] + ["sent"] * 4
        # Depth first: 16 -> 8 ok + 8 -> 4 (bad) -> 2 ok + 2 -> 1 ok + 1 dead; then 4 ok.
        assert seen == [16, 8, 8, 4, 2, 2, 1, 1, 4]
    finally:
        await harness.close()


async def test_transient_failures_retry_then_dead_letter_after_max_attempts(
    harness: Harness,
) -> None:
    await harness.seed("contacts", ["1"])
    await harness.seed("deals", ["9"])
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 1.0})
    writes = await harness.replica(max_attempts=3)
    await writes.start()
    answer = await writes.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req("1", "9"))
    [status] = await wait_states(writes, [answer.write_id], {"dead"}, within_s=20)
    assert status["attempts"] == 3 and "gave up after 3 attempts" in status["lastError"]
    [dead] = await writes.dead_letters()
    assert "50" in dead["error"]  # HubSpot's 5xx status is in the reason


# -- crash between send and ack ------------------------------------------------------------------


async def test_replay_after_a_crash_between_send_and_ack_creates_nothing_twice(
    harness: Harness,
) -> None:
    contacts = [str(100 + i) for i in range(20)]
    await harness.seed("contacts", contacts)
    await harness.seed("deals", ["9"])
    first = await harness.replica(claim_idle_s=0.1, consumer="doomed")
    notes = [
        await first.accept(CRED, TOKEN, NOTE_CREATE, note_req(f"n{i}", ts=str(1767261600000 + i)))
        for i in range(20)
    ]
    links = [
        await first.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req(c, "9")) for c in contacts
    ]
    assert first.worker is not None
    await first.worker.fetch()
    batches = await first.worker.due_batches()
    assert sorted(len(b.units) for b in batches) == [20, 20]
    for batch in batches:
        await first.worker.transmit(batch)  # HubSpot answers... and the process dies: no ack
    assert len(await harness.objects("notes")) == 20

    second = await harness.replica(claim_idle_s=0.1, consumer="heir")
    await asyncio.sleep(0.15)
    assert second.worker is not None
    await second.worker.drain()

    notes_now = await harness.objects("notes")
    assert len(notes_now) == 20  # found by lookup, not created again
    assert sorted(await harness.associated("deals", "9", "contacts")) == sorted(contacts)
    stats = await harness.sim_get("/__sim/stats")
    assert stats["associations"] == 2 * 20  # each once, in both directions
    done = await wait_states(second, [w.write_id for w in notes + links], {"sent"})
    by_body = {n["properties"]["hs_note_body"]: n["id"] for n in notes_now}
    assert [s["result"]["id"] for s in done[:20]] == [by_body[f"n{i}"] for i in range(20)]
    creates = [c for c in await harness.calls() if c["path"].endswith("/batch/create")]
    assert len(creates) == 1


async def test_replay_of_a_create_that_never_left_sends_it_once(harness: Harness) -> None:
    first = await harness.replica(claim_idle_s=0.1, consumer="doomed")
    answer = await first.accept(CRED, TOKEN, NOTE_CREATE, note_req("lost before sending"))
    assert first.worker is not None
    await first.worker.fetch()
    [batch] = await first.worker.due_batches()
    await first.store.mark_sending(batch.items, 1767261600000)  # marked, then died

    second = await harness.replica(claim_idle_s=0.1, consumer="heir")
    await asyncio.sleep(0.15)
    assert second.worker is not None
    await second.worker.drain()
    [note] = await harness.objects("notes")
    [status] = await wait_states(second, [answer.write_id], {"sent"})
    assert status["result"]["id"] == note["id"] and not status["inFlight"]


# -- per-object order ----------------------------------------------------------------------------


def exam_update(value: int) -> WriteRequest:
    body = f'{{"properties":{{"total_bookings":"{value}"}}}}'.encode()
    return WriteRequest.from_call(UPDATE, f"/crm/v3/objects/{EXAM_TYPE}/5", body)


async def exam_total(harness: Harness) -> str:
    [exam] = await harness.objects(EXAM_TYPE)
    return str(exam["properties"]["total_bookings"])


@pytest.mark.parametrize(("lease_s", "most_calls"), [(3.0, 2), (0.0, None)])
async def test_one_replica_reads_a_bursts_writes_into_few_batches(
    harness: Harness, lease_s: float, most_calls: int | None
) -> None:
    """Writes accepted by two replicas over a flush interval: under the reader lease one worker
    holds them all and sends its first alone and the rest in one batch. With every replica
    reading (lease 0) each sends its own share on its own cadence (how many calls that takes
    depends on which replica Redis hands each write to); every write lands either way."""
    links = 20
    await harness.seed("contacts", [str(i) for i in range(1, links + 1)])
    await harness.seed("deals", ["9"])
    replicas = [
        await harness.replica(
            consumer=name, flush_interval_s=2.0, reader_lease_s=lease_s, linger_s=0.0
        )
        for name in ("a", "b")
    ]
    for replica in replicas:
        await replica.start()
    ids = []
    for i in range(1, links + 1):
        answer = await replicas[i % 2].accept(
            CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req(str(i), "9")
        )
        ids.append(answer.write_id)
        await asyncio.sleep(0.05)  # spread over half the flush interval
    await wait_states(replicas[0], ids, {"sent"})

    sent = [c for c in await harness.calls() if "/associations/" in c["path"]]
    assert sorted(await harness.associated("deals", "9", "contacts")) == sorted(
        str(i) for i in range(1, links + 1)
    )
    if most_calls is not None:
        assert len(sent) <= most_calls, sent


async def test_two_updates_in_a_row_end_with_the_later_value(harness: Harness) -> None:
    await harness.seed(EXAM_TYPE, ["5"], total_bookings="0", capacity="10")
    writes = await harness.replica()
    await writes.start()
    first = await writes.accept(CRED, TOKEN, UPDATE, exam_update(1))
    second = await writes.accept(CRED, TOKEN, UPDATE, exam_update(2))
    assert first.status == 200 and first.body["properties"]["total_bookings"] == "1"
    await wait_states(writes, [first.write_id, second.write_id], {"sent"})
    assert await exam_total(harness) == "2"


async def test_a_failing_update_is_not_overtaken_by_a_later_one(harness: Harness) -> None:
    """Replica A holds update 1, failing; replica B gets update 2 and must wait for it. (Both
    read new writes, as when A's reader lease lapsed while its batch waited for budget.)"""
    await harness.seed(EXAM_TYPE, ["5"], total_bookings="0")
    a = await harness.replica(consumer="a", backoff_base_s=0.3, backoff_max_s=0.3, reader_lease_s=0)
    b = await harness.replica(consumer="b", reader_lease_s=0)
    assert a.worker is not None and b.worker is not None
    await a.store.ensure_group()
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 1.0})
    first = await a.accept(CRED, TOKEN, UPDATE, exam_update(1))
    await a.worker.cycle()  # sent, failed (5xx): stays pending with A, backing off
    status = await a.status(first.write_id, None)
    assert status is not None and status["state"] == "failed" and status["attempts"] == 1

    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 0.0})
    second = await b.accept(CRED, TOKEN, UPDATE, exam_update(2))
    calls_before = len(await harness.calls())
    await b.worker.cycle()
    assert await b.worker.due_batches() == []  # blocked behind A's pending update
    assert len(await harness.calls()) == calls_before and await exam_total(harness) == "0"

    await a.start()
    await b.start()
    await wait_states(a, [first.write_id, second.write_id], {"sent"})
    assert await exam_total(harness) == "2"
    updates = [c for c in await harness.calls() if c["path"].endswith("/batch/update")]
    assert [c["status"] for c in updates][-2:] == [200, 200]


async def test_one_worker_merges_a_retried_update_with_the_later_one(harness: Harness) -> None:
    await harness.seed(EXAM_TYPE, ["5"], total_bookings="0")
    writes = await harness.replica(backoff_base_s=1.0, backoff_max_s=1.0)  # >= 0.5 s
    assert writes.worker is not None
    await writes.store.ensure_group()
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 1.0})
    first = await writes.accept(CRED, TOKEN, UPDATE, exam_update(1))
    await writes.worker.cycle()
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 0.0})
    second = await writes.accept(CRED, TOKEN, UPDATE, exam_update(2))
    await writes.worker.cycle()  # 2 is read but must wait for 1's backoff
    assert await exam_total(harness) == "0"
    await writes.worker.drain()
    assert await exam_total(harness) == "2"
    states = [await writes.status(w.write_id, None) for w in (first, second)]
    assert [s["state"] for s in states if s] == ["sent", "sent"]


# -- accepting -----------------------------------------------------------------------------------


async def test_redis_down_at_accept_time_refuses_with_503() -> None:
    redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    metrics = Metrics()
    writes = WriteBehind(redis, TokenVault(redis, "s"), metrics=metrics)
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await writes.accept(CRED, TOKEN, NOTE_CREATE, note_req("x"))
        assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "1"
        refused = metrics.registry.get_sample_value(
            "hubspot_proxy_writes_total", {"kind": NOTE_CREATE, "state": "refused"}
        )
        assert refused == 1
    finally:
        await redis.aclose()


@pytest.mark.parametrize("others_answered", [True, False])
async def test_a_slow_accept_waits_while_redis_answers_others(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, others_answered: bool
) -> None:
    """An accept slower than its timeout is kept while Redis answers other calls (a starved
    machine) and stored once; with nothing answered meanwhile (Redis away) it gets its 503."""
    health = RedisHealth()
    writes = await harness.replica(health, accept_timeout_s=0.2)
    enqueue = writes.store.enqueue
    stored: list[str] = []

    async def slow_enqueue(item: WriteItem) -> str:
        await asyncio.sleep(0.3)  # past one timeout, within the patience
        stored.append(await enqueue(item))
        return stored[-1]

    async def others() -> None:
        while others_answered:
            health.succeeded()  # the limiter's and the caches' calls, answered
            await asyncio.sleep(0.02)

    monkeypatch.setattr(writes.store, "enqueue", slow_enqueue)
    answering = asyncio.create_task(others())
    try:
        if others_answered:
            answer = await writes.accept(CRED, TOKEN, NOTE_CREATE, note_req("slow"))
            assert answer.status == 202 and len(stored) == 1
            assert (await writes.status(answer.write_id, None) or {}).get("state") == "queued"
        else:
            with pytest.raises(ServiceUnavailable):
                await writes.accept(CRED, TOKEN, NOTE_CREATE, note_req("slow"))
            await asyncio.sleep(0.3)
            assert stored == []  # given up, and not stored behind the client's back
    finally:
        answering.cancel()
    assert await writes.store.redis.xlen(writes.store.keys.stream) == len(stored)


async def test_a_stream_read_redis_answered_closes_the_shared_breaker(harness: Harness) -> None:
    # A breaker left open after Redis hung, with no client call to probe it, kept the gateway
    # forwarding exam reads (HubSpot's count) while its worker was talking to Redis again.
    health = RedisHealth()
    writes = await harness.replica(health=health)
    health.failed(RedisConnectionError("Redis went away"))
    assert writes.worker is not None and health.is_open
    assert not health.should_try()  # no probe is due: only the worker's read can close it

    await writes.worker.fetch()

    assert not health.is_open


async def test_status_follows_a_write_from_queued_to_sent(harness: Harness) -> None:
    writes = await harness.replica()
    answer = await writes.accept(CRED, TOKEN, NOTE_CREATE, note_req("tracked"))
    queued = await writes.status(answer.write_id, None)
    assert queued is not None
    assert (queued["state"], queued["attempts"], queued["result"]) == ("queued", 0, None)
    assert await writes.status("no-such-write", None) is None
    assert await writes.status(answer.write_id, CRED) == queued
    assert await writes.status(answer.write_id, "another-credential") is None
    await writes.start()
    [sent] = await wait_states(writes, [answer.write_id], {"sent"})
    assert sent["result"]["properties"]["hs_note_body"] == "tracked" and sent["sentAt"]


async def server_time(redis: aioredis.Redis) -> float:
    seconds, micros = await redis.time()
    return float(seconds + micros / 1e6)


async def test_metrics_report_backlog_and_dead_letters(harness: Harness) -> None:
    writes = await harness.replica()
    assert writes.worker is not None
    await writes.store.ensure_group()
    await writes.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req("1", "2"))
    [(entry_id, _)] = await writes.store.redis.xrange(writes.store.keys.stream) or []
    assert isinstance(entry_id, bytes)
    born_s = int(entry_id.split(b"-")[0]) / 1000
    before_s = await server_time(writes.store.redis)
    await writes.worker.update_metrics()
    after_s = await server_time(writes.store.redis)
    sample = writes.metrics.registry.get_sample_value
    assert sample("hubspot_proxy_write_pending", {}) == 1
    lag = sample("hubspot_proxy_write_lag_seconds", {})
    assert lag is not None
    # the age of the oldest entry by Redis's clock, as it was while the metrics were read
    assert before_s - born_s <= lag <= after_s - born_s
    await writes.worker.drain()  # both records are missing: dead
    await writes.worker.update_metrics()
    assert sample("hubspot_proxy_write_pending", {}) == 0
    assert sample("hubspot_proxy_dead_letters", {}) == 1
    assert sample("hubspot_proxy_batch_size_count", {"kind": ASSOCIATE_DEFAULT}) == 1


async def test_stop_leaves_unfinished_writes_pending_for_another_replica(
    harness: Harness,
) -> None:
    await harness.seed("contacts", ["1"])
    await harness.seed("deals", ["9"])
    first = await harness.replica(claim_idle_s=0.1, consumer="leaving", linger_s=0.0)
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 1.0})
    await first.start()
    answer = await first.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req("1", "9"))
    await wait_states(first, [answer.write_id], {"failed"})
    await first.stop()
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 0.0})
    second = await harness.replica(claim_idle_s=0.1, consumer="staying")
    await second.start()
    await wait_states(second, [answer.write_id], {"sent"})
    assert await harness.associated("deals", "9", "contacts") == ["1"]


async def test_a_worker_backing_off_keeps_its_entries_from_other_replicas(
    harness: Harness,
) -> None:
    """Idle time is refreshed while a write waits, so only a dead worker's entries are claimed."""
    await harness.seed("contacts", ["1"])
    await harness.seed("deals", ["9"])
    await harness.sim_post("/__sim/config", {"fault_5xx_rate": 1.0})
    a = await harness.replica(consumer="a", claim_idle_s=0.3, backoff_base_s=1.0)
    b = await harness.replica(consumer="b", claim_idle_s=0.3)
    await a.start()
    await b.start()
    answer = await a.accept(CRED, TOKEN, ASSOCIATE_DEFAULT, assoc_req("1", "9"))
    await wait_states(a, [answer.write_id], {"failed"})
    owners: set[object] = set()
    for _ in range(75):  # many of b's claim rounds, over several idle timeouts
        await asyncio.sleep(0.02)
        rows = await a.store.redis.xpending_range(a.store.keys.stream, "writers", "-", "+", 10)
        owners |= {r["consumer"] for r in rows}
    assert owners == {b"a"}
