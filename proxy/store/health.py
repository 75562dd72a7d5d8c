"""What "Redis trouble" is, and the one breaker that guards the one Redis client.

The breaker opens on the first error or timeout: a Redis that does not answer (down, or hung
as under SIGSTOP) would otherwise cost every call its full timeout. While it is open no caller
touches Redis, except one probe per `probe_interval_s`; the first call that succeeds closes it.
The limiter falls back to its in-process budget and the rules runtime forwards instead of
answering from Redis (invariant 7) while it is open.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Final

from redis.exceptions import RedisError

# Under the limiter's name: its switch to the in-process budget is what operators alert on.
log = logging.getLogger("proxy.limiter")

# Anything a Redis call can fail with that is not a bug of ours: the client's own errors,
# socket errors, and the timeouts the gateway puts around every call.
REDIS_TROUBLE: Final = (RedisError, OSError, TimeoutError)


class RedisHealth:
    def __init__(
        self,
        *,
        available: bool = True,
        clock: Callable[[], float] = time.monotonic,
        probe_interval_s: float = 1.0,
        on_transition: Callable[[bool], None] | None = None,
    ) -> None:
        self._available = available
        self._clock = clock
        self._interval = probe_interval_s
        self._on_transition = on_transition
        self._open = not available
        self._next_probe = -math.inf

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

    def failed(self, exc: BaseException) -> None:
        self._next_probe = self._clock() + self._interval
        if self._open:
            return
        self._open = True
        log.warning("redis unavailable (%s), limiting in process", type(exc).__name__)
        self._notify(True)

    def succeeded(self) -> None:
        if not self._open:
            return
        self._open = False
        log.info("redis reachable again, back to the shared budget")
        self._notify(False)

    def _notify(self, is_open: bool) -> None:
        if self._on_transition is None:
            return
        try:
            self._on_transition(is_open)
        except Exception:
            log.exception("on_transition callback failed")
