"""A gateway served in the test's process exactly as `hubspot-proxy run` serves it."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from proxy.app import create_app
from proxy.config import Settings
from proxy.http.edge import EdgeRunner


class GatewayServer(TestServer):
    """A TestServer whose runner is the gateway's own (`EdgeRunner`): same edge rules."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(create_app(settings), host="127.0.0.1", **kwargs)
        self.settings = settings

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return EdgeRunner(self.app, self.settings, access_log=None, **kwargs)
