"""The booking backend's HubSpot calls (PRD 2.2), as one async function per booking.

Shared by the bench (`python -m bench --scenario peak`) and the tests: `seed_portal` creates
mock exams and trainees in the simulator, `book` runs the 11 calls of one booking against a
base URL (the simulator itself, or a gateway in front of it), and `verify_portal` checks what
landed in the simulator afterwards through `/__sim/*`, at no budget cost.

`SDK_RETRY` is the official Node SDK's retry policy (`@hubspot/api-client`, HUBSPOT.md): waits
of 10 s x attempt after a `TEN_SECONDLY_ROLLING` 429, 1 s x attempt after the search "secondly"
429, 200 ms x attempt after a 5xx, at most 6 attempts, never after `DAILY`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import orjson

MOCK_EXAMS = "2-50158913"
BOOKINGS = "2-50158943"
ENROLLMENTS = "2-41701559"
CONTACTS = "0-1"
NOTES = "0-46"
NOTE_TO_CONTACT = 202  # HUBSPOT_DEFINED note -> contact

STEPS = (
    "idempotency_search",
    "duplicate_search",
    "get_exam",
    "enrollment_search",
    "get_contact",
    "create_booking",
    "assoc_contact_booking",
    "assoc_booking_exam",
    "patch_exam_total",
    "patch_contact_credits",
    "create_note",
)


@dataclass(frozen=True)
class Exam:
    id: str
    date: str  # YYYY-MM-DD


@dataclass(frozen=True)
class Trainee:
    index: int
    contact_id: str
    exam: Exam


@dataclass(frozen=True)
class RetryPolicy:
    """When a client retries a failed call, and after how long (None: give up)."""

    attempts: int = 6
    ten_secondly_s: float = 10.0
    secondly_s: float = 1.0
    server_error_s: float = 0.2

    def delay(self, status: int, body: Any, attempt: int) -> float | None:
        if attempt >= self.attempts:
            return None
        if 500 <= status <= 599:
            return self.server_error_s * attempt
        if status != 429 or not isinstance(body, dict):
            return None
        if body.get("policyName") == "TEN_SECONDLY_ROLLING":
            return self.ten_secondly_s * attempt
        if "secondly limit" in str(body.get("message", "")) and body.get("policyName") != "DAILY":
            return self.secondly_s * attempt
        return None

    def scaled(self, factor: float) -> RetryPolicy:
        """The same policy on a faster clock (the bench's quick mode shrinks every window)."""
        return replace(
            self,
            ten_secondly_s=self.ten_secondly_s * factor,
            secondly_s=self.secondly_s * factor,
            server_error_s=self.server_error_s * factor,
        )


SDK_RETRY = RetryPolicy()


@dataclass(frozen=True)
class CallRecord:
    step: str
    attempt: int
    started: float  # time.monotonic(), comparable with the simulator's /__sim/calls times
    finished: float
    status: int  # 0: no answer (connection error, or the booking's timeout hit mid-call)


@dataclass
class Booking:
    trainee: Trainee
    started: float
    finished: float = 0.0
    outcome: str = "pending"  # "ok", or why it failed: "http-429@get_exam", "timeout@..."
    booking_id: str | None = None
    calls: list[CallRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @property
    def duration(self) -> float:
        return self.finished - self.started


class FlowFailed(Exception):
    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class _Client:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        token: str,
        retry: RetryPolicy | None,
        booking: Booking,
    ) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}
        self.retry = retry
        self.booking = booking
        self.step = STEPS[0]

    async def call(self, step: str, method: str, path: str, body: Any = None) -> Any:
        """The JSON answer of a 2xx (202 counts: an accepted write-behind); else FlowFailed."""
        self.step = step
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            status, answer = await self._send(step, attempt, started, method, path, body)
            if 200 <= status <= 299:
                return answer
            delay = self.retry.delay(status, answer, attempt) if self.retry else None
            if delay is None:
                raise FlowFailed(f"http-{status}@{step}" if status else f"error@{step}")
            await asyncio.sleep(delay)

    async def _send(
        self, step: str, attempt: int, started: float, method: str, path: str, body: Any
    ) -> tuple[int, Any]:
        status, answer = 0, None
        try:
            async with self.session.request(
                method, self.base + path, json=body, headers=self.headers
            ) as resp:
                status = resp.status
                raw = await resp.read()
            answer = _json_or_none(raw)
        except aiohttp.ClientError:
            status = 0
        finally:
            # Recorded even when the booking's timeout cancels the call mid-flight (status 0).
            record = CallRecord(step, attempt, started, time.monotonic(), status)
            self.booking.calls.append(record)
        return status, answer


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _eq(**values: str) -> dict[str, Any]:
    filters = [{"propertyName": k, "operator": "EQ", "value": v} for k, v in values.items()]
    return {"filterGroups": [{"filters": filters}], "limit": 1}


