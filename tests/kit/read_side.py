"""Helpers for the read side through a gateway: the read-side rules, bookings, searches, exams.

The read side is default.yaml with write-behind off; the `read_side_gateway` fixture runs it.
"""

from __future__ import annotations

import pathlib
from typing import Any

from proxy.app import SERVICES
from proxy.runtime.actions import Actions
from tests.kit.harness import AUTH, Client

EXAMS, BOOKINGS = "2-50158913", "2-50158943"
DATE = "2030-03-15"
DEFAULT_RULES = pathlib.Path(__file__).parents[2] / "rules" / "default.yaml"


def rules_file(tmp_path: pathlib.Path, *, complete: bool = False) -> str:
    """default.yaml as the read side alone: writes forwarded synchronously, indexes partial
    (or, with `complete`, the duplicate check complete per exam date)."""
    text = DEFAULT_RULES.read_text().replace("    enabled: true\n", "    enabled: false\n")
    duplicate, idempotency = text.split("  - name: booking-idempotency\n", 1)
    if not complete:
        duplicate = duplicate.replace("    complete: true\n", "    complete: false\n")
    idempotency = idempotency.replace("    complete: true\n", "    complete: false\n", 1)
    path = tmp_path / "rules.yaml"
    path.write_text(duplicate + "  - name: booking-idempotency\n" + idempotency)
    return str(path)


def actions_of(gw: Client) -> Actions:
    assert gw.app is not None
    actions: Actions = gw.app[SERVICES].actions
    return actions


def eq(name: str, value: str) -> dict[str, str]:
    return {"propertyName": name, "operator": "EQ", "value": value}


def dup_search(contact: str, date: str = DATE, **extra: Any) -> dict[str, Any]:
    filters = [eq("contact_id", contact), eq("exam_date", date), eq("is_active", "Active")]
    return {"filterGroups": [{"filters": filters}], **extra}


async def post(gw: Client, path: str, body: Any, headers: dict[str, str] = AUTH) -> Any:
    resp = await gw.post(path, json=body, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    assert resp.headers["Content-Type"].startswith("application/json")
    return await resp.json()


async def search(gw: Client, body: Any, headers: dict[str, str] = AUTH) -> Any:
    return await post(gw, f"/crm/v3/objects/{BOOKINGS}/search", body, headers)


async def book(gw: Client, contact: str, date: str = DATE, **props: str) -> dict[str, Any]:
    properties = {"contact_id": contact, "exam_date": date, "is_active": "Active", **props}
    return dict(await post(gw, f"/crm/v3/objects/{BOOKINGS}", {"properties": properties}))


def searches(calls: list[tuple[str, str]]) -> int:
    return sum(1 for method, path in calls if path.endswith("/search"))


RESERVE = "/proxy/v1/counters/mock_exams/{}/reserve"
RELEASE = "/proxy/v1/counters/mock_exams/{}/release"


async def exam(gw: Client, exam_id: str, query: str = "?properties=capacity,total_bookings") -> Any:
    resp = await gw.get(f"/crm/v3/objects/{EXAMS}/{exam_id}{query}", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def link(gw: Client, booking_id: str, exam_id: str) -> None:
    path = f"/crm/v4/objects/{BOOKINGS}/{booking_id}/associations/default/{EXAMS}/{exam_id}"
    resp = await gw.put(path, headers=AUTH)
    assert resp.status == 200, await resp.text()


def exam_reads(calls: list[tuple[str, str]]) -> int:
    return sum(1 for method, path in calls if method == "GET" and f"/{EXAMS}/" in path)
