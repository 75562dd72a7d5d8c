"""The gateway as ops run it: the CLI, its settings, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.kit.burst import seed_objects
from tests.kit.harness import AUTH
from tests.kit.processes import cli, start_gateway, start_sim
from tests.kit.rulefiles import notes_written_behind

pytestmark = pytest.mark.timeout(90)


def test_check_accepts_the_default_rules() -> None:
    result = cli("check", "rules/default.yaml")
    assert result.returncode == 0, result.stderr


def test_check_names_file_line_and_field(tmp_path: Path) -> None:
    rules = tmp_path / "broken.yaml"
    rules.write_text("version: 1\nlimits:\n  tier: starter\n  safety_margin: 2\n")
    result = cli("check", str(rules))
    assert result.returncode == 2
    assert f"{rules}:4: limits.safety_margin:" in result.stderr


def test_check_validates_the_environment_too() -> None:
    result = cli("check", "rules/default.yaml", env={"HUBSPOT_PROXY_PORT": "eighty"})
    assert result.returncode == 2
    assert "HUBSPOT_PROXY_PORT" in result.stderr


def test_print_config_masks_secrets() -> None:
    env = {
        "HUBSPOT_PROXY_ADMIN_TOKEN": "admin-secret-value",
        "REDIS_URL": "redis://:redis-secret@127.0.0.1:6379/0",
    }
    result = cli("run", "--print-config", "--port", "9999", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["port"] == 9999
    assert "admin-secret-value" not in result.stdout and "redis-secret" not in result.stdout
    assert shown["admin_token"] == "********"


def test_run_refuses_a_broken_rules_file_with_its_line(tmp_path: Path) -> None:
    rules = tmp_path / "broken.yaml"
    rules.write_text("version: 1\nrules:\n  - name: x\n    type: nope\n")
    result = cli("run", "--rules", str(rules), "--redis-url", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert f"{rules}:4: rules[0].type:" in result.stderr


def test_the_listening_socket_queues_a_burst_of_connects(redis_url: str) -> None:
    """aiohttp listens with a backlog of 128; a 9:00 burst overflowed it and the kernel dropped
    handshakes (retried by TCP seconds later). The gateway asks for `--listen-backlog`; the
    kernel shows it, capped by somaxconn, as a listening socket's Send-Q."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    gateway = start_gateway(
        "http://127.0.0.1:9", redis_url, env={"HUBSPOT_PROXY_LISTEN_BACKLOG": "1500"}
    )
    try:
        port = gateway.url.rsplit(":", 1)[1]
        shown = subprocess.run(
            ["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert int(shown[2]) == min(1500, somaxconn)
    finally:
        gateway.stop()


async def test_sigterm_finishes_in_flight_calls_and_stops_accepting(redis_url: str) -> None:
    sim = start_sim("--latency-ms", "1500,1500")
    gateway = start_gateway(sim.url, redis_url)
    try:
        (contact,) = await seed_objects(sim.url, "contacts", 1)
        async with aiohttp.ClientSession() as session:

            async def get() -> int:
                url = f"{gateway.url}/crm/v3/objects/contacts/{contact}"
                async with session.get(url, headers=AUTH) as resp:
                    await resp.read()
                    return resp.status

            in_flight = [asyncio.create_task(get()) for _ in range(10)]
            await asyncio.sleep(0.5)
            gateway.signal(signal.SIGTERM)
            statuses = await asyncio.gather(*in_flight)
            exit_code = await asyncio.to_thread(gateway.wait, 30)
            with pytest.raises(aiohttp.ClientConnectionError):
                await get()
    finally:
        gateway.stop()
        sim.stop()

    assert statuses == [200] * 10
    assert exit_code == 0
    assert any("shutting down" in line for line in gateway.output)


async def test_sigterm_with_queued_writes_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    rules = notes_written_behind(tmp_path)  # notes are created synchronously unless opted in
    """Writes accepted by a gateway that is told to stop are sent by the next one, once each."""
    # HubSpot answers slower than the first gateway's shutdown lets its worker wait, so some
    # writes are still queued or in flight when it stops.
    sim = start_sim("--latency-ms", "2000,2000")
    env = {"HUBSPOT_PROXY_WRITE_CLAIM_IDLE_S": "1", "HUBSPOT_PROXY_SHUTDOWN_TIMEOUT_S": "1"}
    first = start_gateway(sim.url, redis_url, rules, env=env)
    second = None
    bodies = [f"queued note {i}" for i in range(250)]
    try:
        async with aiohttp.ClientSession() as session:
            for body in bodies:
                note = {"properties": {"hs_note_body": body, "hs_timestamp": "2030-01-01"}}
                url = f"{first.url}/crm/v3/objects/notes"
                async with session.post(url, json=note, headers=AUTH) as resp:
                    assert resp.status == 202
            first.signal(signal.SIGTERM)
            assert await asyncio.to_thread(first.wait, 30) == 0
            second = start_gateway(sim.url, redis_url, rules, env=env)
            async with session.get(f"{sim.url}/__sim/objects/0-46") as resp:
                sent_by_first = len((await resp.json())["results"])
            for _ in range(240):
                async with session.get(f"{sim.url}/__sim/objects/0-46") as resp:
                    stored = (await resp.json())["results"]
                if len(stored) >= len(bodies):
                    break
                await asyncio.sleep(0.25)
    finally:
        first.stop()
        if second is not None:
            second.stop()
        sim.stop()
    assert sent_by_first < len(bodies)  # the second gateway had work to take over
    assert sorted(n["properties"]["hs_note_body"] for n in stored) == sorted(bodies)