def _prop(obj: Any, name: str) -> str:
    props = obj.get("properties") if isinstance(obj, dict) else None
    value = props.get(name) if isinstance(props, dict) else None
    return "" if value is None else str(value)


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _total(answer: Any) -> int:
    return int(answer.get("total", 0)) if isinstance(answer, dict) else 0


@dataclass(frozen=True)
class _Checked:
    """What steps 1-5 learned: the exam's seat count and the contact's credits."""

    total_bookings: int
    credits: int


async def _validate(c: _Client, t: Trainee, key: str) -> _Checked | None:
    """Steps 1-5; None when the idempotency key names an existing booking (a retried request)."""
    search = f"/crm/v3/objects/{BOOKINGS}/search"
    found = await c.call("idempotency_search", "POST", search, _eq(idempotency_key=key))
    if _total(found):
        c.booking.booking_id = str(found["results"][0].get("id"))
        return None
    duplicate = _eq(contact_id=t.contact_id, exam_date=t.exam.date, is_active="Active")
    if _total(await c.call("duplicate_search", "POST", search, duplicate)):
        raise FlowFailed("duplicate")
    exam_path = f"/crm/v3/objects/{MOCK_EXAMS}/{t.exam.id}?properties=capacity,total_bookings"
    mock = await c.call("get_exam", "GET", exam_path)
    total = _int(_prop(mock, "total_bookings"))
    if total >= _int(_prop(mock, "capacity")):
        raise FlowFailed("full")
    enrollment = _eq(contact_id=t.contact_id, status="Registered")  # the answer is unused
    await c.call("enrollment_search", "POST", f"/crm/v3/objects/{ENROLLMENTS}/search", enrollment)
    contact_path = f"/crm/v3/objects/{CONTACTS}/{t.contact_id}?properties=credits,email"
    credits = _int(_prop(await c.call("get_contact", "GET", contact_path), "credits"))
    if credits < 1:
        raise FlowFailed("no-credits")
    return _Checked(total, credits)


async def _write(c: _Client, t: Trainee, key: str, checked: _Checked) -> None:
    """Steps 6-11: the booking, its two associations, both counters, the timeline note."""
    exam, contact = t.exam, t.contact_id
    props = {"contact_id": contact, "exam_date": exam.date, "is_active": "Active",
             "idempotency_key": key, "mock_exam_id": exam.id}  # fmt: skip
    created = await c.call(
        "create_booking", "POST", f"/crm/v3/objects/{BOOKINGS}", {"properties": props}
    )
    bid = str(created.get("id", "")) if isinstance(created, dict) else ""
    if not bid:
        raise FlowFailed("no-id@create_booking")
    c.booking.booking_id = bid
    v4 = "/crm/v4/objects"
    await c.call("assoc_contact_booking", "PUT",
                 f"{v4}/{CONTACTS}/{contact}/associations/default/{BOOKINGS}/{bid}")  # fmt: skip
    await c.call("assoc_booking_exam", "PUT",
                 f"{v4}/{BOOKINGS}/{bid}/associations/default/{MOCK_EXAMS}/{exam.id}")  # fmt: skip
    seats = {"properties": {"total_bookings": str(checked.total_bookings + 1)}}
    await c.call("patch_exam_total", "PATCH", f"/crm/v3/objects/{MOCK_EXAMS}/{exam.id}", seats)
    left = {"properties": {"credits": str(checked.credits - 1)}}
    await c.call("patch_contact_credits", "PATCH", f"/crm/v3/objects/{CONTACTS}/{contact}", left)
    to_contact = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_CONTACT}
    note = {
        "properties": {
            "hs_note_body": f"Mock exam {exam.id} on {exam.date} booked: booking {bid}",
            "hs_timestamp": str(int(time.time() * 1000)),
        },
        "associations": [{"to": {"id": contact}, "types": [to_contact]}],
    }
    await c.call("create_note", "POST", f"/crm/v3/objects/{NOTES}", note)


