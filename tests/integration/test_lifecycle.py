"""The gateway as ops run it: the CLI, its settings, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import AUTH
from tests.support.burst import seed_objects
from tests.support.processes import REPO, start_gateway, start_sim

pytestmark = pytest.mark.timeout(90)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


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
