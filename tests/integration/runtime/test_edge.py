"""The access log line of a forwarded call, through a real gateway, Valkey and the simulator."""

from __future__ import annotations

import asyncio
import logging
import pathlib
from typing import Any

import pytest

from tests.kit.harness import AUTH, GatewayFactory, SimFactory, sim_url

pytestmark = pytest.mark.timeout(60)

BOOKINGS = "2-50158943"
DEFAULT_RULES = pathlib.Path(__file__).parents[3] / "rules" / "default.yaml"
SEARCHES = 6


def learning_rules(tmp_path: pathlib.Path) -> str:
    """default.yaml with partial indexes (a search is forwarded, then learned from) and a
    search budget of one call per window, so concurrent searches must wait for admission."""
    text = DEFAULT_RULES.read_text().replace("    complete: true\n", "    complete: false\n")
    text = text.replace("search: {limit: 5, window: 1s}", "search: {limit: 1, window: 1s}")
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return str(path)


def duplicate_search(contact: str) -> dict[str, Any]:
    filters = [
        {"propertyName": "contact_id", "operator": "EQ", "value": contact},
        {"propertyName": "exam_date", "operator": "EQ", "value": "2030-03-15"},
        {"propertyName": "is_active", "operator": "EQ", "value": "Active"},
    ]
    return {"filterGroups": [{"filters": filters}]}


async def test_a_learned_call_that_waited_logs_its_wait(
    sim_factory: SimFactory,
    gateway_factory: GatewayFactory,
    tmp_path: pathlib.Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A call a rule learns from is read whole (`forward_buffered`); its admission wait must
    still reach the access log (it used to show wait_s=0 for every such call)."""
    caplog.set_level(logging.INFO, logger="proxy.app")
    sim = await sim_factory()
    gw = await gateway_factory(sim_url(sim), rules_path=learning_rules(tmp_path), access_log=True)
    path = f"/crm/v3/objects/{BOOKINGS}/search"

    async def search(contact: str) -> int:
        resp = await gw.post(path, json=duplicate_search(contact), headers=AUTH)
        await resp.read()
        return resp.status

    statuses = await asyncio.gather(*(search(f"c{i}") for i in range(SEARCHES)))
    assert statuses == [200] * SEARCHES
    lines = [vars(r) for r in caplog.records if r.getMessage() == "request"]
    lines = [line for line in lines if line["path"] == path]
    assert len(lines) == SEARCHES
    assert all(line["upstream_status"] == 200 for line in lines)  # every one went to HubSpot
    waited = [line for line in lines if line["wait_s"] > 0]
    # One call per window: all but the first had to wait for a slot.
    assert len(waited) >= SEARCHES - 1