async def _flow(c: _Client, t: Trainee, key: str) -> None:
    checked = await _validate(c, t, key)
    if checked is not None:
        await _write(c, t, key, checked)


async def book(
    session: aiohttp.ClientSession,
    base: str,
    token: str,
    trainee: Trainee,
    *,
    retry: RetryPolicy | None = None,
    timeout_s: float = 30.0,
    idempotency_key: str | None = None,
) -> Booking:
    """One booking, the 11 calls in order; never raises for HubSpot's answers or the timeout.

    Succeeds when every call answered 2xx within `timeout_s` for the whole booking.
    """
    booking = Booking(trainee, started=time.monotonic())
    client = _Client(session, base, token, retry, booking)
    try:
        async with asyncio.timeout(timeout_s):
            await _flow(client, trainee, idempotency_key or uuid.uuid4().hex)
        booking.outcome = "ok"
    except TimeoutError:
        booking.outcome = f"timeout@{client.step}"
    except FlowFailed as exc:
        booking.outcome = exc.outcome
    booking.finished = time.monotonic()
    return booking


# --- seeding and checking the simulator (no budget cost) ----------------------------------------


async def booked_before(session: aiohttp.ClientSession, base: str, token: str) -> None:
    """The backend has booked before (a cancelled booking of a visitor, created through the
    gateway): the gateway answers complete-index misses only for a token it has seen create,
    and a gateway in service has seen its backend's token create long before 9:00."""
    earlier = {"contact_id": "visitor", "exam_date": "2030-01-01", "is_active": "Cancelled"}
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/crm/v3/objects/{BOOKINGS}"
    async with session.post(url, json={"properties": earlier}, headers=headers) as resp:
        if resp.status != 201:
            raise FlowFailed(f"booked_before: {resp.status}")


async def seed_portal(
    session: aiohttp.ClientSession,
    sim: str,
    trainees: int,
    *,
    exams: int = 4,
    capacity: int | None = None,
    credits: int = 2,
    first_date: str = "2030-03-0",
) -> list[Trainee]:
    """`exams` mock exams on distinct dates, one contact per trainee; trainee i books exam i % n."""
    cap = capacity if capacity is not None else trainees + 10
    objects: list[dict[str, Any]] = [
        {
            "type": MOCK_EXAMS,
            "properties": {
                "exam_date": f"{first_date}{i + 1}",
                "capacity": str(cap),
                "total_bookings": "0",
                "mock_type": "Situational Judgment",
            },
        }
        for i in range(exams)
    ]
    objects += [
        {
            "type": "contacts",
            "properties": {"email": f"trainee{i}@example.com", "credits": str(credits)},
        }
        for i in range(trainees)
    ]
    async with session.post(f"{sim}/__sim/seed", json={"objects": objects}) as resp:
        resp.raise_for_status()
        created = (await resp.json())["objects"]
    exam_list = [Exam(str(o["id"]), f"{first_date}{i + 1}") for i, o in enumerate(created[:exams])]
    return [Trainee(i, str(o["id"]), exam_list[i % exams]) for i, o in enumerate(created[exams:])]


async def _sim_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        resp.raise_for_status()
        return await resp.json()


async def _linked(
    session: aiohttp.ClientSession, sim: str, pairs: list[tuple[str, str, str]]
) -> dict[tuple[str, str], set[str]]:
    """{(from_type, from_id): to ids} for each (from_type, from_id, to_type), 16 at a time."""
    gate = asyncio.Semaphore(16)

    async def one(from_type: str, from_id: str, to_type: str) -> set[str]:
        async with gate:
            body = await _sim_json(
                session, f"{sim}/__sim/associations/{from_type}/{from_id}/{to_type}"
            )
        return {str(r["toObjectId"]) for r in body["results"]}

    found = await asyncio.gather(*(one(*p) for p in pairs))
    return {(p[0], p[1]): ids for p, ids in zip(pairs, found, strict=True)}


_NOTE_BOOKING = re.compile(r"booking (\S+)$")


