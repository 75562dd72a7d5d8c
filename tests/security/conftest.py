"""Fixtures of the security suite: a simulator that knows which tokens are real."""

from __future__ import annotations

import pytest

from tests.kit.harness import TOKEN, TOKEN_B, SimFactory
from tests.kit.sim_client import Sim


@pytest.fixture
async def strict_sim(sim_factory: SimFactory) -> Sim:
    """The simulator accepting only TOKEN and TOKEN_B: any other token gets HubSpot's 401."""
    return Sim(await sim_factory(accepted_tokens=(TOKEN, TOKEN_B)))
