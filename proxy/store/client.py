"""The one Redis client of a process: a single server, or a Redis Cluster.

Cluster mode is a setting (`HUBSPOT_PROXY_REDIS_CLUSTER`), not a URL scheme: redis-py's
`RedisCluster.from_url` takes the ordinary `redis://` / `rediss://` URL of any one node and
discovers the rest (`CLUSTER SLOTS`), and there is no cluster scheme that redis-py, managed
services and `redis-cli -u` all accept. So `REDIS_URL` stays a URL every tool understands.

Every key of one credential carries its `{credential}` hash tag, and keys shared by all
credentials carry one fixed tag each (`{writes}`, `{jobs}`), so every Lua script and every
MULTI/EXEC touches one slot: one node, as Redis Cluster requires.
"""

from __future__ import annotations

from typing import Final, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, ReadOnlyError, SlotNotCoveredError, TryAgainError

from proxy.config import Settings

# What a cluster answers while it changes shape (a primary lost, a replica promoted, a slot
# moving): Redis is away for a moment, as when a connection drops, and the callers fall back
# the same way. SlotNotCoveredError is no RedisError in redis-py, so broad tuples need it too.
CLUSTER_TROUBLE: Final = (ClusterDownError, TryAgainError, ReadOnlyError, SlotNotCoveredError)


def redis_client(settings: Settings) -> aioredis.Redis | None:
    """The client for `settings.redis_url`, or None when there is no Redis.

    A RedisCluster is returned typed as Redis: it answers the same commands, scripts and
    pipelines the gateway uses (each keyed to one slot), which the cluster test suite proves
    against a real six-node cluster; the two classes simply share no base type in redis-py.
    """
    if not settings.redis_url:
        return None
    timeouts = {
        "socket_timeout": settings.redis_timeout_s * 4,
        "socket_connect_timeout": settings.redis_timeout_s * 4,
        "max_connections": settings.redis_max_connections,
    }
    if settings.redis_cluster:
        return cast(aioredis.Redis, RedisCluster.from_url(settings.redis_url, **timeouts))
    return aioredis.from_url(settings.redis_url, **timeouts)
