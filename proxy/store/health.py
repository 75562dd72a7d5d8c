"""What "Redis trouble" is, and the one breaker that guards the one Redis server.

The breaker opens on the first error, and on the first timeout during which Redis answered no
other call: a Redis that does not answer (down, or hung as under SIGSTOP) would otherwise cost
every call its full timeout. A timeout while Redis kept answering others is a busy event loop or
a long queue for a connection, no evidence that Redis is down: it fails only its own call. A
timer that fires late (`redis_timeout`) means the event loop was held up (a starved process, a
burst of work) and Redis's reply may be waiting unread in the socket: the call gets its timeout
again, and one late still after that fails only its own call too.
While the breaker is open no caller touches Redis, except one probe per `probe_interval_s`, and
the write worker, whose stream reads go on regardless; the first call that succeeds (a probe or
a worker's read) closes it. A call that has no answer without Redis (a seat reserve, a write's
accept) waits for that (`wait_usable`) in the breaker's first `STALL_WAIT_S`, rather than fail at
once: a stall of a second costs it latency, not a 503; later ones are refused at once.
The limiter falls back to its in-process budget and the rules runtime forwards instead of
answering from Redis (invariant 7) while it is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Final, TypeVar

from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisError,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# Under the limiter's name: its switch to the in-process budget is what operators alert on.
log = logging.getLogger("proxy.limiter")

# What a cluster answers while it changes shape (a primary lost, a replica promoted, a slot
# moving): Redis is away for a moment, as when a connection drops, and the callers fall back
# the same way. SlotNotCoveredError is no RedisError in redis-py, so it is named here.
CLUSTER_TROUBLE: Final = (ClusterDownError, TryAgainError, ReadOnlyError, SlotNotCoveredError)

# Anything a Redis call can fail with that is not a bug of ours: the client's own errors,
# socket errors, the timeouts the gateway puts around every call, and a cluster in failover.
REDIS_TROUBLE: Final = (RedisError, OSError, TimeoutError, *CLUSTER_TROUBLE)

# A healthy event loop fires a timer within a few milliseconds of its time; one this late was
# held up, so it says nothing about Redis: the call gets its timeout again, this many times.
LATE_TIMER_S: Final = 0.05
LATE_EXTENSIONS: Final = 3

# A stall: the first seconds of an open breaker, through which a call that has no answer
# without Redis (a seat reserve, a write's accept) waits for Redis rather than be refused. The
# breaker probes a second after its last failure, so a stall of up to about 1.5 s costs such
# calls latency, not a 503 (Redis hung for half a second had refused a burst's seat reserves);
# past it, Redis is away and they are refused at once.
STALL_WAIT_S: Final = 2.5


T = TypeVar("T")


async def once_more_if_dropped(op: Callable[[], Awaitable[T]]) -> T:
    """`op()`, sent again once if its pooled connection was one Redis dropped (it restarted):
    redis-py discards that connection, so the second try goes out on a fresh one instead of
    failing a call to a Redis that is back. Only for calls safe to send twice."""
    try:
        return await op()
    except RedisConnectionError:
        return await op()


class LateTimeout(TimeoutError):
    """A Redis call's timeout that fired late: the event loop, not Redis, was slow."""


