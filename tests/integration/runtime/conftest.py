"""Fixtures for the runtime tests: the simulator as the booking portal sees it."""

from __future__ import annotations

import pytest

from tests.conftest import SimFactory
from tests.integration.test_rules_runtime import Sim


@pytest.fixture
async def portal(sim_factory: SimFactory) -> Sim:
    """A simulator with roomy limits: these tests count seats, not budgets."""
    return Sim(await sim_factory(tier="enterprise"))
