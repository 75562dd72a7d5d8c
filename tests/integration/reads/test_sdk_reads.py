"""The official Python SDK parses the gateway's own answers exactly as HubSpot's (invariant 6).

Each answer the gateway makes up (index hit, negative, complete-scope miss, cached object,
absorbed PATCH, static respond) is read with `hubspot-api-client` and compared, field by field,
with the SDK's reading of HubSpot's own answer to the same call.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hubspot import HubSpot
from hubspot.crm.objects import (
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)

from tests.kit.harness import TOKEN, Client, GatewayFactory
from tests.kit.read_side import BOOKINGS, DATE, EXAMS, actions_of, book, rules_file
from tests.kit.sim_client import Sim

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")
ASKED = ["contact_id", "exam_date", "is_active", "booking_id", "never_set"]


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The SDK is synchronous (urllib3); the gateway and simulator run on this event loop.
    return await asyncio.to_thread(fn, *args, **kwargs)


def sdk(url: str) -> HubSpot:
    return HubSpot(access_token=TOKEN, host=url.rstrip("/"))


def gateway_url(gw: Client) -> str:
    return str(gw.make_url("")).rstrip("/")


def dup_request(contact: str) -> PublicObjectSearchRequest:
    filters = [
        Filter(property_name="contact_id", operator="EQ", value=contact),
        Filter(property_name="exam_date", operator="EQ", value=DATE),
        Filter(property_name="is_active", operator="EQ", value="Active"),
    ]
    return PublicObjectSearchRequest(
        filter_groups=[FilterGroup(filters=filters)], properties=ASKED, limit=10
    )


async def search_both(via: HubSpot, hubspot: HubSpot, contact: str) -> tuple[Any, Any]:
    ours = await run(via.crm.objects.search_api.do_search, BOOKINGS, dup_request(contact))
    theirs = await run(hubspot.crm.objects.search_api.do_search, BOOKINGS, dup_request(contact))
    return ours.to_dict(), theirs.to_dict()


async def test_index_answers_parse_like_hubspots(
    world: Sim, read_side_gateway: GatewayFactory, tmp_path: pathlib.Path
) -> None:
    gw = await read_side_gateway(world.url, rules_path=rules_file(tmp_path, complete=True))
    await book(gw, "earlier", date="2030-01-01")  # seen creating: its misses may be answered
    via, hubspot = sdk(gateway_url(gw)), sdk(world.url)
    ours, theirs = await search_both(via, hubspot, "c0")  # first sight: answered after the load
    assert ours == theirs and ours["total"] == 0
    await actions_of(gw).loader.wait_idle()
    before = len(await world.calls())
    made = await run(
        via.crm.objects.basic_api.create,
        BOOKINGS,
        SimplePublicObjectInputForCreate(
            properties={"contact_id": "c1", "exam_date": DATE, "is_active": "Active",
                        "booking_id": "B-1"}
        ),
    )  # fmt: skip
    ours, theirs = await search_both(via, hubspot, "c1")  # answered by the index
    assert ours == theirs and ours["results"][0]["id"] == made.id
    assert ours["results"][0]["properties"]["never_set"] is None
    ours, theirs = await search_both(via, hubspot, "c2")  # complete scope: none, from Redis
    assert ours == theirs == {"total": 0, "results": [], "paging": None}
    all_searches = [c for c in await world.calls() if c[1].endswith("/search")]
    assert len(all_searches) == 1 + 3  # the load (first sight waited for it); 3 direct references
    assert len(await world.calls()) == before + 1 + 2  # the create; the direct searches


async def test_cached_objects_and_absorbed_writes_parse_like_hubspots(
    world: Sim, read_side_gateway: GatewayFactory
) -> None:
    gw = await read_side_gateway(world.url)
    via, hubspot = sdk(gateway_url(gw)), sdk(world.url)
    (exam_id,) = await world.seed(EXAMS, {"capacity": "10", "total_bookings": "4"})
    get = via.crm.objects.basic_api.get_by_id
    props = ["capacity", "total_bookings"]
    first = (await run(get, EXAMS, exam_id, properties=props)).to_dict()  # forwarded
    second = (await run(get, EXAMS, exam_id, properties=props)).to_dict()  # cached
    reference = (
        await run(hubspot.crm.objects.basic_api.get_by_id, EXAMS, exam_id, properties=props)
    ).to_dict()
    assert first == second == reference
    update = SimplePublicObjectInput(properties={"total_bookings": "3"})  # a stale client
    updated = await run(via.crm.objects.basic_api.update, EXAMS, exam_id, update)
    assert updated.properties["total_bookings"] == "4"  # the gateway's count, not 3
    enrollments = await run(
        via.crm.objects.search_api.do_search, "2-41701559", PublicObjectSearchRequest()
    )
    assert enrollments.to_dict() == {"total": 0, "results": [], "paging": None}
    gets = [c for c in await world.calls() if c[0] == "GET"]
    assert len(gets) == 2  # the gateway's one, and the direct reference
