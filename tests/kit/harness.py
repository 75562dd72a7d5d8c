"""What tests share with their fixtures: the token clients send, and the fixtures' types.

(Formerly exported by tests/conftest.py, which now only defines fixtures.)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

TOKEN = "test-token-not-real"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# The key gateways under test seal stored tokens with (a real deployment sets its own).
CREDENTIAL_KEY = "test-credential-key-not-real"
# A second real token of the same portal (e.g. during a rotation), and an admin token.
TOKEN_B = "test-token-b-not-real"
ADMIN = "admin-token-not-real"

Client = TestClient[Any, Any]
SimFactory = Callable[..., Awaitable[TestServer]]
GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def sim_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")
