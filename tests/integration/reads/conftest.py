"""Fixtures for the read side through a real gateway, Valkey and the simulator."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.kit.harness import Client, GatewayFactory
from tests.kit.processes import start_valkey
from tests.kit.read_side import rules_file


@pytest.fixture
def read_side_gateway(gateway_factory: GatewayFactory, tmp_path: pathlib.Path) -> GatewayFactory:
    """Gateways on the read-side rules unless a test names its own."""
    read_side = rules_file(tmp_path)

    async def start(upstream: str, **overrides: Any) -> Client:
        overrides.setdefault("rules_path", read_side)
        return await gateway_factory(upstream, **overrides)

    return start


@pytest.fixture
async def pausable_valkey() -> AsyncIterator[tuple[str, int]]:
    """A Valkey server of the test's own, as (url, pid): SIGSTOP hangs it as a stalled Redis
    would (connections open, nothing answered), SIGCONT lets it answer what it was sent."""
    server = await asyncio.to_thread(start_valkey)
    url = str(server.connection_url)
    client = aioredis.from_url(url)
    pid = int((await client.info("server"))["process_id"])
    await client.aclose()
    yield url, pid
    os.kill(pid, signal.SIGCONT)
    await asyncio.to_thread(server.stop)
