"""Which credentials HubSpot has accepted: only those get Redis state and metric labels.

Anyone can send a random bearer token. Until HubSpot has answered that token with anything but
401 the gateway keeps nothing for it that outlives the call: a stream of made-up tokens must not
grow Redis, the label set of /metrics, or the work of the jobs. An accepted credential is
marked in Redis (`hubspot:{cred}:accepted`, so every replica knows) and remembered in-process.

Labels are bounded too: the first `label_max` credentials this process saw accepted keep
their own `credential` label, every later one is reported as `other`.
"""

from __future__ import annotations

from typing import Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

ACCEPTED_TTL_S: Final = 90 * 86_400  # as long as a counter lives: the jobs serve it that long
OTHER: Final = "other"
MEMORY_MAX: Final = 100_000  # accepted credentials remembered in-process (then re-asked)


def accepted_key(credential: str) -> str:
    return f"hubspot:{{{credential}}}:accepted"


def accepts(status: int) -> bool:
    """HubSpot authenticated the token: anything but 401 that is not a server failure."""
    return status != 401 and status < 500


class KnownCredentials:
    def __init__(self, redis: aioredis.Redis | None, *, label_max: int = 20) -> None:
        self._redis = redis
        self._label_max = label_max
        self._accepted: dict[str, None] = {}  # insertion-ordered set, oldest dropped first
        self._labelled: set[str] = set()

    def seen(self, credential: str) -> bool:
        """Accepted, as far as this process knows without asking Redis."""
        return credential in self._accepted

    async def is_accepted(self, credential: str) -> bool:
        """Accepted by HubSpot, through any replica; a Redis failure answers False (unknown)."""
        if credential in self._accepted:
            return True
        if self._redis is None:
            return False
        try:
            found = bool(await self._redis.exists(accepted_key(credential)))
        except (RedisError, OSError, TimeoutError):
            return False
        if found:
            self._remember(credential)
        return found

    async def accepted(self, credential: str) -> None:
        """HubSpot accepted the token: mark it for every replica (once per process)."""
        if credential in self._accepted:
            return
        if self._redis is not None:
            try:
                await self._redis.set(accepted_key(credential), "1", ex=ACCEPTED_TTL_S)
            except (RedisError, OSError, TimeoutError):
                return  # marked next time; until then it is treated as new, which is safe
        self._remember(credential)

    def label(self, credential: str) -> str | None:
        """The `credential` label value, or None: a credential never accepted gets no label."""
        if credential not in self._accepted:
            return None
        if credential in self._labelled:
            return credential
        if len(self._labelled) < self._label_max:
            self._labelled.add(credential)
            return credential
        return OTHER

    def _remember(self, credential: str) -> None:
        self._accepted[credential] = None
        if len(self._accepted) > MEMORY_MAX:
            del self._accepted[next(iter(self._accepted))]
