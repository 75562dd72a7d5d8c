"""One breaker for the one Redis client, against a real Valkey server that hangs (SIGSTOP).

A hung Redis used to cost every call 1.5 s and every write accept 1.0 s (issue 13, defect 15).
The breaker opens on the first timeout; until a probe finds Redis answering again no call of
the limiter, the rules' store or the write accept touches Redis. A write accept, which has no
answer without Redis, waits for it through the breaker's first seconds (a stall,
`STALL_WAIT_S`), and is refused at once after that.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis

from proxy.app import SERVICES
from proxy.budget.limiter import BucketSpec, Limiter, Priority
from proxy.errors import ServiceUnavailable
from proxy.metrics import Metrics
from proxy.store.health import STALL_WAIT_S, RedisHealth
from proxy.store.rule_store import UNAVAILABLE, RuleRedis
from proxy.store.vault import TokenVault
from proxy.writes.model import UPDATE, WriteRequest
from proxy.writes.service import WriteBehind
from tests.kit.harness import AUTH, GatewayFactory, SimFactory, sim_url
from tests.kit.processes import start_valkey
from tests.kit.rulefiles import notes_written_behind

pytestmark = pytest.mark.timeout(60)

TIMEOUT_S = 0.25  # the documented bound (HUBSPOT_PROXY_REDIS_TIMEOUT_S)
SLOW_S = 0.75  # generous: a call this slow waited for Redis, whatever the machine's load
PROBE_S = STALL_WAIT_S + 2.0
CALLS = 10
SPEC = BucketSpec("general", 1000, 10_000)
EXAMS = "2-50158913"
NOTE = {"properties": {"hs_note_body": "x", "hs_timestamp": "2030-01-01T00:00:00Z"}}


class Clock:
    """The breaker's clock: no probe is due until the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Parts:
    def __init__(self, client: aioredis.Redis, clock: Clock) -> None:
        self.metrics = Metrics()
        # No probe is due until well past the stall: accepts are refused at once from then on.
        self.health = RedisHealth(clock=clock, probe_interval_s=PROBE_S)
        self.limiter = Limiter(client, redis_timeout_s=TIMEOUT_S, health=self.health)
        self.store = RuleRedis(
            client, timeout_s=TIMEOUT_S, metrics=self.metrics, health=self.health
        )
        self.writes = WriteBehind(
            client, TokenVault(client, "test-secret"), metrics=self.metrics, health=self.health
        )

    async def call(self, cred: str = "cred0001") -> tuple[float, bool, object]:
        """What a forwarded call asks of Redis: admission, then a cache read."""
        started = time.monotonic()
        admitted = await self.limiter.acquire(cred, [SPEC], priority=Priority.DEFAULT, max_wait_s=5)
        cached = await self.store.run("index", lambda r: r.get("cached"))
        return time.monotonic() - started, admitted.fallback, cached

    async def refused_accept(self) -> float:
        started = time.monotonic()
        write = WriteRequest.from_call(
            UPDATE, "/crm/v3/objects/contacts/1", b'{"properties":{"a":"1"}}'
        )
        with pytest.raises(ServiceUnavailable):  # not durable: not accepted (invariant 5)
            await self.writes.accept("cred0001", "token-not-real", UPDATE, write)
        return time.monotonic() - started

    def redis_errors(self) -> float:
        return sum(
            s.value
            for m in self.metrics.registry.collect()
            if m.name == "hubspot_proxy_redis_errors"
            for s in m.samples
            if s.name.endswith("_total")
        )


@pytest.fixture
async def hung_redis() -> AsyncIterator[tuple[aioredis.Redis, int]]:
    server = start_valkey()
    client = aioredis.from_url(str(server.connection_url))
    pid = int((await client.info("server"))["process_id"])
    try:
        yield client, pid
    finally:
        os.kill(pid, signal.SIGCONT)
        await client.aclose()
        server.stop()


