"""Fixtures for the simulator alone, served in process."""

from __future__ import annotations

from typing import Any

import pytest
from pytest_aiohttp import AiohttpClient

from hubspot_sim import SimConfig, create_app
from tests.kit.clock import ManualClock
from tests.kit.sim_client import MakeSim, SimTestClient


@pytest.fixture
def make_sim(aiohttp_client: AiohttpClient) -> MakeSim:
    """Simulators on real time, or on a ManualClock (its time and sleeps) when given `clock`."""

    async def make(*, clock: ManualClock | None = None, **config: Any) -> SimTestClient:
        if clock is None:
            app = create_app(SimConfig(**config))
        else:
            app = create_app(SimConfig(**config), clock=clock, sleep=clock.sleep)
        client: SimTestClient = await aiohttp_client(app)
        return client

    return make
