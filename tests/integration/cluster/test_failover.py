"""A primary dies mid-burst: its replica takes over, and the budget and accepted writes hold.

Two gateway processes share a real 3+3 Valkey Cluster and one simulated HubSpot (100 calls per 2
s). The credential's keys and the write-behind stream live on the same primary, which is SIGKILLed
once a third of the calls have reached HubSpot, while more keep arriving; the cluster promotes its
replica by itself (`cluster-node-timeout` 2 s). Counted: HubSpot's 429s, the most calls in any 2 s,
the client answers, each accepted note in HubSpot, and the switches to the fallback and back.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.http.credentials import credential_id
from tests.kit.burst import burst_rules, max_in_window, seed_objects
from tests.kit.cluster import ValkeyCluster
from tests.kit.processes import Process, start_gateway, start_sim

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LIMIT, WINDOW_S = 100, 2.0
TICKS = 50  # every 100 ms, 5 GETs (50/s against a budget of 47.5/s) and 3 notes
GETS, NOTES = TICKS * 5, TICKS * 3
KILL_AFTER = GETS // 3
CREDENTIAL_KEY = "hubspot-proxy"  # the gateway's default
NOTES_WRITE_BEHIND = """rules:
  - name: notes-async
    type: write_behind
    match: {method: POST, path: "/crm/v3/objects/notes"}
    kind: create
"""
HANDBACK_CALLS = 40  # at most, after the burst, for each gateway to see Redis answer again
_FALLBACK = re.compile(r'^hubspot_proxy_redis_fallback_transitions_total\{to="(\w+)"\} (\S+)$')


def token_on(cluster: ValkeyCluster, key: str) -> str:
    """A token whose credential's keys live on the primary that serves `key`."""
    target = cluster.primary_of(key).port
    for i in range(1000):
        token = f"failover-token-{i}"
        cred = credential_id(token, CREDENTIAL_KEY.encode())
        if cluster.primary_of(f"hubspot:{{{cred}}}:win:general").port == target:
            return token
    raise LookupError("no token maps to that primary")


@pytest.fixture
def stack(tmp_path: Path, own_cluster: ValkeyCluster) -> Iterator[tuple[Process, list[Process]]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        burst_rules((LIMIT, "2s"), (20, "1s"), margin=0.95, replicas=2) + NOTES_WRITE_BEHIND
    )
    sim = start_sim(
        "--general-limit", str(LIMIT),
        "--general-window-s", str(WINDOW_S),
        "--latency-ms", "5,30",
    )  # fmt: skip
    env = {
        "HUBSPOT_PROXY_REDIS_CLUSTER": "1",
        "HUBSPOT_PROXY_REDIS_WAIT_REPLICAS": "1",
        "HUBSPOT_PROXY_WRITE_CLAIM_IDLE_S": "5",
    }
    gateways: list[Process] = []
    try:
        for _ in range(2):
            gateways.append(start_gateway(sim.url, own_cluster.url, rules, env=env))
        yield sim, gateways
    finally:
        for process in [*gateways, sim]:
            process.stop()


async def fallback_switches(session: aiohttp.ClientSession, gateway: str) -> Counter[str]:
    async with session.get(f"{gateway}/metrics") as resp:
        text = await resp.text()
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if match := _FALLBACK.match(line):
            found[match.group(1)] += int(float(match.group(2)))
    return found


async def sim_get(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params) as resp:
        assert resp.status == 200
        return await resp.json()


