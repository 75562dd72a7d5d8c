"""The booking flow through the gateway with the clients the backend really uses.

The PRD's 11 calls per booking, made by the official Node SDK (`@hubspot/api-client`, installed
from npm by `make test`) and by the official Python SDK, for 20 students at once, with the shipped
rules in front of a simulator on Starter limits. Every booking must succeed with the SDK's own
parsing of every answer (no retries), and HubSpot must end up holding exactly what the students
were told: one booking, two associations and one note each, credits and exam counts right.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest

from tests.kit.booking_flow import (
    Booking,
    Trainee,
    booked_before,
    problems,
    seed_portal,
    verify_portal,
)
from tests.kit.harness import TOKEN, GatewayFactory, SimFactory, sim_url
from tests.kit.sdk_flows import node_available, node_sdk_bookings, python_sdk_booking

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

STUDENTS, EXAMS, CREDITS = 20, 2, 2


async def portal(sim_factory: SimFactory) -> tuple[str, list[Trainee]]:
    sim = sim_url(await sim_factory(tier="starter", latency_ms=(20, 60)))
    async with aiohttp.ClientSession() as session:
        trainees = await seed_portal(session, sim, STUDENTS, exams=EXAMS, credits=CREDITS)
    return sim, trainees


async def gateway_in_service(gateway_factory: GatewayFactory, sim: str) -> str:
    """A gateway whose backend has booked before (it answers index misses for its token)."""
    base = str((await gateway_factory(sim)).make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        await booked_before(session, base, TOKEN)
    return base


async def settled(sim: str, bookings: list[Booking], trainees: list[Trainee]) -> dict[str, Any]:
    """The simulator's state once the write-behind worker has sent what it accepted (bounded)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(60):
            check = await verify_portal(session, sim, bookings, trainees, credits=CREDITS)
            if not problems(check):
                break
            await asyncio.sleep(0.5)
    return check


async def sim_stats(sim: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{sim}/__sim/stats?token={TOKEN}") as r:
        return dict(await r.json())


async def assert_all_booked(sim: str, bookings: list[Booking], trainees: list[Trainee]) -> None:
    assert Counter(b.outcome for b in bookings) == {"ok": STUDENTS}
    check = await settled(sim, bookings, trainees)
    assert problems(check) == {}
    assert check["bookings_in_hubspot"] == STUDENTS
    assert sum(c["active"] for c in check["counters"]) == STUDENTS
    stats = await sim_stats(sim)
    assert stats["rate_limited"] == {}  # HubSpot never answered 429


async def test_the_node_sdk_books_everyone_through_the_gateway(
    sim_factory: SimFactory, gateway_factory: GatewayFactory
) -> None:
    missing = node_available()
    assert missing is None, missing  # make test installs it: a missing SDK is a failure
    sim, trainees = await portal(sim_factory)
    base = await gateway_in_service(gateway_factory, sim)
    version, bookings = await node_sdk_bookings(base, TOKEN, trainees)
    assert version.split(".")[0] in {"13", "14"}
    await assert_all_booked(sim, bookings, trainees)


async def test_the_python_sdk_books_everyone_through_the_gateway(
    sim_factory: SimFactory, gateway_factory: GatewayFactory
) -> None:
    sim, trainees = await portal(sim_factory)
    base = await gateway_in_service(gateway_factory, sim)
    bookings = await asyncio.gather(
        *(asyncio.to_thread(python_sdk_booking, base, TOKEN, t) for t in trainees)
    )
    await assert_all_booked(sim, list(bookings), trainees)
