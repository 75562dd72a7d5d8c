"""Issue 13 (12): no key ships in the package. Without HUBSPOT_PROXY_CREDENTIAL_KEY the gateway
refuses an external Redis, or (embedded Valkey) generates a key kept beside the data, never in
Redis; `check` and `--print-config` say which."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import InvalidToken

from proxy.http.credentials import credential_id
from proxy.store.vault import _fernet, vault_key
from tests.kit.harness import AUTH, TOKEN
from tests.kit.processes import cli, free_port, start_embedded_gateway
from tests.kit.rulefiles import notes_written_behind

pytestmark = pytest.mark.timeout(90)

EXTERNAL = {"REDIS_URL": "redis://127.0.0.1:1/0"}
OLD_BUILT_IN_KEY = "hubspot-proxy"


def test_run_refuses_an_external_redis_without_the_key() -> None:
    result = cli("run", "--port", str(free_port()), env=EXTERNAL)
    assert result.returncode == 2
    assert "HUBSPOT_PROXY_CREDENTIAL_KEY is unset: refused" in result.stderr


@pytest.mark.parametrize(
    ("env", "code", "says"),
    [(EXTERNAL, 2, "refused with an external Redis"), ({}, 0, "a key is generated")],
)
def test_check_and_print_config_say_what_happens_without_the_key(
    env: dict[str, str], code: int, says: str
) -> None:
    checked = cli("check", "rules/default.yaml", env=env)
    assert checked.returncode == code
    assert says in checked.stderr
    shown = json.loads(cli("run", "--print-config", env=env).stdout)
    assert shown["credential_key"].startswith("(unset)") and says in shown["credential_key"]
    key_set = cli("run", "--print-config", env={**env, "HUBSPOT_PROXY_CREDENTIAL_KEY": "k" * 40})
    assert json.loads(key_set.stdout)["credential_key"] == "********"
    assert (
        cli(
            "check", "rules/default.yaml", env={**env, "HUBSPOT_PROXY_CREDENTIAL_KEY": "k"}
        ).returncode
        == 0
    )


async def test_the_generated_key_stays_beside_the_data_and_out_of_redis(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rules = notes_written_behind(tmp_path)  # a note accepted at once puts the token in the vault
    gateway = start_embedded_gateway(f"http://127.0.0.1:{free_port()}", data, rules=rules)
    try:
        note = {"properties": {"hs_note_body": "x", "hs_timestamp": "2030-01-01"}}
        async with aiohttp.ClientSession() as session:
            url = f"{gateway.url}/crm/v3/objects/notes"
            async with session.post(url, json=note, headers=AUTH) as resp:
                assert resp.status == 202  # the token is now in the vault
        (valkey_url,) = re.findall(
            r"embedded valkey started at (redis://[0-9.:]+)", "".join(gateway.output)
        )
        key = (data / "credential.key").read_text().strip()
        redis = aioredis.from_url(valkey_url)
        try:
            sealed = await redis.get(vault_key(credential_id(TOKEN, key.encode())))
            values = [await redis.dump(k) or b"" async for k in redis.scan_iter()]
        finally:
            await redis.aclose()
    finally:
        gateway.stop()
    assert sealed is not None
    assert _fernet(key).decrypt(sealed).decode() == TOKEN
    with pytest.raises(InvalidToken):
        _fernet(OLD_BUILT_IN_KEY).decrypt(sealed)
    assert not any(key.encode() in value for value in values)
    assert "warning" in "".join(gateway.output).lower() and key not in "".join(gateway.output)
