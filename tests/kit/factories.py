"""Types of the fixtures that start simulators and gateways, and the URL of a started one."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

Client = TestClient[Any, Any]
SimFactory = Callable[..., Awaitable[TestServer]]
GatewayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def sim_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")
