"""The Redis clients of a process, each for a single server or a Redis Cluster: the request
path's, whose every call the gateway bounds itself, and the background work's.

Cluster mode is a setting (`HUBSPOT_PROXY_REDIS_CLUSTER`), not a URL scheme: redis-py's
`RedisCluster.from_url` takes the ordinary `redis://` / `rediss://` URL of any one node and
discovers the rest (`CLUSTER SLOTS`), and there is no cluster scheme that redis-py, managed
services and `redis-cli -u` all accept. So `REDIS_URL` stays a URL every tool understands.

Every key of one credential carries its `{credential}` hash tag, and keys shared by all
credentials carry one fixed tag each (`{writes}`, `{jobs}`), so every Lua script and every
MULTI/EXEC touches one slot: one node, as Redis Cluster requires.
"""

from __future__ import annotations

from typing import Any, Final, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError

from proxy.config import Settings

# redis-py 8.1 lets a write on a connection closed under it (its node gone, or the client's own
# topology refresh after a failover) escape as the transport's RuntimeError, AttributeError or
# TypeError rather than ConnectionError (redis/redis-py#4287, #3546). Seen in the failover test;
# on a cluster client they mean what a ConnectionError means.
CLOSED_UNDER_US: Final = (RuntimeError, AttributeError, TypeError)


class _Cluster(RedisCluster):
    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except CLOSED_UNDER_US as exc:
            raise ConnectionError(f"connection closed under the command: {exc!r}") from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py refuses it
        # redis-py builds its own ClusterPipeline the same way; its stubs call it abstract
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except CLOSED_UNDER_US as exc:
            raise ConnectionError(f"connection closed under the pipeline: {exc!r}") from exc


def is_cluster(client: object) -> bool:
    """Whether `client` is a Redis Cluster client. `isinstance(client, RedisCluster)` walks
    redis-py's Protocol bases (several microseconds); the answer depends on the type alone."""
    kind = type(client)
    found = _CLUSTER_TYPES.get(kind)
    if found is None:
        found = _CLUSTER_TYPES[kind] = issubclass(kind, RedisCluster)
    return found


_CLUSTER_TYPES: dict[type, bool] = {}


def pool_share(client: object, wanted: int) -> int:
    """How many calls one user of `client` may have out at once: `wanted`, but at most half its
    connection pool (redis-py refuses a call past the pool, "Too many connections"), so the
    other users of the pool keep theirs. A cluster has a pool per node: `wanted`."""
    size = getattr(getattr(client, "connection_pool", None), "max_connections", None)
    return wanted if not isinstance(size, int) else max(1, min(wanted, size // 2))


def redis_client(settings: Settings, *, own_timeouts: bool = False) -> aioredis.Redis | None:
    """The client for `settings.redis_url`, or None when there is no Redis.

    A RedisCluster is returned typed as Redis: it answers the same commands, scripts and
    pipelines the gateway uses (each keyed to one slot), which the cluster test suite proves
    against a real six-node cluster; the two classes simply share no base type in redis-py.

    `own_timeouts`: the request path's client (the limiter, the rules' store). Every call on it
    is bounded by its caller's own timeout (`redis_timeout_s`, `asyncio.timeout`), so redis-py
    adds none of its own, which costs a `wait_for` task per command sent and a timer per reply.
    The other client (write-behind, jobs, the rate-limit header flush, the vault) keeps redis-py's
    socket timeout, four times `redis_timeout_s`: that is what bounds those calls.

    No `CLIENT SETINFO` (`driver_info=None`): redis-py otherwise reads its own package metadata
    for every connection it opens (about 0.3 ms of CPU, while a burst grows the pool) and sends
    the library's name and version before the connection's first command.
    """
    if not settings.redis_url:
        return None
    options = {
        "socket_timeout": None if own_timeouts else settings.redis_timeout_s * 4,
        "socket_connect_timeout": settings.redis_timeout_s * 4,
        "max_connections": settings.redis_max_connections,
        "driver_info": None,
    }
    if settings.redis_cluster:
        return cast(aioredis.Redis, _Cluster.from_url(settings.redis_url, **options))
    return aioredis.from_url(settings.redis_url, **options)
