"""A lease in Redis: one holder at a time, lost when it is not renewed within its TTL.

SET NX PX takes it; renewing and releasing check the owner token (a holder whose lease expired
and was taken over must not extend or delete the new holder's). The jobs run under one per job;
the write-behind worker reads new writes under one, so that one replica gathers a burst's writes
into full batches instead of every replica sending its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from proxy.store.health import REDIS_TROUBLE
from proxy.store.scripts import script


class LeaseHeld(Exception):
    """Another replica holds the lease."""


class Lease:
    def __init__(self, redis: aioredis.Redis, key: str, ttl_s: float) -> None:
        self._redis = redis
        self.key = key
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._owner = secrets.token_hex(8)
        self._release = script(redis, "lease_release")
        self._renew = script(redis, "lease_renew")

    async def acquire(self) -> bool:
        """Take the lease, or renew it if it is ours; False while another holder has it."""
        if await self._renew(keys=[self.key], args=[self._owner, self._ttl_ms]):
            return True
        return await self._take()

    async def release(self) -> None:
        """Give the lease up if it is still ours (best effort: it expires anyway)."""
        with contextlib.suppress(*REDIS_TROUBLE):
            await self._release(keys=[self.key], args=[self._owner])

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the lease for the block, renewed every third of its TTL; LeaseHeld if taken."""
        if not await self._take():
            raise LeaseHeld(self.key)
        renewer = asyncio.create_task(self._keep())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            await self.release()

    async def _take(self) -> bool:
        return bool(await self._redis.set(self.key, self._owner, nx=True, px=self._ttl_ms))

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_ms / 3000)
            with contextlib.suppress(*REDIS_TROUBLE):
                await self._renew(keys=[self.key], args=[self._owner, self._ttl_ms])
