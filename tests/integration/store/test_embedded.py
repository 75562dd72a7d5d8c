"""Issue 13 (6): `hubspot-proxy run` without a Redis URL keeps accepted writes across restarts.

Real processes: the gateway with its embedded Valkey (AOF in --data-dir), and the simulator."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.kit.harness import AUTH
from tests.kit.processes import Process, free_port, start_embedded_gateway, start_sim
from tests.kit.rulefiles import notes_written_behind

pytestmark = pytest.mark.timeout(120)

NOTE = {"properties": {"hs_note_body": "kept across a restart", "hs_timestamp": "2030-01-01"}}
# Another replica (here: the next process) takes over a write its owner left after 1 s.
ENV = {"HUBSPOT_PROXY_WRITE_CLAIM_IDLE_S": "1", "HUBSPOT_PROXY_SHUTDOWN_TIMEOUT_S": "2"}


async def write_state(session: aiohttp.ClientSession, gateway: Process, write_id: str) -> Any:
    async with session.get(f"{gateway.url}/proxy/v1/writes/{write_id}", headers=AUTH) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["state"]


async def notes(session: aiohttp.ClientSession, sim: Process) -> list[str]:
    async with session.get(f"{sim.url}/__sim/objects/notes") as resp:
        found = (await resp.json())["results"]
    return [n["properties"]["hs_note_body"] for n in found]


async def test_a_write_accepted_before_a_restart_is_delivered_after_it(tmp_path: Path) -> None:
    port = free_port()  # HubSpot is down while the write is accepted: it stays queued
    upstream = f"http://127.0.0.1:{port}"
    rules = notes_written_behind(tmp_path)  # notes are created synchronously unless opted in
    first = start_embedded_gateway(upstream, tmp_path / "data", env=ENV, rules=rules)
    second = sim = None
    try:
        async with aiohttp.ClientSession() as session:
            url = f"{first.url}/crm/v3/objects/notes"
            async with session.post(url, json=NOTE, headers=AUTH) as resp:
                assert resp.status == 202, await resp.text()
                write_id = resp.headers["X-HubSpot-Proxy-Write-Id"]
            assert await asyncio.to_thread(first.stop) == 0
            sim = start_sim(port=port)
            second = start_embedded_gateway(upstream, tmp_path / "data", env=ENV, rules=rules)
            for _ in range(300):  # bounded: the write is sent, or the test fails on its count
                if await write_state(session, second, write_id) in {"sent", "dead"}:
                    break
                await asyncio.sleep(0.1)
            assert await write_state(session, second, write_id) == "sent"
            assert await notes(session, sim) == [NOTE["properties"]["hs_note_body"]]
    finally:
        for process in (first, second, sim):
            if process is not None:
                process.stop()
    stopped = "".join(first.output)
    assert "shutting down with 1 writes queued" in stopped
    assert "data directory" in stopped and str(tmp_path / "data") not in stopped
    assert {p.name for p in (tmp_path / "data").iterdir()} == {"valkey", "credential.key"}
    assert (tmp_path / "data" / "credential.key").stat().st_mode & 0o077 == 0
