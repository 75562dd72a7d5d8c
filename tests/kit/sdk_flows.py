"""The booking flow made with the official SDKs, as the backend makes it (HUBSPOT.md's 11 calls).

`python_sdk_booking` runs one booking with `hubspot-api-client` (blocking: run it in a thread);
`node_sdk_bookings` runs many at once with `@hubspot/api-client` through
`tests/node/booking_flow.js` (installed by `make test` with `npm ci`). Both give `Booking`
records that `booking_flow.verify_portal` checks against what landed in the simulator. No SDK
retries: a booking succeeds only when each of its calls is answered as HubSpot would answer it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from hubspot import HubSpot
from hubspot.crm.contacts import SimplePublicObjectInput as ContactInput
from hubspot.crm.objects import (
    PublicObjectSearchRequest,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects.notes import SimplePublicObjectInputForCreate as NoteInput

from tests.kit.booking_flow import (
    BOOKINGS,
    CONTACTS,
    ENROLLMENTS,
    MOCK_EXAMS,
    NOTE_TO_CONTACT,
    Booking,
    Trainee,
)

NODE_DIR = Path(__file__).resolve().parent.parent / "node"
NODE_SCRIPT = NODE_DIR / "booking_flow.js"


class StepFailed(Exception):
    pass


def _eq(**values: str) -> PublicObjectSearchRequest:
    filters = [{"propertyName": k, "operator": "EQ", "value": v} for k, v in values.items()]
    return PublicObjectSearchRequest(filter_groups=[{"filters": filters}], limit=1)


def _step(name: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except Exception as exc:  # ApiException, or a model the SDK could not build
        raise StepFailed(f"{name}: {getattr(exc, 'status', None) or type(exc).__name__}") from exc


def _validate(client: HubSpot, t: Trainee, key: str) -> tuple[int, int]:
    """Steps 1-5: (seats taken, credits)."""
    search = client.crm.objects.search_api.do_search
    if _step("idempotency_search", search, BOOKINGS, _eq(idempotency_key=key)).total:
        raise StepFailed("idempotency_search: already booked")
    dup = _eq(contact_id=t.contact_id, exam_date=t.exam.date, is_active="Active")
    if _step("duplicate_search", search, BOOKINGS, dup).total:
        raise StepFailed("duplicate_search: duplicate")
    get = client.crm.objects.basic_api.get_by_id
    exam = _step("get_exam", get, MOCK_EXAMS, t.exam.id, properties=["capacity", "total_bookings"])
    taken = int(exam.properties.get("total_bookings") or 0)
    if taken >= int(exam.properties.get("capacity") or 0):
        raise StepFailed("get_exam: full")
    enrollment = _eq(contact_id=t.contact_id, status="Registered")  # the answer is unused
    _step("enrollment_search", search, ENROLLMENTS, enrollment)
    read_contact = client.crm.contacts.basic_api.get_by_id
    contact = _step("get_contact", read_contact, t.contact_id, properties=["credits", "email"])
    return taken, int(contact.properties.get("credits") or 0)


def _write(client: HubSpot, t: Trainee, key: str, checked: tuple[int, int], b: Booking) -> None:
    """Steps 6-11."""
    props = {"contact_id": t.contact_id, "exam_date": t.exam.date, "is_active": "Active",
             "idempotency_key": key, "mock_exam_id": t.exam.id}  # fmt: skip
    made = SimplePublicObjectInputForCreate(properties=props, associations=[])
    bid = _step("create_booking", client.crm.objects.basic_api.create, BOOKINGS, made).id
    b.booking_id = bid
    v4 = client.crm.associations.v4.basic_api.create_default
    _step("assoc_contact_booking", v4, CONTACTS, t.contact_id, BOOKINGS, bid)
    _step("assoc_booking_exam", v4, BOOKINGS, bid, MOCK_EXAMS, t.exam.id)
    seats = SimplePublicObjectInput(properties={"total_bookings": str(checked[0] + 1)})
    _step("patch_exam_total", client.crm.objects.basic_api.update, MOCK_EXAMS, t.exam.id, seats)
    left = ContactInput(properties={"credits": str(checked[1] - 1)})
    _step("patch_contact_credits", client.crm.contacts.basic_api.update, t.contact_id, left)
    to_contact = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": NOTE_TO_CONTACT}
    note = NoteInput(
        properties={"hs_note_body": f"Mock exam {t.exam.id} on {t.exam.date} booked: booking {bid}",
                    "hs_timestamp": str(int(time.time() * 1000))},
        associations=[{"to": {"id": t.contact_id}, "types": [to_contact]}],
    )  # fmt: skip
    made_note = _step("create_note", client.crm.objects.notes.basic_api.create, note)
    if made_note is None or not made_note.id:
        raise StepFailed("create_note: no note")


def python_sdk_booking(base: str, token: str, trainee: Trainee) -> Booking:
    """One booking with the Python SDK (blocking); never raises for HubSpot's answers."""
    booking = Booking(trainee, started=time.monotonic())
    client = HubSpot(access_token=token, host=base.rstrip("/"))
    key = f"py-{uuid.uuid4().hex}"
    try:
        checked = _validate(client, trainee, key)
        _write(client, trainee, key, checked, booking)
        booking.outcome = "ok"
    except StepFailed as exc:
        booking.outcome = str(exc)
    booking.finished = time.monotonic()
    return booking


def node_available() -> str | None:
    """Why the Node SDK cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed"
    if not (NODE_DIR / "node_modules" / "@hubspot" / "api-client").is_dir():
        return f"@hubspot/api-client is not installed: run `npm ci` in {NODE_DIR.name}/ (make test)"
    return None


async def node_sdk_bookings(
    base: str, token: str, trainees: list[Trainee]
) -> tuple[str, list[Booking]]:
    """(SDK version, bookings): every trainee books at once with the Node SDK."""
    job = {
        "basePath": base.rstrip("/"),
        "accessToken": token,
        "trainees": [
            {"contactId": t.contact_id, "examId": t.exam.id, "examDate": t.exam.date}
            for t in trainees
        ],
    }
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "node", str(NODE_SCRIPT), cwd=NODE_DIR, env={"PATH": os.environ.get("PATH", "")},
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate(orjson.dumps(job))
    if proc.returncode != 0:
        raise RuntimeError(f"node exited {proc.returncode}: {err.decode(errors='replace')}")
    answer = orjson.loads(out)
    bookings = []
    for t, rec in zip(trainees, answer["bookings"], strict=True):
        b = Booking(t, started, time.monotonic(), rec["outcome"], rec["bookingId"])
        bookings.append(b)
    return str(answer["sdkVersion"]), bookings
