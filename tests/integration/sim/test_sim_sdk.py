"""The official `hubspot-api-client` SDK against the simulator: its models must parse our bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    AssociationSpec,
    BatchInputPublicAssociationMultiPost,
    BatchInputPublicDefaultAssociationMultiPost,
    BatchInputPublicFetchAssociationsBatchRequest,
)
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectId,
    BatchReadInputSimplePublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects.exceptions import ApiException

from hubspot_sim import SimConfig
from hubspot_sim.testing import BackgroundSim, SimServer

pytestmark = pytest.mark.timeout(30)

EXAMS, BOOKINGS = "2-50158913", "2-50158943"
T = TypeVar("T")


@pytest.fixture
async def sdk() -> AsyncIterator[tuple[HubSpot, SimServer]]:
    async with SimServer(SimConfig(general_limit=1000)) as sim:
        yield HubSpot(access_token="sdk-token", host=sim.url), sim


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    # The SDK is synchronous (urllib3): keep the event loop, and so the simulator, running.
    return await asyncio.to_thread(fn, *args, **kwargs)


async def test_create_get_update(sdk: tuple[HubSpot, SimServer]) -> None:
    client, _ = sdk
    basic = client.crm.objects.basic_api
    made = await run(
        basic.create, EXAMS, SimplePublicObjectInputForCreate(properties={"capacity": "10"})
    )
    assert made.id.isdigit() and made.properties["capacity"] == "10" and made.created_at
    got = await run(basic.get_by_id, EXAMS, made.id, properties=["capacity"])
    assert got.properties["capacity"] == "10" and got.properties["hs_object_id"] == made.id
    updated = await run(
        basic.update, EXAMS, made.id, SimplePublicObjectInput(properties={"capacity": "9"})
    )
    assert updated.properties["capacity"] == "9"
    contact = await run(
        client.crm.contacts.basic_api.create,
        SimplePublicObjectInputForCreate(properties={"email": "a@b.c"}),
    )
    assert (await run(client.crm.contacts.basic_api.get_by_id, contact.id)).properties[
        "email"
    ] == "a@b.c"


async def test_missing_object_raises_api_exception(sdk: tuple[HubSpot, SimServer]) -> None:
    client, _ = sdk
    with pytest.raises(ApiException) as info:
        await run(client.crm.objects.basic_api.get_by_id, EXAMS, "12345")
    assert info.value.status == 404
    assert '"category":"OBJECT_NOT_FOUND"' in info.value.body


async def test_search(sdk: tuple[HubSpot, SimServer]) -> None:
    client, sim = sdk
    for i in range(3):
        sim.state.objects.create(BOOKINGS, {"key": f"k{i}", "is_active": "Active"})
    request = PublicObjectSearchRequest(
        filter_groups=[{"filters": [{"propertyName": "key", "operator": "EQ", "value": "k1"}]}],
        properties=["key", "is_active"],
        limit=10,
    )
    page = await run(client.crm.objects.search_api.do_search, BOOKINGS, request)
    assert page.total == 1 and page.results[0].properties["key"] == "k1"
    everything = await run(
        client.crm.objects.search_api.do_search, BOOKINGS, PublicObjectSearchRequest(limit=2)
    )
    assert everything.total == 3 and everything.paging.next.after == "2"


async def test_batch_read_and_update(sdk: tuple[HubSpot, SimServer]) -> None:
    client, sim = sdk
    ids = [sim.state.objects.create(EXAMS, {"n": str(i)}).id for i in range(2)]
    batch = client.crm.objects.batch_api
    read = BatchReadInputSimplePublicObjectId(
        inputs=[{"id": i} for i in [*ids, "999"]], properties=["n"], properties_with_history=[]
    )
    result = await run(batch.read, EXAMS, read)
    assert sorted(r.id for r in result.results) == sorted(ids)
    assert result.num_errors == 1 and result.errors[0].category == "OBJECT_NOT_FOUND"
    update = BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": ids[0], "properties": {"n": "5"}, "objectWriteTraceId": "t-1"}]
    )
    updated = await run(batch.update, EXAMS, update)
    assert updated.results[0].properties["n"] == "5"
    assert updated.results[0].object_write_trace_id == "t-1"
    await run(batch.archive, EXAMS, BatchInputSimplePublicObjectId(inputs=[{"id": ids[1]}]))


async def test_associations_v4(sdk: tuple[HubSpot, SimServer]) -> None:
    client, sim = sdk
    contact = sim.state.objects.create("contacts", {}).id
    booking = sim.state.objects.create(BOOKINGS, {}).id
    exam = sim.state.objects.create(EXAMS, {}).id
    v4 = client.crm.associations.v4
    default = await run(v4.basic_api.create_default, "contacts", contact, BOOKINGS, booking)
    assert default.status == "COMPLETE" and default.results[0]._from.id == contact
    spec = [AssociationSpec(association_category="USER_DEFINED", association_type_id=7)]
    labels = await run(v4.basic_api.create, BOOKINGS, booking, EXAMS, exam, spec)
    assert labels.from_object_id == booking and labels.to_object_type_id == EXAMS
    page = await run(v4.basic_api.get_page, BOOKINGS, booking, "contacts")
    assert [r.to_object_id for r in page.results] == [contact]
    pairs = BatchInputPublicDefaultAssociationMultiPost(
        inputs=[{"from": {"id": exam}, "to": {"id": contact}}]
    )
    await run(v4.batch_api.create_default, EXAMS, "contacts", pairs)
    labeled = BatchInputPublicAssociationMultiPost(
        inputs=[
            {
                "from": {"id": exam},
                "to": {"id": booking},
                "types": [
                    spec[0].to_dict()
                    | {"associationCategory": "USER_DEFINED", "associationTypeId": 8}
                ],
            }
        ]
    )
    created = await run(v4.batch_api.create, EXAMS, BOOKINGS, labeled)
    assert created.results[0].to_object_id == booking
    read = await run(
        v4.batch_api.get_page,
        "contacts",
        EXAMS,
        BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": contact}]),
    )
    assert [t.to_object_id for t in read.results[0].to] == [exam]
    await run(v4.basic_api.archive, BOOKINGS, booking, "contacts", contact)
    assert (await run(v4.basic_api.get_page, "contacts", contact, BOOKINGS)).results == []


def test_background_sim_serves_synchronous_clients() -> None:
    with BackgroundSim(SimConfig()) as sim:
        client = HubSpot(access_token="sync-token", host=sim.url)
        made = client.crm.objects.basic_api.create(
            EXAMS, SimplePublicObjectInputForCreate(properties={"a": "1"})
        )
        assert client.crm.objects.basic_api.get_by_id(EXAMS, made.id).id == made.id
