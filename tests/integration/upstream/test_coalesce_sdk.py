"""The official Python SDK parses coalesced answers like HubSpot's own: concurrent SDK calls on a
spent budget ride in batch calls, and each returns its model (or raises HubSpot's 404)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar, cast

import pytest
from hubspot import HubSpot
from hubspot.crm.objects import SimplePublicObjectInput, SimplePublicObjectInputForCreate
from hubspot.crm.objects.exceptions import ApiException

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")


@pytest.fixture
def window_s() -> int:
    """Three seconds, not one: the SDK's threads start its nine calls slowly on a loaded machine,
    and a call that comes after the warm-up's window has passed finds the budget free and goes
    out alone, one single call where the test counts batches."""
    return 3


async def together(*calls: Callable[[], T]) -> list[T | BaseException]:
    """The SDK is synchronous: each call in its own thread, all at once."""
    return await asyncio.gather(*(asyncio.to_thread(c) for c in calls), return_exceptions=True)


async def test_reads_updates_creates_and_associations(
    sdk: HubSpot, world: Any, saturate: Any
) -> None:
    a, b = await world.seed("0-1", {"email": "a@x.com"}, {"email": "b@x.com"})
    k1, k2 = await world.seed("0-2", {"name": "X"}, {"name": "Y"})
    basic, v4 = sdk.crm.objects.basic_api, sdk.crm.associations.v4.basic_api
    await saturate()
    before = len(await world.calls())

    got = await together(
        partial(basic.get_by_id, "contacts", a, properties=["email"]),
        partial(basic.get_by_id, "contacts", b, properties=["email"]),
        partial(basic.get_by_id, "contacts", "99999999", properties=["email"]),
        partial(basic.update, "companies", k1, SimplePublicObjectInput(properties={"name": "X2"})),
        partial(basic.update, "companies", k2, SimplePublicObjectInput(properties={"name": "Y2"})),
        partial(
            basic.create, "companies", SimplePublicObjectInputForCreate(properties={"name": "N1"})
        ),
        partial(
            basic.create, "companies", SimplePublicObjectInputForCreate(properties={"name": "N2"})
        ),
        partial(v4.create_default, "contacts", a, "companies", k1),
        partial(v4.create_default, "contacts", b, "companies", k2),
    )
    burst = Counter(path for _, path in (await world.calls())[before:])

    read_a, read_b, missing, upd1, upd2, new1, new2, assoc1, assoc2 = cast(list[Any], got)
    assert [read_a.properties["email"], read_b.properties["email"]] == ["a@x.com", "b@x.com"]
    assert isinstance(missing, ApiException) and missing.status == 404
    assert [upd1.properties["name"], upd2.properties["name"]] == ["X2", "Y2"]
    assert [new1.properties["name"], new2.properties["name"]] == ["N1", "N2"]
    assert new1.id != new2.id and new1.created_at is not None
    assert [(r._from.id, r.to.id) for r in assoc1.results][:1] == [(a, k1)]
    assert [(r._from.id, r.to.id) for r in assoc2.results][:1] == [(b, k2)]
    # Association batches draw from no rolling window here (no `associations` limit): their
    # group does not wait for a paced slot, so the two PUTs may leave in one or two batches.
    associate = "/crm/v4/associations/contacts/companies/batch/associate/default"
    assert burst.pop(associate) in (1, 2)
    assert burst == {
        "/crm/v3/objects/contacts/batch/read": 1,
        "/crm/v3/objects/companies/batch/update": 1,
        "/crm/v3/objects/companies/batch/create": 1,
    }