async def test_a_hung_redis_costs_one_timeout_then_nothing_until_it_answers(
    hung_redis: tuple[aioredis.Redis, int],
) -> None:
    client, pid = hung_redis
    clock = Clock()
    parts = Parts(client, clock)
    await client.set("cached", "1")
    assert (await parts.call())[1:] == (False, b"1")  # through Redis

    os.kill(pid, signal.SIGSTOP)
    first = await parts.call()
    assert parts.health.is_open  # the first timeout opened it
    assert first[1:] == (True, UNAVAILABLE)  # admitted in process, no cached answer
    round_trips, errors = parts.limiter.stats().redis_round_trips, parts.redis_errors()

    later = [await parts.call() for _ in range(CALLS)]
    clock.now += STALL_WAIT_S  # Redis has hung for longer than a stall: it is away
    accepts = [await parts.refused_accept() for _ in range(CALLS)]
    assert all(c[1:] == (True, UNAVAILABLE) for c in later)
    assert parts.limiter.stats().redis_round_trips == round_trips  # Redis not touched
    assert parts.redis_errors() == errors + CALLS  # each refused accept counted, none tried
    assert [c[0] for c in later if c[0] > SLOW_S] == []
    assert [s for s in accepts if s > SLOW_S] == []

    os.kill(pid, signal.SIGCONT)
    assert (await parts.call())[1:] == (True, UNAVAILABLE)  # no probe due yet
    clock.now += PROBE_S
    # The probe finds Redis: closed. Before admitting, the limiter hands back the calls it
    # admitted in process (slots of cred0001's window); another credential is admitted at once.
    assert (await parts.call("cred0002"))[1:] == (False, b"1")
    assert not parts.health.is_open
    in_process = 1 + CALLS + 1  # the first, the later ones, the one before the probe
    window = parts.limiter.keys.window("cred0001", SPEC.name)
    assert await client.zcard(window) >= 1 + in_process  # and the one through Redis


async def test_through_the_gateway_a_hung_redis_slows_one_call_not_every_call(
    hung_redis: tuple[aioredis.Redis, int],
    sim_factory: SimFactory,
    gateway_factory: GatewayFactory,
    tmp_path: Path,
) -> None:
    """Exam reads (object cache and counter overlay in Redis) and notes accepted for
    write-behind: each used to wait on Redis (1.5 s a read, 1.0 s an accept) while it hung.
    Now the first read pays a timeout, and the first note waits out the stall (a note has no
    answer without Redis) before its 503; the others are answered at once."""
    client, pid = hung_redis
    sim = await sim_factory()
    port = client.get_connection_kwargs()["port"]  # type: ignore[no-untyped-call]
    rules = str(notes_written_behind(tmp_path))  # an opt-in: notes are created synchronously
    gw = await gateway_factory(
        sim_url(sim), redis_url=f"redis://127.0.0.1:{port}", rules_path=rules
    )
    assert gw.app is not None
    services = gw.app[SERVICES]
    seeded = await gw_sim_seed(sim_url(sim), EXAMS, {"capacity": "10", "total_bookings": "0"})
    read = f"/crm/v3/objects/{EXAMS}/{seeded}"

    async def timed(method: str, path: str, body: object = None) -> tuple[float, int]:
        started = time.monotonic()
        resp = await gw.request(method, path, json=body, headers=AUTH)
        await resp.read()
        return time.monotonic() - started, resp.status

    assert (await timed("GET", read))[1] == 200  # warm: Redis answers
    os.kill(pid, signal.SIGSTOP)
    reads = [await timed("GET", read) for _ in range(CALLS)]
    assert services.limiter.fallback_active  # the breaker opened
    notes = [await timed("POST", "/crm/v3/objects/notes", NOTE) for _ in range(CALLS)]
    assert [status for _, status in reads] == [200] * CALLS  # forwarded, within budget
    assert [status for _, status in notes] == [503] * CALLS  # not durable, not accepted
    slow_reads = [s for s, _ in reads if s > SLOW_S]
    assert len(slow_reads) <= 1, reads  # at most the call that met the hang first
    assert [s for s, _ in notes[1:] if s > SLOW_S] == [], notes
    assert notes[0][0] <= STALL_WAIT_S + 2 * SLOW_S  # the stall, and one probe's timeout


async def gw_sim_seed(url: str, type_id: str, properties: dict[str, str]) -> str:
    objects = [{"type": type_id, "properties": properties}]
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/__sim/seed", json={"objects": objects}) as r,
    ):
        answer = await r.json()
    return str(answer["objects"][0]["id"])
