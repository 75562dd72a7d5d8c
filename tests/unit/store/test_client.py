"""Which Redis client a process gets, and the settings that choose it."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from proxy.config import SettingsError, load_settings
from proxy.store.client import pool_share, redis_client


def test_no_url_no_client() -> None:
    assert redis_client(load_settings(environ={})) is None


async def test_a_url_is_one_server_unless_told_it_is_a_cluster_node() -> None:
    one = redis_client(load_settings(environ={"REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert isinstance(one, aioredis.Redis)
    await one.aclose()
    env = {"REDIS_URL": "redis://127.0.0.1:1", "HUBSPOT_PROXY_REDIS_CLUSTER": "true"}
    node = redis_client(load_settings(environ=env))
    assert isinstance(node, RedisCluster)  # created lazily: nothing is contacted yet
    await node.aclose()


def test_cluster_mode_needs_a_url() -> None:
    with pytest.raises(SettingsError, match="redis_cluster"):
        load_settings(environ={"HUBSPOT_PROXY_REDIS_CLUSTER": "1"})


def test_wait_replicas_cannot_be_negative() -> None:
    with pytest.raises(SettingsError, match="redis_wait_replicas"):
        load_settings(environ={"REDIS_URL": "redis://x", "HUBSPOT_PROXY_REDIS_WAIT_REPLICAS": "-1"})


def test_a_user_of_a_pool_takes_at_most_half_of_it() -> None:
    small = aioredis.from_url("redis://127.0.0.1:1/0", max_connections=100)
    large = aioredis.from_url("redis://127.0.0.1:1/0", max_connections=1000)
    assert pool_share(small, 256) == 50  # redis-py would refuse calls past its 100 connections
    assert pool_share(large, 256) == 256
