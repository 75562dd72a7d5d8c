"""A write accepted for later reaches HubSpot with its JSON numbers exactly as the client sent."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.rulefiles import notes_written_behind

pytestmark = pytest.mark.timeout(60)

BIG = b"123456789012345678901234567890"
NOTE = (
    b'{"properties": {"hs_note_body": "n", "hs_timestamp": "2030-03-01T10:00:00Z",'
    b' "ref_number": ' + BIG + b', "ratio": 0.1, "small": 42}}'
)


async def test_big_integers_in_an_accepted_write_stay_exact(
    upstream: EchoUpstream, gateway_factory: GatewayFactory, tmp_path: Path
) -> None:
    gw = await gateway_factory(upstream.url, rules_path=notes_written_behind(tmp_path))
    resp = await gw.post(
        "/crm/v3/objects/notes",
        data=NOTE,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert resp.status == 202
    for _ in range(200):
        if upstream.seen:
            break
        await asyncio.sleep(0.05)
    batch = upstream.seen[0]
    assert batch["raw_path"] == "/crm/v3/objects/notes/batch/create"
    assert b'"ref_number":' + BIG + b"," in batch["body"]
    assert b'"ratio":0.1' in batch["body"] and b'"small":42' in batch["body"]
