"""The PRD's duplicate-detection timeline (1B), on an injected clock, fakeredis and a fake HubSpot.

09:00  search: none              -> "NO_DUPLICATE" for 3 h
10:30  the student books         -> "{id}:Active" until the exam date is over (>= 24 h)
10:31  a second attempt          -> blocked from Redis, HubSpot not asked
11:00  an admin cancels in HubSpot (the gateway does not see it)
11:30  another attempt           -> still blocked: the entry is stale
       reconciliation refreshes the scope -> the entry is gone, rebooking allowed
"""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest

from proxy.budget.model import Priority
from proxy.metrics import Metrics
from proxy.reads.index_entries import NO_DUPLICATE, Record
from proxy.reads.index_learning import IndexLearner, Sighting
from proxy.reads.index_loader import IndexLoader, Urgency
from proxy.reads.search_index import IndexKeys, Lookup, SearchIndex
from proxy.rules.loader import SearchIndexRule, index_key_for_search, load_rules
from proxy.store.rule_store import RuleRedis
from tests.kit.rules import rule_of

CRED = "cred0001"
BOOKINGS = "2-50158943"
EXAM_DATE = "2030-03-20"
HOUR_MS = 3_600_000
RULES = load_rules("rules/default.yaml")
DUP = rule_of(RULES, "booking-duplicate", SearchIndexRule)
IDEM = rule_of(RULES, "booking-idempotency", SearchIndexRule)
INDEXES = [DUP, IDEM]


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 3, 15, 9, 0, tzinfo=UTC)

    def at(self, hh_mm: str) -> None:
        hours, minutes = (int(x) for x in hh_mm.split(":"))
        self.now = self.now.replace(hour=hours, minute=minutes)

    def __call__(self) -> float:
        return self.now.timestamp()


class FakeHubSpot:
    """Bookings and an equality-only search; `lagging` ids still look Active to search."""

    def __init__(self) -> None:
        self.bookings: dict[str, dict[str, str]] = {}
        self.lagging: set[str] = set()
        self.searches = 0
        self._ids = itertools.count(1001)

    def create(self, **props: str) -> dict[str, Any]:
        booking_id = str(next(self._ids))
        self.bookings[booking_id] = dict(props)
        return self.render(booking_id, self.bookings[booking_id])

    @staticmethod
    def render(booking_id: str, props: dict[str, str]) -> dict[str, Any]:
        stamp = "2030-03-15T10:30:00.000Z"
        return {"id": booking_id, "properties": {**props, "hs_object_id": booking_id},
                "createdAt": stamp, "updatedAt": stamp, "archived": False}  # fmt: skip

    async def search(
        self, cred: str, object_type: str, body: dict[str, Any], urgency: Urgency
    ) -> dict[str, Any]:
        self.searches += 1
        filters = body["filterGroups"][0]["filters"]
        found = []
        for booking_id, props in sorted(self.bookings.items()):
            seen = {**props, "is_active": "Active"} if booking_id in self.lagging else props
            if all(seen.get(f["propertyName"]) == f["value"] for f in filters):
                found.append(self.render(booking_id, seen))
        return {"total": len(found), "results": found}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def hubspot() -> FakeHubSpot:
    return FakeHubSpot()


@pytest.fixture
def redis() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())


@pytest.fixture
def parts(
    clock: Clock, hubspot: FakeHubSpot, redis: fakeredis.FakeAsyncRedis
) -> tuple[SearchIndex, IndexLearner, IndexLoader]:
    index = SearchIndex(RuleRedis(redis, timeout_s=1.0, metrics=Metrics()), clock=clock)
    learner = IndexLearner(index)
    return index, learner, IndexLoader(index, learner, hubspot.search)


def dup_body(contact: str) -> dict[str, Any]:
    filters = [
        {"propertyName": "contact_id", "operator": "EQ", "value": contact},
        {"propertyName": "exam_date", "operator": "EQ", "value": EXAM_DATE},
        {"propertyName": "is_active", "operator": "EQ", "value": "Active"},
    ]
    return {"filterGroups": [{"filters": filters}], "properties": ["contact_id"]}


async def has_duplicate(
    parts: tuple[SearchIndex, IndexLearner, IndexLoader], hubspot: FakeHubSpot, contact: str
) -> bool:
    """What the gateway does with the backend's duplicate check: Redis, else HubSpot + fill."""
    index, learner, _ = parts
    found = index_key_for_search(DUP, dup_body(contact))
    assert found is not None
    got = await index.lookup(CRED, DUP, found)
    assert isinstance(got, Lookup)
    if got.answer is not None:
        return bool(got.answer["total"])
    answer = await hubspot.search(CRED, BOOKINGS, dup_body(contact), Urgency())
    await learner.fill(CRED, DUP, found, answer, INDEXES)
    return bool(answer["total"])


async def book(learner: IndexLearner, hubspot: FakeHubSpot, contact: str) -> str:
    made = hubspot.create(contact_id=contact, exam_date=EXAM_DATE, is_active="Active")
    record = Record.from_object(made)
    assert record is not None
    assert await learner.apply(CRED, BOOKINGS, [Sighting(record)], INDEXES, trusted=True)
    return str(made["id"])


async def cancel_through_gateway(learner: IndexLearner, hubspot: FakeHubSpot, bid: str) -> None:
    hubspot.bookings[bid]["is_active"] = "Cancelled"
    change = Record(bid, {"is_active": "Cancelled"})
    assert await learner.apply(CRED, BOOKINGS, [Sighting(change)], INDEXES, trusted=True)


