"""Fixtures for tests of the gateway in front of the simulator."""

from __future__ import annotations

import pytest

from tests.kit.harness import SimFactory
from tests.kit.sim_client import Sim


@pytest.fixture
async def world(sim_factory: SimFactory) -> Sim:
    """A fresh simulator, seen through its test API."""
    return Sim(await sim_factory())
