"""Per-credential budget admission shared by every replica.

One Lua call (`lua/admit.lua`, timed by Redis `TIME`) reserves the earliest slot at which a call
fits every bucket it needs, or reserves nothing; the caller then sleeps until that slot. Within a
replica, callers of one (credential, bucket set) take turns asking Redis in order of
(priority, arrival), so higher classes go first when budget frees. While the lane's last reply
found budget free now, a caller gives up its turn as soon as its ask is queued: the asks made
while one round trip is out leave together in that order (`asks.AskBatch`), so a credential
whose budget does not bind is not held to one admission per round trip (a lane, dropped
whenever no call is in it, comes back free if it left free within the last second). Across replicas,
priority comes from how far ahead each class may reserve (its horizon): background only takes a
slot free now.
When Redis is unreachable or slow, `fallback.LocalBudget` admits this replica's share instead;
once Redis answers again, the calls it admitted become slots of Redis's windows (`absorb.lua`).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import math
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from proxy.budget.asks import Arg, Ask, AskBatch, Key, batch_cap
from proxy.budget.fallback import LocalBudget, drop_cred
from proxy.budget.model import (
    DEFAULT_HORIZONS_S,
    LEARNED_TTL_WINDOWS,
    Admission,
    BucketSpec,
    BudgetExceeded,
    Priority,
    ProcessBehind,
    SlotReply,
    SlotStatus,
    policy_for,
)
from proxy.store.health import REDIS_TROUBLE, RedisHealth, redis_timeout
from proxy.store.keys import PREFIX, tagged
from proxy.store.scripts import run_script_batch, script

__all__ = [
    "Admission",
    "BucketSpec",
    "BudgetExceeded",
    "KeyScheme",
    "Limiter",
    "LimiterStats",
    "Priority",
]

log = logging.getLogger("proxy.limiter")
T = TypeVar("T")

_STATUS: Final[dict[int, SlotStatus]] = {0: "reserved", 1: "later", 2: "daily_full"}
_CRED = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
LANE_ARGS_MAX: Final = 4096
# Refused credentials whose keys wait for Redis to be back to be deleted (`forget`).
FORGET_LATER_MAX: Final = 4096
# Retry-After of a new flow refused because the process is behind: long enough for the flows
# under way to move on, short next to a client's timeout.
BEHIND_RETRY_AFTER_S: Final = 2.0
# A lane gone idle this recently comes back as it left: free (see `_enter_lane`).
FREE_REMEMBERED_S: Final = 1.0
_NAMES: Final = {p: p.name for p in Priority}


@dataclass(frozen=True)
class KeyScheme:
    """Redis keys; `{cred}` is the Cluster hash tag, so one call's keys share a slot."""

    prefix: str = PREFIX

    def data(self, cred: str, spec: BucketSpec) -> str:
        kind = "daily" if spec.kind == "daily" else "win"
        return tagged(cred, kind, spec.name, prefix=self.prefix)

    def window(self, cred: str, bucket: str) -> str:
        return tagged(cred, "win", bucket, prefix=self.prefix)

    def pause(self, cred: str, bucket: str) -> str:
        return tagged(cred, "pause", bucket, prefix=self.prefix)

    def learned(self, cred: str, bucket: str) -> str:
        return tagged(cred, "learned", bucket, prefix=self.prefix)


@dataclass(frozen=True)
class LimiterStats:
    redis_round_trips: int
    admitted: int
    admitted_fallback: int
    rejected: int
    redis_errors: int
    fallback_active: bool


@dataclass(frozen=True)
class _Reserved:
    slot_ms: int
    at: float  # local clock time of the slot
    token: str | None  # None: admitted by the in-process budget


@dataclass(frozen=True)
class _Checked:
    """A call's buckets as checked once (`Limiter._checked`), and its lane's key."""

    buckets: Sequence[BucketSpec]  # as the caller passed them: the memo holds while they do
    specs: tuple[BucketSpec, ...]
    daily: bool
    lane_key: tuple[str, tuple[str, ...]]
    # Its bucket that counts flows (`max_delay_ms` set): the call is a new flow's, refused while
    # the process is further behind than that (None: not a flow's admission).
    flows: BucketSpec | None = None


