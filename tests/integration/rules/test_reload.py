"""Rules reload on SIGHUP and on file change; a broken file never replaces working rules."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import aiohttp
import pytest

from proxy.metrics import Metrics
from proxy.rules.holder import RulesHolder
from proxy.rules.loader import load_rules
from tests.kit.burst import sim_token_stats
from tests.kit.harness import AUTH
from tests.kit.processes import REPO, start_gateway, start_sim

pytestmark = pytest.mark.timeout(60)

ENROLLMENTS = "/crm/v3/objects/2-41701559/search"


def reloads(metrics: Metrics, result: str) -> float:
    found = metrics.registry.get_sample_value(
        "hubspot_proxy_rules_reloads_total", {"result": result}
    )
    return found or 0.0


async def test_file_changes_are_picked_up_and_broken_files_kept_out(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules" / "default.yaml", path)
    metrics = Metrics()
    holder = RulesHolder(str(path), load_rules(path), metrics)
    watcher = asyncio.create_task(holder.watch(interval_s=0.05))
    try:
        path.write_text(path.read_text().replace("tier: starter", "tier: professional"))
        for _ in range(100):
            if reloads(metrics, "ok"):
                break
            await asyncio.sleep(0.05)
        assert holder.current.limits.tier == "professional"

        path.write_text("version: 1\nlimits: {tier: platinum}\n")
        for _ in range(100):
            if reloads(metrics, "error"):
                break
            await asyncio.sleep(0.05)
        assert holder.current.limits.tier == "professional"
    finally:
        watcher.cancel()


async def test_sighup_reloads_a_running_gateway(tmp_path: Path, redis_url: str) -> None:
    path = tmp_path / "rules.yaml"
    shutil.copy(REPO / "rules" / "default.yaml", path)
    sim = start_sim()
    gateway = start_gateway(sim.url, redis_url, path)
    try:
        async with aiohttp.ClientSession() as session:

            async def enrollment_search() -> int:
                url = gateway.url + ENROLLMENTS
                async with session.post(url, json={"filterGroups": []}, headers=AUTH) as resp:
                    await resp.read()
                    return resp.status

            assert await enrollment_search() == 200
            answered_by_rule = (await sim_token_stats(sim.url))["total"]
            text = path.read_text()
            path.write_text(
                text.replace("    type: respond\n", "    type: respond\n    enabled: false\n")
            )
            gateway.signal(signal.SIGHUP)
            for _ in range(50):
                if any("rules reloaded" in line for line in gateway.output):
                    break
                await asyncio.sleep(0.1)
            assert await enrollment_search() == 200
            forwarded = (await sim_token_stats(sim.url))["total"]
    finally:
        gateway.stop()
        sim.stop()
    assert (answered_by_rule, forwarded) == (0, 1)