@asynccontextmanager
async def redis_timeout(timeout_s: float) -> AsyncIterator[None]:
    """`asyncio.timeout` for a Redis call that does not count the event loop's own lateness.

    A timer that fires late was held up by a starved process, not by Redis, and the reply may
    be waiting unread in the socket: the call gets its timeout again, at most LATE_EXTENSIONS
    times, and a timer still late after that raises `LateTimeout` (which opens no breaker). On a
    saturated process, calls Redis had answered failed here, and their reads went to HubSpot.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    extensions = 0
    late = False
    timer: asyncio.TimerHandle | None = None
    try:
        async with asyncio.timeout(None) as scope:

            def check() -> None:
                nonlocal deadline, extensions, late, timer
                now = loop.time()
                late = now - deadline > LATE_TIMER_S
                if late and extensions < LATE_EXTENSIONS:
                    extensions += 1
                    deadline = now + timeout_s
                    timer = loop.call_at(deadline, check)
                else:
                    scope.reschedule(now)  # expired: asyncio cancels the call

            timer = loop.call_at(deadline, check)
            try:
                yield
            finally:
                if timer is not None:
                    timer.cancel()
    except TimeoutError as exc:
        if late:
            raise LateTimeout from exc
        raise


class RedisHealth:
    def __init__(
        self,
        *,
        available: bool = True,
        clock: Callable[[], float] = time.monotonic,
        probe_interval_s: float = 1.0,
        on_transition: Callable[[bool], None] | None = None,
        stall_s: float = STALL_WAIT_S,
    ) -> None:
        self._available = available
        self._clock = clock
        self._interval = probe_interval_s
        self._on_transition = on_transition
        self._open = not available
        self._next_probe = -math.inf
        self._answers = 0
        self._stall_s = stall_s
        self._opened_at = clock()
        self._closed = asyncio.Event()
        if not self._open:
            self._closed.set()

    @property
    def answers(self) -> int:
        """How many calls Redis has answered: read before a call, given to `failed` after."""
        return self._answers

    @property
    def probe_interval_s(self) -> float:
        return self._interval

    @property
    def is_open(self) -> bool:
        """True while Redis is not to be relied on (or there is no Redis)."""
        return self._open

    def should_try(self) -> bool:
        """True when closed, or when a probe is due (then claims it for this one caller)."""
        if not self._available:
            return False
        if not self._open:
            return True
        now = self._clock()
        if now < self._next_probe:
            return False
        self._next_probe = now + self._interval
        return True

    async def wait_usable(self, timeout_s: float) -> bool:
        """Wait, at most `timeout_s`, until the breaker is closed or a probe is due (which
        `should_try` then gives to one caller); only while it has been open for less than
        `stall_s`: past that Redis is away, not stalled, and callers are refused at once, as a
        hung Redis must not cost every call a wait. False when there is no Redis, or when the
        wait ended with the breaker still open and no probe due."""
        if not self._available:
            return False
        if not self._open:
            return True
        now = self._clock()
        to_probe = self._next_probe - now
        within = min(timeout_s, self._opened_at + self._stall_s - now)
        if within > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, min(to_probe, within))):
                    await self._closed.wait()
        return not self._open or to_probe <= max(within, 0.0)

    async def until_closed(self) -> None:
        """Return once the breaker is closed (at once if it is)."""
        await self._closed.wait()

    async def try_within(self, timeout_s: float) -> bool:
        """`should_try`, waiting at most `timeout_s` for the breaker to close or for this
        caller's turn to probe."""
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout_s
        while not self.should_try():
            left_s = until - loop.time()
            if left_s <= 0 or not await self.wait_usable(left_s):
                return False
        return True

    def failed(self, exc: BaseException, *, answers_before: int | None = None) -> None:
        """A call failed; `answers_before` is `answers` as it was when that call started."""
        if isinstance(exc, LateTimeout):
            return  # the event loop was late, not Redis
        timed_out = isinstance(exc, TimeoutError | RedisTimeoutError)
        if timed_out and answers_before is not None and self._answers > answers_before:
            return  # Redis answered others meanwhile: this call was slow, Redis is not down
        self._next_probe = self._clock() + self._interval
        if self._open:
            return
        self._open = True
        self._opened_at = self._clock()
        self._closed.clear()
        log.warning("redis unavailable (%s), limiting in process", type(exc).__name__)
        self._notify(True)

    def succeeded(self) -> None:
        self._answers += 1
        if not self._open:
            return
        self._open = False
        self._closed.set()
        log.info("redis reachable again, back to the shared budget")
        self._notify(False)

    def _notify(self, is_open: bool) -> None:
        if self._on_transition is None:
            return
        try:
            self._on_transition(is_open)
        except Exception:
            log.exception("on_transition callback failed")
