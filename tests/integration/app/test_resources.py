"""The gateway's resources start in order and stop in reverse order, every one of them, even when
one fails to stop: a real Valkey server and the simulator behind a gateway that is not served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from proxy.app import SERVICES, Services, create_app
from proxy.config import Settings
from tests.kit.harness import CREDENTIAL_KEY, SimFactory, sim_url

pytestmark = pytest.mark.timeout(30)


class StopFailed(Exception):
    pass


def spy(closed: list[str], name: str, close: Callable[..., Awaitable[Any]]) -> Any:
    async def closing(*args: Any, **kwargs: Any) -> Any:
        closed.append(name)
        return await close(*args, **kwargs)

    return closing


def spy_on_every_stop(services: Services, closed: list[str]) -> None:
    assert services.writes is not None and services.jobs is not None
    assert services.redis is not None
    services.redis.aclose = spy(closed, "redis", services.redis.aclose)  # type: ignore[method-assign]
    services.upstream.close = spy(closed, "upstream", services.upstream.close)  # type: ignore[method-assign]
    services.limiter.aclose = spy(closed, "limiter", services.limiter.aclose)  # type: ignore[method-assign]
    services.recorder.stop = spy(closed, "recorder", services.recorder.stop)  # type: ignore[method-assign]
    services.actions.aclose = spy(closed, "actions", services.actions.aclose)  # type: ignore[method-assign]
    services.writes.stop = spy(closed, "writes", services.writes.stop)  # type: ignore[method-assign]


async def test_a_failing_stop_still_closes_every_other_resource(
    sim_factory: SimFactory, redis_url: str
) -> None:
    sim = await sim_factory()
    settings = Settings(upstream=sim_url(sim), redis_url=redis_url, credential_key=CREDENTIAL_KEY)
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()  # starts every resource, as serving would
    services = app[SERVICES]
    closed: list[str] = []
    spy_on_every_stop(services, closed)

    async def failing_stop() -> None:
        closed.append("jobs")
        raise StopFailed("jobs could not stop")

    services.jobs.stop = failing_stop  # type: ignore[method-assign,union-attr]
    with pytest.raises(StopFailed):
        await runner.cleanup()
    # Reverse order of start; the rules watcher has nothing to spy on but stops in between.
    assert closed == ["jobs", "writes", "actions", "recorder", "limiter", "upstream", "redis"]
    assert services.upstream._session is None