async def test_primary_failover_mid_burst_keeps_the_budget_and_every_accepted_write(
    own_cluster: ValkeyCluster, stack: tuple[Process, list[Process]]
) -> None:
    sim, gateways = stack
    token = token_on(own_cluster, "hubspot:{writes}")
    auth = {"Authorization": f"Bearer {token}"}
    victim = own_cluster.primary_of("hubspot:{writes}")
    replica = own_cluster.replica_of(victim)
    (contact,) = await seed_objects(sim.url, "contacts", 1)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:

        async def get(i: int) -> int:
            url = f"{gateways[i % 2].url}/crm/v3/objects/contacts/{contact}"
            async with session.get(url, headers=auth) as resp:
                await resp.read()
                return resp.status

        async def note(i: int) -> tuple[int, int]:
            props = {"hs_note_body": f"failover note {i:03d}", "hs_timestamp": "1767261600000"}
            url = f"{gateways[i % 2].url}/crm/v3/objects/notes"
            async with session.post(url, json={"properties": props}, headers=auth) as resp:
                await resp.read()
                return i, resp.status

        async def arrivals() -> tuple[list[int], list[tuple[int, int]]]:
            """Calls keep arriving through the failover, faster than the budget lets through."""
            gets: list[asyncio.Task[int]] = []
            notes: list[asyncio.Task[tuple[int, int]]] = []
            for tick in range(TICKS):
                gets += [asyncio.create_task(get(tick * 5 + i)) for i in range(5)]
                notes += [asyncio.create_task(note(tick * 3 + i)) for i in range(3)]
                await asyncio.sleep(0.1)
            return await asyncio.gather(*gets), await asyncio.gather(*notes)

        async def kill_mid_burst() -> None:
            while True:
                stats = await sim_get(session, f"{sim.url}/__sim/stats", token=token)
                if stats["by_kind"].get("general", 0) >= KILL_AFTER:
                    break
                await asyncio.sleep(0.02)
            victim.server.terminate()  # SIGKILL: no goodbye to the replica

        (gets, noted), _ = await asyncio.gather(arrivals(), kill_mid_burst())
        await asyncio.to_thread(own_cluster.wait_ok)
        assert own_cluster.primary_of("hubspot:{writes}").port == replica.port

        # -- the budget: every call served, HubSpot never refused one, no window over the limit
        assert Counter(gets) == {200: GETS}
        stats = await sim_get(session, f"{sim.url}/__sim/stats", token=token)
        assert stats["rate_limited"] == {}
        calls = (await sim_get(session, f"{sim.url}/__sim/calls", token=token))["calls"]
        general = [c["t"] for c in calls if c["kind"] == "general"]
        assert max_in_window(general, WINDOW_S) <= LIMIT

        # -- the fallback took over in the gap and handed back by itself: a gateway learns that
        # Redis is back from the calls it serves, so a few more arrive (bounded) after the burst
        switches = [await fallback_switches(session, g.url) for g in gateways]
        assert sum(s["fallback"] for s in switches) >= 1
        for later in range(HANDBACK_CALLS):
            if all(s["fallback"] == s["redis"] for s in switches):
                break
            assert await get(GETS + later) == 200
            await asyncio.sleep(0.25)
            switches = [await fallback_switches(session, g.url) for g in gateways]
        assert all(s["fallback"] == s["redis"] for s in switches), switches

        # -- writes: each one the client was told was accepted reaches HubSpot exactly once
        accepted = {i for i, status in noted if status == 202}
        refused = {i for i, status in noted if status == 503}
        errors = [line for g in gateways for line in g.output if '"ERROR"' in line][:3]
        assert accepted | refused == set(range(NOTES)), (Counter(s for _, s in noted), errors)
        # Before the kill a replica acknowledges each write; after it the promoted replica has
        # none, so WAIT refuses writes (503) rather than accept them on a primary alone.
        assert len(accepted) >= NOTES // 4, (len(accepted), len(refused))
        landed: Counter[str] = Counter()
        for _ in range(600):
            found = await sim_get(session, f"{sim.url}/__sim/objects/notes")
            landed = Counter(n["properties"]["hs_note_body"] for n in found["results"])
            if all(f"failover note {i:03d}" in landed for i in accepted):
                break
            await asyncio.sleep(0.1)
        missing = sorted(i for i in accepted if f"failover note {i:03d}" not in landed)
        assert missing == [], f"accepted but lost: {missing}; refused: {len(refused)}"
        assert [b for b, n in landed.items() if n > 1] == []
        print(
            f"failover: gets={GETS} notes accepted={len(accepted)} refused={len(refused)} "
            f"landed={len(landed)} 429s=0 max_in_window={max_in_window(general, WINDOW_S)} "
            f"switches={switches}"
        )
