"""Fixtures for tests of the gateway in front of the simulator, and a fleet of processes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.kit.fleet import Fleet, persistent_valkey
from tests.kit.harness import SimFactory
from tests.kit.processes import free_port, start_sim
from tests.kit.sim_client import Sim


@pytest.fixture
async def world(sim_factory: SimFactory) -> Sim:
    """A fresh simulator, seen through its test API."""
    return Sim(await sim_factory())


@pytest.fixture
async def portal(sim_factory: SimFactory) -> Sim:
    """A simulator with roomy limits: these tests count writes, not budgets."""
    return Sim(await sim_factory(tier="enterprise"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    data_dir = tmp_path_factory.mktemp("valkey")
    port = free_port()
    sim = start_sim("--tier", "enterprise", "--seed", "11", "--omit-trace-ids")
    found = Fleet(sim, persistent_valkey(data_dir, port), data_dir, port)
    try:
        for _ in range(3):
            found.start_gateway()
        yield found
    finally:
        for gateway in found.gateways:
            gateway.stop(10)
        sim.stop(10)
        if found.valkey.is_running():
            found.valkey.stop()