def entry_key(contact: str) -> str:
    return IndexKeys.entry(CRED, DUP, (contact, EXAM_DATE))


async def test_the_prd_timeline(
    parts: tuple[SearchIndex, IndexLearner, IndexLoader],
    hubspot: FakeHubSpot,
    clock: Clock,
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    _, learner, loader = parts
    assert not await has_duplicate(parts, hubspot, "c1")  # 09:00
    assert await redis.get(entry_key("c1")) == NO_DUPLICATE.encode()
    assert abs(await redis.pttl(entry_key("c1")) - 3 * HOUR_MS) < 1000

    clock.at("10:30")
    booking = await book(learner, hubspot, "c1")
    assert await redis.get(entry_key("c1")) == f"{booking}:Active".encode()  # overwrote
    until_exam_over = datetime(2030, 3, 21, tzinfo=UTC) - clock.now
    expected = until_exam_over / timedelta(milliseconds=1)
    assert abs(await redis.pttl(entry_key("c1")) - expected) < 1000

    clock.at("10:31")
    searches = hubspot.searches
    assert await has_duplicate(parts, hubspot, "c1")
    assert hubspot.searches == searches  # blocked from Redis

    clock.at("11:00")
    hubspot.bookings[booking]["is_active"] = "Cancelled"  # directly in HubSpot
    clock.at("11:30")
    assert await has_duplicate(parts, hubspot, "c1")  # stale, as the PRD says

    result = await loader.refresh(CRED, [DUP], EXAM_DATE)  # the reconcile job's call
    assert result.status == "loaded"
    assert await redis.get(entry_key("c1")) is None
    assert not await has_duplicate(parts, hubspot, "c1")  # rebooking allowed


async def test_a_cancellation_through_the_gateway_allows_rebooking_at_once(
    parts: tuple[SearchIndex, IndexLearner, IndexLoader],
    hubspot: FakeHubSpot,
    clock: Clock,
) -> None:
    _, learner, _ = parts
    clock.at("10:30")
    booking = await book(learner, hubspot, "c1")
    assert await has_duplicate(parts, hubspot, "c1")
    await cancel_through_gateway(learner, hubspot, booking)
    hubspot.lagging.add(booking)  # HubSpot's search has not caught up with the cancel
    assert await has_duplicate(parts, hubspot, "c1")  # HubSpot's own (lagging) answer...
    hubspot.lagging.clear()
    assert not await has_duplicate(parts, hubspot, "c1")  # ...was not learned back as Active
    second = await book(learner, hubspot, "c1")
    assert await has_duplicate(parts, hubspot, "c1") and second != booking


async def test_a_complete_scope_answers_misses_and_heals_on_refresh(
    parts: tuple[SearchIndex, IndexLearner, IndexLoader],
    hubspot: FakeHubSpot,
    clock: Clock,
) -> None:
    index, _, loader = parts
    complete = SearchIndexRule(**{**DUP.__dict__, "complete": True})
    kept = hubspot.create(contact_id="c1", exam_date=EXAM_DATE, is_active="Active")
    assert (await loader.refresh(CRED, [complete], EXAM_DATE)).status == "loaded"
    await index.saw_create(CRED, [complete])  # misses are answered only for a known creator
    searches = hubspot.searches
    for contact, wanted in (("c1", 1), ("c2", 0), ("c3", 0)):
        found = index_key_for_search(complete, dup_body(contact))
        assert found is not None
        got = await index.lookup(CRED, complete, found)
        assert isinstance(got, Lookup) and got.answer is not None  # never a miss
        assert got.answer["total"] == wanted
    assert hubspot.searches == searches
    del hubspot.bookings[str(kept["id"])]  # deleted directly in HubSpot
    clock.at("12:00")  # long after it was created: its absence is not search lag
    result = await loader.refresh(CRED, [complete], EXAM_DATE)
    assert result.dropped == 1
    found = index_key_for_search(complete, dup_body("c1"))
    assert found is not None
    got = await index.lookup(CRED, complete, found)
    assert isinstance(got, Lookup) and got.answer == {"total": 0, "results": []}


async def test_a_waiting_caller_does_not_load_a_scope_whose_load_just_ended(
    parts: tuple[SearchIndex, IndexLearner, IndexLoader], hubspot: FakeHubSpot
) -> None:
    """The caller saw the scope unloaded; before it took the load's lock another load (another
    replica's, or one of this process that has just ended) marked it loaded and let go. Loading
    again would spend a search (5 a second) on records the index already holds."""
    _, _, loader = parts
    complete = SearchIndexRule(**{**DUP.__dict__, "complete": True})
    hubspot.create(contact_id="c1", exam_date=EXAM_DATE, is_active="Active")
    assert (await loader.refresh(CRED, [complete], EXAM_DATE)).status == "loaded"
    searches = hubspot.searches

    waiting = Urgency(Priority.INTERACTIVE, deadline=time.monotonic() + 5)
    assert (await loader.refresh(CRED, [complete], EXAM_DATE, waiting)).status == "loaded"
    assert hubspot.searches == searches
    # A refresh of an old load (no caller waits) still goes to HubSpot.
    assert (await loader.refresh(CRED, [complete], EXAM_DATE)).status == "loaded"
    assert hubspot.searches == searches + 1