@dataclass(frozen=True)
class _Later:
    at: float  # local clock time at which to ask again


class _Lane:
    """Callers of one (credential, bucket set) on this replica, one at a time by (priority, seq)."""

    def __init__(self) -> None:
        self.users = 0
        self.next_slot = -math.inf  # lower bound (local clock) of the next free slot
        self._busy = False
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self.asks: AskBatch | None = None
        self.free = False  # the last reply reserved a slot free now: asks may share a trip

    def enter_now(self) -> bool:
        """Take the turn if nobody holds it (the common case: no timer needed to wait)."""
        if self._busy:
            return False
        self._busy = True
        return True

    async def enter(self, priority: Priority, seq: int) -> None:
        if self.enter_now():
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (int(priority), seq, fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # the turn was handed to us: pass it on
                self.leave()
            raise

    def leave(self) -> None:
        while self._heap:
            fut = heapq.heappop(self._heap)[2]
            if not fut.done():
                fut.set_result(None)  # the turn passes on; _busy stays set
                return
        self._busy = False


class _Turn:
    """A caller's turn in its lane, given up once: when its request joined the lane's batch,
    or when its step is over, whichever comes first."""

    def __init__(self, lane: _Lane) -> None:
        self._lane: _Lane | None = lane

    def leave(self) -> None:
        if self._lane is not None:
            self._lane.leave()
            self._lane = None


class _Scripts:
    def __init__(self, redis: Redis) -> None:
        self.admit = script(redis, "admit_core", "admit")
        self.admit_many = script(redis, "admit_core", "admit_many")
        self.release = script(redis, "release")
        self.pause = script(redis, "pause")
        self.absorb = script(redis, "absorb")
        self.learn = script(redis, "learn")


def admit_request(
    keys: KeyScheme,
    cred: str,
    specs: Sequence[BucketSpec],
    max_ms: int,
    token: str,
    reset_ms: int | None,
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV for admit.lua (layout documented in the script)."""
    names: list[str] = []
    args: list[str | int] = [max_ms, token]
    for spec in specs:
        names += [keys.data(cred, spec), keys.pause(cred, spec.name), keys.learned(cred, spec.name)]
        args += ["borrow" if spec.borrow else spec.kind, spec.limit, spec.window_ms, reset_ms or 0]
    return names, args


def admit_many_request(asks: Sequence[Ask]) -> tuple[Sequence[Key], list[Arg]] | None:
    """KEYS and ARGV for admit_many.lua: the asks' shared keys and bucket values, then each
    ask's max_ms and token; None for one ask, or asks whose buckets differ."""
    if len(asks) < 2:
        return None
    first = asks[0]
    keys, shared = first.keys, first.args[2:]
    if any(ask.keys != keys or ask.args[2:] != shared for ask in asks):
        return None
    args: list[Arg] = [len(asks), *shared]
    for ask in asks:
        args += ask.args[:2]
    return keys, args


def split_admit_many(joined: bytes | str) -> list[list[str]]:
    """admit_many.lua's one string back into one admit.lua reply per call."""
    numbers = (joined.decode() if isinstance(joined, bytes) else joined).split(",")
    return [numbers[i : i + 4] for i in range(0, len(numbers), 4)]


def parse_admit(reply: Sequence[Any], specs: Sequence[BucketSpec]) -> SlotReply:
    status, slot_ms, now_ms, index = (int(x) for x in reply)
    return SlotReply(_STATUS[status], slot_ms, now_ms, specs[index - 1].name)


def _ms(seconds: float) -> int:
    return max(0, math.ceil(seconds * 1000)) if math.isfinite(seconds) else 2**53


class Limiter:
    def __init__(
        self,
        redis: Redis | None,
        *,
        key_prefix: str = PREFIX,
        redis_timeout_s: float = 0.25,
        expected_replicas: int = 1,
        horizons: Mapping[Priority, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_transition: Callable[[bool], None] | None = None,
        probe_interval_s: float = 1.0,
        health: RedisHealth | None = None,
        behind: Callable[[], float] | None = None,
    ) -> None:
        """`health` is the breaker shared with every other user of the same Redis client;
        without it the limiter keeps its own (from `on_transition` and `probe_interval_s`).
        `behind()` is how far this process is behind, in seconds (`proxy.budget.overload`): a
        bucket with `max_delay_ms` (new flows) refuses while it is further behind than that."""
        self._behind = behind
        self._keys = KeyScheme(key_prefix)
        self._timeout = redis_timeout_s
        self._horizons = {**DEFAULT_HORIZONS_S, **(horizons or {})}
        self._clock = clock
        self._sleep = sleep  # waits are on `clock`: tests pass both to move time by hand
        self._redis = redis
        self._scripts = None if redis is None else _Scripts(redis)
        self._health = health or RedisHealth(
            available=redis is not None,
            clock=clock,
            probe_interval_s=probe_interval_s,
            on_transition=on_transition,
        )
        self._local = LocalBudget(expected_replicas=expected_replicas, clock=clock, sleep=sleep)
        self._lanes: dict[tuple[str, tuple[str, ...]], _Lane] = {}
        self._seq = itertools.count()
        # A reservation's id in the window's log: unique per replica (random prefix) and per
        # call (counter), as random tokens were, without drawing randomness per call.
        prefix = secrets.token_hex(6)
        self._tokens = (f"{prefix}{n:x}" for n in itertools.count())
        self._waiting: dict[tuple[str, str], int] = {}
        self._checked_calls: dict[tuple[str, int], _Checked] = {}
        # lane key -> when a lane whose last reply was free went idle
        self._left_free: dict[tuple[str, tuple[str, ...]], float] = {}
        self._specs: dict[tuple[str, str], BucketSpec] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._counts: Counter[str] = Counter()
        self._lane_args: dict[
            tuple[str, int, int | None],
            tuple[Sequence[BucketSpec], list[bytes], list[bytes]],
        ] = {}
        # (cred, bucket) -> local clock times of the slots Redis gave here in about one window
        self._recent_slots: dict[tuple[str, str], deque[float]] = {}
        # Keys of refused credentials that Redis could not delete when they were forgotten.
        self._forget_later: dict[str, set[str]] = {}
        self._back: asyncio.Task[None] | None = None

    # -- public API ---------------------------------------------------------------------------

    async def acquire(
        self,
        cred: str,
        buckets: Sequence[BucketSpec],
        *,
        priority: Priority,
        max_wait_s: float,
        daily_reset_ms: int | None = None,
    ) -> Admission:
        """Wait until the call may be sent in every bucket, or raise BudgetExceeded at once."""
        checked = self._checked(cred, buckets, daily_reset_ms)
        specs = checked.specs
        start = self._clock()
        deadline = start + max(0.0, max_wait_s)
        lane = self._enter_lane(checked, priority)
        try:
            try:
                self._refuse_if_behind(checked)
                step = await self._admission(lane, cred, specs, priority, deadline, daily_reset_ms)
                await self._until_slot(lane, cred, specs, step)
                # A flow that waited for its slot while the process fell behind starts no later.
                self._refuse_if_behind(checked)
            except BudgetExceeded:
                self._counts["rejected"] += 1
                raise
        finally:
            self._leave_lane(checked, lane, priority)
        fallback = step.token is None
        self._counts["admitted_fallback" if fallback else "admitted"] += 1
        return Admission(step.slot_ms, self._clock() - start, fallback)

    def _refuse_if_behind(self, checked: _Checked) -> None:
        """ProcessBehind for a new flow while the process is further behind than allowed."""
        flows = checked.flows
        if flows is None or flows.max_delay_ms is None or self._behind is None:
            return
        if self._behind() * 1000 > flows.max_delay_ms:
            raise ProcessBehind(BEHIND_RETRY_AFTER_S, flows.name, policy_for(flows))

    def give_back(self, cred: str, buckets: Sequence[BucketSpec], admission: Admission) -> None:
        """An admitted call that never left (no connection could be made): in fallback its
        daily units go back to this replica's share. A Redis admission keeps its slot: the
        window is short, and the shared log cannot tell this call's entry from a sent one."""
        if admission.fallback:
            self._local.give_back(cred, buckets)

    async def pause(self, cred: str, bucket: str, seconds: float) -> None:
        """Upstream 429: no replica sends in this bucket for `seconds`."""
        if seconds <= 0:
            return
        self._local.pause(cred, bucket, seconds)
        if self._scripts is not None:
            keys = [self._keys.pause(cred, bucket)]
            await self._best_effort(self._scripts.pause, keys, [_ms(seconds)])

    async def learn(
        self,
        cred: str,
        bucket: str,
        upstream_max: int,
        upstream_remaining: int,
        window_ms: int,
        *,
        limit: int | None = None,
    ) -> None:
        """Shrink `bucket`'s limit when HubSpot counted calls that were not ours (all replicas).

        `limit` defaults to the one last acquired with for (cred, bucket); without either the
        headers are ignored. The shrunk limit recovers by a tenth of `limit` per window.
        """
        seen = self._specs.get((cred, bucket))
        limit = limit or (seen.limit if seen is not None and seen.kind == "window" else None)
        if self._scripts is None or limit is None or window_ms <= 0:
            return
        keys = [self._keys.window(cred, bucket), self._keys.learned(cred, bucket)]
        args = [limit, upstream_max, upstream_remaining, window_ms, LEARNED_TTL_WINDOWS]
        await self._best_effort(self._scripts.learn, keys, args)

    async def forget(self, cred: str) -> None:
        """HubSpot refused a token it never accepted: drop the budget state its calls left,
        so made-up tokens do not accumulate keys (such calls cost the portal nothing)."""
        specs = [self._specs.pop(k) for k in [k for k in self._specs if k[0] == cred]]
        self._checked_calls.clear()  # its specs are to be noted again on its next call
        drop_cred(self._recent_slots, cred)  # nothing to prefill the in-process budget with
        self._local.forget(cred)  # else Redis, once back, would get the pauses of its calls
        if self._redis is None or not specs:
            return
        keys = [self._keys.data(cred, spec) for spec in specs]
        for spec in specs:
            keys += [self._keys.pause(cred, spec.name), self._keys.learned(cred, spec.name)]
        if self._health.should_try():
            try:
                async with asyncio.timeout(self._timeout):
                    await self._redis.delete(*keys)
                return
            except REDIS_TROUBLE:
                self._counts["redis_errors"] += 1
        # Redis away or slow: deleted once it answers again.
        self._keep_for_later(cred, keys)
        self._after_redis_is_back()

    def _keep_for_later(self, cred: str, keys: Iterable[str]) -> None:
        """`keys` of a forgotten credential, to delete once Redis answers (`_when_redis_is_back`).
        A credential forgotten again adds its keys: each call forgets its own plan's buckets (a
        read's, then a search's). Bounded: past the cap the keys are left to expire (a window's
        after the window, a daily count at its reset)."""
        if cred in self._forget_later or len(self._forget_later) < FORGET_LATER_MAX:
            self._forget_later.setdefault(cred, set()).update(keys)

    def waiters(self) -> dict[tuple[str, str], int]:
        """Local callers not yet admitted, by (bucket, priority name)."""
        return {key: n for key, n in self._waiting.items() if n > 0}

    @property
    def keys(self) -> KeyScheme:
        return self._keys

    def known_buckets(self) -> dict[tuple[str, str], BucketSpec]:
        """The last spec acquired with, by (credential, bucket): what budget metrics report on."""
        return dict(self._specs)

    @property
    def fallback_active(self) -> bool:
        return self._health.is_open

    @property
    def health(self) -> RedisHealth:
        """The breaker this limiter shares with the rest of the gateway."""
        return self._health

    def stats(self) -> LimiterStats:
        c = self._counts
        return LimiterStats(
            redis_round_trips=c["round_trips"],
            admitted=c["admitted"],
            admitted_fallback=c["admitted_fallback"],
            rejected=c["rejected"],
            redis_errors=c["redis_errors"],
            fallback_active=self._health.is_open,
        )

    async def aclose(self) -> None:
        """Wait for Redis calls and releases still running for cancelled callers; keys still
        waiting for Redis to come back are left to expire."""
        if self._back is not None:
            self._back.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._back
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- admission ------------------------------------------------------------------------------

    async def _admission(
        self,
        lane: _Lane,
        cred: str,
        specs: Sequence[BucketSpec],
        priority: Priority,
        deadline: float,
        reset_ms: int | None,
    ) -> _Reserved:
        seq = next(self._seq)
        while True:
            await self._turn(lane, specs, priority, seq, deadline)
            turn = _Turn(lane)
            try:
                step = await self._step(
                    lane, turn, cred, specs, (priority, seq), deadline, reset_ms
                )
            finally:
                turn.leave()
            if isinstance(step, _Reserved):
                return step
            await self._sleep(max(0.0, step.at - self._clock()))

    async def _turn(
        self,
        lane: _Lane,
        specs: Sequence[BucketSpec],
        priority: Priority,
        seq: int,
        deadline: float,
    ) -> None:
        """Wait for this caller's turn; in fallback the turn ahead may outlast the deadline."""
        if lane.enter_now():
            return
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock()) + self._timeout):
                await lane.enter(priority, seq)
        except TimeoutError:
            spec = specs[0]
            retry = spec.window_ms / 1000 if spec.kind == "window" else 1.0
            raise BudgetExceeded(retry, spec.name, policy_for(spec)) from None

    async def _step(
        self,
        lane: _Lane,
        turn: _Turn,
        cred: str,
        specs: Sequence[BucketSpec],
        place: tuple[Priority, int],
        deadline: float,
        reset_ms: int | None,
    ) -> _Reserved | _Later:
        horizon = self._horizons.get(place[0], 0.0)
        wake = lane.next_slot - horizon
        if not self._health.is_open and self._clock() < wake and lane.next_slot <= deadline:
            return _Later(wake)  # a slot this class may take is not free yet: no round trip
        if self._health.should_try():
            answers_before = self._health.answers
            try:
                if self._local.has_recent:
                    await self._hand_back()
                step = await self._redis_step(
                    lane, turn, cred, specs, place, horizon, deadline, reset_ms
                )
            except REDIS_TROUBLE as exc:
                await self._failed(exc, answers_before)
                if not self._health.is_open:
                    # Slow, not down: the script may have reserved a slot we never heard of, so
                    # sending now could overfill a window. Ask Redis again (the slot is wasted).
                    return _Later(self._clock())
            except BudgetExceeded:
                self._health.succeeded()  # Redis answered: it is back
                raise
            else:
                self._health.succeeded()
                return step
        await self._prefill_local()  # the breaker may have been opened by another user of Redis
        slot_ms = await self._local.acquire(cred, specs, deadline, reset_ms)
        self._after_redis_is_back()
        return _Reserved(slot_ms, self._clock(), None)

    async def _redis_step(
        self,
        lane: _Lane,
        turn: _Turn,
        cred: str,
        specs: Sequence[BucketSpec],
        place: tuple[Priority, int],
        horizon: float,
        deadline: float,
        reset_ms: int | None,
    ) -> _Reserved | _Later:
        remaining_ms = _ms(deadline - self._clock())
        token = next(self._tokens)
        keys, buckets = self._bucket_args(cred, specs, reset_ms)
        args: list[Arg] = [min(remaining_ms, _ms(horizon)), token, *buckets]
        reply = await self._admit(lane, turn, cred, specs, place, token, (keys, args))
        # Redis time >= reply.now_ms when the reply arrives, so this never wakes before the slot.
        slot_at = self._clock() + reply.wait_ms / 1000
        lane.free = reply.status == "reserved" and reply.wait_ms <= 0
        if reply.status == "reserved":
            lane.next_slot = max(lane.next_slot, slot_at)
            self._note_slot(cred, specs, slot_at)
            return _Reserved(reply.slot_ms, slot_at, token)
        spec = next(s for s in specs if s.name == reply.bucket)
        if reply.status == "daily_full" or reply.wait_ms > remaining_ms:
            raise BudgetExceeded(reply.wait_ms / 1000, reply.bucket, policy_for(spec))
        lane.next_slot = max(lane.next_slot, slot_at)
        return _Later(slot_at - horizon)

    async def _admit(
        self,
        lane: _Lane,
        turn: _Turn,
        cred: str,
        specs: Sequence[BucketSpec],
        place: tuple[Priority, int],
        token: str,
        request: tuple[Sequence[Key], Sequence[Arg]],
    ) -> SlotReply:
        """admit.lua for this caller, in its lane's next batch."""
        if lane.asks is None:
            lane.asks = AskBatch(self._send_asks, self._spawn, batch_cap(specs))
        # A caller cancelled before the reply: the script may still run, and what it reserves
        # for a caller that is gone is given back (`_release_orphan`).
        orphaned = partial(self._release_orphan, cred, specs, token)
        call = lane.asks.ask(int(place[0]), place[1], *request, orphaned).reply
        if lane.free:
            turn.leave()  # under pressure the turn is held to the reply, one ask per trip
        return parse_admit(await call, specs)

    def _bucket_args(
        self, cred: str, specs: Sequence[BucketSpec], reset_ms: int | None
    ) -> tuple[list[bytes], list[bytes]]:
        """admit.lua's KEYS and bucket ARGV of a lane (`admit_request`), made once per lane,
        as bytes (redis-py then encodes none of them per call); shared by its asks, so never
        changed."""
        # By the specs tuple's id (`_checked` makes one per call shape), kept beside the args:
        # hashing the specs themselves calls a dataclass __hash__ per bucket.
        memo_key = (cred, id(specs), reset_ms)
        found = self._lane_args.get(memo_key)
        if found is None or found[0] is not specs:
            if len(self._lane_args) >= LANE_ARGS_MAX:
                self._lane_args.clear()  # bounded: daily resets and credentials come and go
            keys, args = admit_request(self._keys, cred, specs, 0, "", reset_ms)
            found = (specs, [k.encode() for k in keys], [str(a).encode() for a in args[2:]])
            self._lane_args[memo_key] = found
        return found[1], found[2]

    async def _send_asks(self, asks: Sequence[Ask]) -> list[Any]:
        """One round trip for a lane's batch of admit calls, bounded by the gateway's timeout:
        one admit_many.lua call when they share their buckets (they do, but for a rules reload
        between them), else a pipeline of admit.lua calls."""
        assert self._redis is not None and self._scripts is not None
        self._counts["round_trips"] += 1
        async with redis_timeout(self._timeout):
            many = admit_many_request(asks)
            if many is not None:
                lua = self._scripts.admit_many
                (joined,) = await run_script_batch(self._redis, lua, [many])
                return split_admit_many(joined)
            calls = [(ask.keys, ask.args) for ask in asks]
            return await run_script_batch(self._redis, self._scripts.admit, calls)

    async def _until_slot(
        self, lane: _Lane, cred: str, specs: Sequence[BucketSpec], step: _Reserved
    ) -> None:
        delay = step.at - self._clock()
        if step.token is None or delay <= 0:
            return
        try:
            await self._sleep(delay)
        except asyncio.CancelledError:
            lane.next_slot = -math.inf  # the hint may now be too late
            await asyncio.shield(self._spawn(self._release(cred, specs, step.token)))
            raise

    # -- Redis calls ----------------------------------------------------------------------------

    async def _call(self, script: AsyncScript, keys: list[str], args: Sequence[str | int]) -> Any:
        self._counts["round_trips"] += 1
        async with redis_timeout(self._timeout):
            return await script(keys=keys, args=args)

    async def _best_effort(
        self, script: AsyncScript, keys: list[str], args: Sequence[str | int]
    ) -> Any | None:
        if not self._health.should_try():
            return None
        answers_before = self._health.answers
        try:
            reply = await self._call(script, keys, args)
        except REDIS_TROUBLE as exc:
            await self._failed(exc, answers_before)
            return None
        self._health.succeeded()
        return reply

    # -- switching between Redis and the in-process budget ------------------------------------

    def _note_slot(self, cred: str, specs: Sequence[BucketSpec], slot_at: float) -> None:
        for spec in specs:
            if spec.kind == "window":
                slots = self._recent_slots.get((cred, spec.name))
                if slots is None:
                    slots = self._recent_slots[(cred, spec.name)] = deque(maxlen=spec.limit)
                slots.append(slot_at)

    async def _failed(self, exc: BaseException, answers_before: int) -> None:
        """Redis trouble: counted, told to the breaker, and if it opens, fall back prefilled."""
        self._counts["redis_errors"] += 1
        self._health.failed(exc, answers_before=answers_before)
        if self._health.is_open:
            await self._prefill_local()

    async def _prefill_local(self) -> None:
        """On the switch to fallback (once: the slots are then forgotten), each window bucket's
        in-process budget starts after this replica's last Redis slot, as full as its slots
        made it. The breaker is shared, so the switch may come from any user of Redis."""
        now = self._clock()
        for (cred, bucket), slots in self._recent_slots.items():
            spec = self._specs.get((cred, bucket))
            if spec is None or not slots:
                continue
            start = max(now, slots[-1])  # interactive callers may hold slots far ahead
            used = sum(1 for at in slots if at > start - spec.window_ms / 1000)
            await self._local.prefill(cred, spec, used, start - now)
        self._recent_slots.clear()

    async def _hand_back(self) -> None:
        """The calls this replica admitted in process that are still in their window become
        slots of Redis's window logs (`absorb.lua`), at the times they were made: every replica
        counts them from then on, and admits what room is left. Done as soon as the breaker
        closes (`_when_redis_is_back`), and before this replica's next admission through Redis
        if that comes first: until a replica has handed its calls back, the others cannot count
        them (a pause of each bucket until those calls left their window had covered that,
        stopping the bucket for every replica for up to a whole window)."""
        assert self._scripts is not None
        taken = self._local.take_recent()
        now = self._clock()
        hand_back_id = secrets.token_hex(4)
        try:
            for (cred, bucket), (window_s, times) in list(taken.items()):
                keys = [self._keys.window(cred, bucket)]
                # Ages rounded down: a slot is never taken for older than its call, so it
                # leaves the window no earlier.
                args: list[str | int] = [_ms(window_s), hand_back_id]
                args += [math.floor((now - at) * 1000) for at in times]
                await self._call(self._scripts.absorb, keys, args)
                # The other replicas may still be admitting in process, unknown to Redis, until
                # their own breakers close (a probe a second apart): the bucket rests that long,
                # not until these calls leave their window.
                settle_s = min(window_s, self._health.probe_interval_s + self._timeout)
                await self._call(
                    self._scripts.pause, [self._keys.pause(cred, bucket)], [_ms(settle_s)]
                )
                del taken[(cred, bucket)]
        finally:
            self._local.put_back(taken)

    def _after_redis_is_back(self) -> None:
        """Hand back what was done without Redis once it answers again (`_when_redis_is_back`)."""
        if self._redis is not None and (self._back is None or self._back.done()):
            self._back = asyncio.ensure_future(self._when_redis_is_back())

    async def _when_redis_is_back(self) -> None:
        """Once the breaker closes (some call got its answer), with or without traffic: the
        calls admitted in process go to Redis's windows, and the keys of credentials forgotten
        while Redis was away are deleted (waiting for the next admission had left a refused
        token's keys behind after a burst, its daily count till the reset). A call that timed
        out as Redis hung may still run when Redis wakes: it runs before this, since the
        breaker closes only once Redis answered after waking."""
        while self._forget_later or self._local.has_recent:
            await self._health.until_closed()
            answers_before = self._health.answers
            try:
                await self._hand_back()
                await self._drop_forgotten()
            except REDIS_TROUBLE as exc:
                self._counts["redis_errors"] += 1
                self._health.failed(exc, answers_before=answers_before)
                await self._sleep(self._timeout)  # busy, not away: not again at once
            else:
                self._health.succeeded()

    async def _drop_forgotten(self) -> None:
        assert self._redis is not None
        if not self._forget_later:
            return
        forgotten, self._forget_later = self._forget_later, {}
        pipe = self._redis.pipeline(transaction=False)
        for keys in forgotten.values():
            pipe.delete(*keys)  # one credential's keys: one hash tag, one slot
        try:
            async with redis_timeout(self._timeout):
                await pipe.execute()
        except BaseException:
            for cred, keys in forgotten.items():
                self._keep_for_later(cred, keys)
            raise

    async def _release(self, cred: str, specs: Sequence[BucketSpec], token: str) -> None:
        assert self._scripts is not None
        keys = [self._keys.data(cred, spec) for spec in specs]
        args: list[str | int] = [token, *(spec.kind for spec in specs)]
        try:
            await self._call(self._scripts.release, keys, args)
        except REDIS_TROUBLE as exc:
            self._counts["redis_errors"] += 1
            log.debug("could not release a reservation: %s", type(exc).__name__)

    def _release_orphan(
        self, cred: str, specs: Sequence[BucketSpec], token: str, reply: Sequence[Any]
    ) -> None:
        if int(reply[0]) == 0:
            self._spawn(self._release(cred, specs, token))

    def _spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- bookkeeping ------------------------------------------------------------------------------

    def _checked(
        self, cred: str, buckets: Sequence[BucketSpec], daily_reset_ms: int | None
    ) -> _Checked:
        """`buckets` checked and noted for `cred`; a plan's buckets are one tuple while the
        rules' limits hold (`plans.bucket_specs`), so the same call is checked once."""
        memo_key = (cred, id(buckets))
        kept = self._checked_calls.get(memo_key)
        if kept is not None and kept.buckets is buckets:
            if daily_reset_ms is None and kept.daily:
                raise ValueError("a daily bucket needs daily_reset_ms")
            for spec in kept.specs:
                self._specs[(cred, spec.name)] = spec  # the last spec acquired with
            return kept
        if not _CRED.match(cred):
            raise ValueError("credential id must be a short hash ([A-Za-z0-9_.-], <= 128 chars)")
        specs = tuple(buckets)
        if not specs or len({s.name for s in specs}) != len(specs):
            raise ValueError("buckets must be a non-empty list of distinct bucket names")
        daily = any(s.kind == "daily" for s in specs)
        if daily_reset_ms is None and daily:
            raise ValueError("a daily bucket needs daily_reset_ms")
        for spec in specs:
            self._specs[(cred, spec.name)] = spec
        if len(self._checked_calls) >= LANE_ARGS_MAX:
            self._checked_calls.clear()  # bounded: credentials come and go
        names = tuple(spec.name for spec in specs)
        flows = next((s for s in specs if s.max_delay_ms is not None), None)
        checked = _Checked(buckets, specs, daily, (cred, names), flows)
        self._checked_calls[memo_key] = checked
        return checked

    def _enter_lane(self, checked: _Checked, priority: Priority) -> _Lane:
        """Join the call's lane, counted as waiting in each of its buckets at its priority."""
        lane = self._lanes.get(checked.lane_key)
        if lane is None:
            lane = self._lanes[checked.lane_key] = _Lane()
            # A lane is dropped whenever no call is in it, which under steady load is often:
            # one that left free a moment ago comes back free, so its callers share round trips
            # at once instead of each holding the turn to a reply until one says "free" again.
            left = self._left_free.pop(checked.lane_key, None)
            lane.free = left is not None and self._clock() - left < FREE_REMEMBERED_S
        lane.users += 1
        waiting = self._waiting
        for name in checked.lane_key[1]:
            label = (name, _NAMES[priority])
            waiting[label] = waiting.get(label, 0) + 1
        return lane

    def _leave_lane(self, checked: _Checked, lane: _Lane, priority: Priority) -> None:
        waiting = self._waiting
        for name in checked.lane_key[1]:
            label = (name, _NAMES[priority])
            left = waiting.get(label, 0) - 1
            if left > 0:
                waiting[label] = left
            else:
                waiting.pop(label, None)
        lane.users -= 1
        if lane.users == 0:
            del self._lanes[checked.lane_key]
            if lane.free:
                if len(self._left_free) >= LANE_ARGS_MAX:
                    self._left_free.clear()  # bounded: credentials come and go
                self._left_free[checked.lane_key] = self._clock()