@dataclass
class _Portal:
    """Everything the checks read from the simulator."""

    bookings: dict[str, Any]  # id -> record
    exams: list[Any]
    contacts: list[Any]
    noted: set[str]  # booking ids some note names
    links: dict[tuple[str, str], set[str]]

    def active(self, prop: str) -> Counter[str]:
        live = (o for o in self.bookings.values() if _prop(o, "is_active") == "Active")
        return Counter(_prop(o, prop) for o in live)


async def _portal(session: aiohttp.ClientSession, sim: str, trainees: list[Trainee]) -> _Portal:
    objs = {
        t: (await _sim_json(session, f"{sim}/__sim/objects/{t}"))["results"]
        for t in (BOOKINGS, MOCK_EXAMS, CONTACTS, NOTES)
    }
    exams = {t.exam.id for t in trainees}
    contacts = {t.contact_id for t in trainees}
    pairs = [(CONTACTS, c, BOOKINGS) for c in sorted(contacts)]
    pairs += [(MOCK_EXAMS, e, BOOKINGS) for e in sorted(exams)]
    matches = (_NOTE_BOOKING.search(_prop(n, "hs_note_body")) for n in objs[NOTES])
    return _Portal(  # the trainees' bookings: one the backend made before (`booked_before`) is not
        bookings={str(o["id"]): o for o in objs[BOOKINGS] if _prop(o, "contact_id") in contacts},
        exams=[e for e in objs[MOCK_EXAMS] if str(e["id"]) in exams],
        contacts=[c for c in objs[CONTACTS] if str(c["id"]) in contacts],
        noted={m.group(1) for m in matches if m},
        links=await _linked(session, sim, pairs),
    )


async def verify_portal(
    session: aiohttp.ClientSession,
    sim: str,
    bookings: list[Booking],
    trainees: list[Trainee],
    *,
    credits: int = 2,
) -> dict[str, Any]:
    """What the simulator holds after a run, against what the clients were told.

    Every count is a problem when non-zero, except `bookings_in_hubspot`; `counters` lists each
    exam's `total_bookings` beside its active bookings.
    """
    p = await _portal(session, sim, trainees)
    ok = [b for b in bookings if b.ok and b.booking_id]
    ok_ids = {b.booking_id for b in ok}
    per_exam, per_contact = p.active("mock_exam_id"), p.active("contact_id")
    per_slot = Counter(
        (_prop(o, "contact_id"), _prop(o, "exam_date"))
        for o in p.bookings.values()
        if _prop(o, "is_active") == "Active"
    )
    counters = [
        {"exam": str(e["id"]), "total_bookings": _int(_prop(e, "total_bookings")),
         "active": per_exam[str(e["id"])]}
        for e in p.exams
    ]  # fmt: skip
    contact_links = [p.links[(CONTACTS, b.trainee.contact_id)] for b in ok]
    exam_links = [p.links[(MOCK_EXAMS, b.trainee.exam.id)] for b in ok]
    return {
        "bookings_in_hubspot": len(p.bookings),
        "missing_bookings": sum(1 for b in ok if b.booking_id not in p.bookings),
        "missing_contact_assoc": sum(
            1 for b, linked in zip(ok, contact_links, strict=True) if b.booking_id not in linked
        ),
        "missing_exam_assoc": sum(
            1 for b, linked in zip(ok, exam_links, strict=True) if b.booking_id not in linked
        ),
        "missing_notes": sum(1 for b in ok if b.booking_id not in p.noted),
        "orphan_bookings": sum(1 for bid in p.bookings if bid not in ok_ids),
        "duplicate_bookings": sum(n - 1 for n in per_slot.values() if n > 1),
        "wrong_counters": sum(1 for c in counters if c["total_bookings"] != c["active"]),
        "wrong_credits": sum(
            1
            for c in p.contacts
            if _int(_prop(c, "credits")) != credits - per_contact[str(c["id"])]
        ),
        "counters": counters,
    }


PROBLEM_KEYS = (
    "missing_bookings",
    "missing_contact_assoc",
    "missing_exam_assoc",
    "missing_notes",
    "orphan_bookings",
    "duplicate_bookings",
    "wrong_counters",
    "wrong_credits",
)


def problems(check: dict[str, Any]) -> dict[str, int]:
    """The non-zero problem counts of a `verify_portal` answer."""
    return {k: int(check[k]) for k in PROBLEM_KEYS if check.get(k)}
