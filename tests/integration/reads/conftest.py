"""Fixtures for the read side through a real gateway, Valkey and the simulator."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tests.kit.harness import Client, GatewayFactory
from tests.kit.read_side import rules_file


@pytest.fixture
def read_side_gateway(gateway_factory: GatewayFactory, tmp_path: pathlib.Path) -> GatewayFactory:
    """Gateways on the read-side rules unless a test names its own."""
    read_side = rules_file(tmp_path)

    async def start(upstream: str, **overrides: Any) -> Client:
        overrides.setdefault("rules_path", read_side)
        return await gateway_factory(upstream, **overrides)

    return start
