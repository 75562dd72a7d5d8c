"""The fault matrix (issue 11): nothing duplicated, nothing lost, counts exact, whatever HubSpot
answers and whatever fails, with three gateway replicas as OS processes.

Each variant accepts notes (write-behind creates), contacts (write-behind creates looked up by
their email) and booking->exam associations (write-behind, counted) through the three replicas in
rounds, reads every exam through a replica after each round, then waits for the writes to drain
and counts what HubSpot holds:

- notes and contacts in HubSpot = those accepted (each exactly once), associations = accepted;
- dead letters: none, except the inputs HubSpot itself refuses (the whole-batch-400 variant);
- every exam read shows count = seats taken (associations accepted so far, then linked).

The main variants run 1,000 accepted writes; the slower fault variants 300 (see `VARIANTS`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from tests.kit.fleet import GATEWAY_ENV, Fleet

pytestmark = pytest.mark.timeout(240)

EXAMS, BOOKINGS, NOTES = "2-50158913", "2-50158943", "0-46"
TOKEN = "fault-matrix-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = {"Authorization": f"Bearer {GATEWAY_ENV['HUBSPOT_PROXY_ADMIN_TOKEN']}"}
QUIET = {
    "echo_trace_ids": False,
    "shuffle_batch_results": False,
    "reject_whole_batch": False,
    "fault_5xx_after_rate": 0.0,
    "fault_timeout_after_rate": 0.0,
    "fault_423_rate": 0.0,
    "timeout_s": 3.0,
    "latency_ms": [0, 0],
}
SLOW = {"latency_ms": [150, 300]}  # batches still in flight when the fault strikes
EXAM_COUNT, ROUNDS, CONCURRENCY = 10, 4, 48


@dataclass(frozen=True)
class Variant:
    sim: dict[str, Any]
    writes: int
    invalid_every: int = 0  # every n-th note names a contact that does not exist
    fault: str = ""  # "kill-gateway" | "restart-redis", mid-drain
    struck: tuple[str, ...] = ()  # statuses HubSpot must have answered, so the fault was felt
    retried: bool = False  # some call must have been retried (the fault was felt)


VARIANTS = {
    "trace-ids-echoed": Variant({"echo_trace_ids": True}, 300),
    "trace-ids-omitted": Variant({}, 1000),
    "shuffled": Variant({"shuffle_batch_results": True}, 1000),
    "whole-batch-400": Variant(
        {"reject_whole_batch": True}, 300, invalid_every=25, struck=("400",)
    ),
    # Rates high enough to be felt in the ~10-20 batch calls one reader makes of 1,000 writes
    # (P(no fault) 0.7^15 and 0.5^15), which every replica sending its share used to multiply.
    "5xx-after-applying": Variant(
        {"fault_5xx_after_rate": 0.3}, 1000, struck=("502", "503", "504"), retried=True
    ),
    "timeout-after-applying": Variant({"fault_timeout_after_rate": 0.4}, 300, retried=True),
    "423-locked": Variant({"fault_423_rate": 0.5}, 1000, struck=("423",), retried=True),
    "gateway-sigkill-mid-drain": Variant(SLOW, 1000, fault="kill-gateway"),
    "redis-restart-mid-drain": Variant(SLOW, 1000, fault="restart-redis"),
}


@dataclass
class Run:
    """What the clients were told, and what they saw."""

    name: str
    exams: list[str]
    contact: str
    notes: dict[str, str] = field(default_factory=dict)  # body -> write id
    contacts: set[str] = field(default_factory=set)  # emails accepted
    invalid: set[str] = field(default_factory=set)  # note bodies HubSpot must refuse
    links: dict[str, set[str]] = field(default_factory=dict)  # exam -> bookings accepted
    write_ids: set[str] = field(default_factory=set)
    refused: Counter[int] = field(default_factory=Counter)
    retried: int = 0  # 503s answered, then retried by the client
    reads: int = 0
    unfinished_at_fault: int = 0


async def sim_json(
    s: aiohttp.ClientSession, fleet: Fleet, method: str, path: str, body: Any = None
) -> Any:
    async with s.request(method, fleet.sim.url + path, json=body) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def seed(
    s: aiohttp.ClientSession, fleet: Fleet, type_id: str, props: list[dict[str, Any]]
) -> list[str]:
    found = await sim_json(
        s,
        fleet,
        "POST",
        "/__sim/seed",
        {"objects": [{"type": type_id, "properties": p} for p in props]},
    )
    return [str(o["id"]) for o in found["objects"]]


async def read_count(s: aiohttp.ClientSession, gateway: str, exam: str) -> int:
    """The exam's count as a client reads it; HubSpot faults on the read itself are retried."""
    path = f"{gateway}/crm/v3/objects/{EXAMS}/{exam}?properties=total_bookings,capacity"
    for _ in range(20):
        async with s.get(path, headers=AUTH) as resp:
            if resp.status == 200:
                return int((await resp.json())["properties"]["total_bookings"])
        await asyncio.sleep(0.2)
    raise AssertionError(f"exam {exam} unreadable through {gateway}")


async def check_counts(s: aiohttp.ClientSession, fleet: Fleet, run: Run) -> None:
    """Every exam, read through a replica, shows the seats taken so far."""
    urls = itertools.cycle([g.url for g in fleet.gateways])
    for exam in run.exams:
        assert await read_count(s, next(urls), exam) == len(run.links.get(exam, ())), exam
        run.reads += 1


async def accept(s: aiohttp.ClientSession, gateway: str, run: Run, job: tuple[str, ...]) -> None:
    """One write, retried after a 503 as the official SDKs retry 5xx (a few times, briefly)."""
    for attempt in range(1, 6):
        status = await accept_once(s, gateway, run, job)
        if status != 503:
            return
        run.retried += 1
        await asyncio.sleep(0.2 * attempt)
    run.refused[503] += 1


async def accept_once(
    s: aiohttp.ClientSession, gateway: str, run: Run, job: tuple[str, ...]
) -> int:
    if job[0] == "contact":
        person = {"properties": {"email": job[1], "firstname": "Trainee"}}
        async with s.post(f"{gateway}/crm/v3/objects/contacts", json=person, headers=AUTH) as resp:
            if resp.status in (201, 202):
                run.contacts.add(job[1])
                run.write_ids.add(resp.headers["X-HubSpot-Proxy-Write-Id"])
            elif resp.status != 503:
                run.refused[resp.status] += 1
            return resp.status
    if job[0] == "note":
        body, contact = job[1], job[2]
        # Each note its own millisecond, as the PRD's backend stamps them.
        stamp = str(1_900_000_000_000 + int(job[3]))
        note = {
            "properties": {"hs_note_body": body, "hs_timestamp": stamp},
            "associations": [
                {
                    "to": {"id": contact},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 202}],
                }
            ],
        }
        async with s.post(f"{gateway}/crm/v3/objects/notes", json=note, headers=AUTH) as resp:
            if resp.status in (201, 202):
                run.notes[body] = resp.headers["X-HubSpot-Proxy-Write-Id"]
                run.write_ids.add(run.notes[body])
            elif resp.status != 503:
                run.refused[resp.status] += 1
            return resp.status
    booking, exam = job[1], job[2]
    path = f"{gateway}/crm/v4/objects/{BOOKINGS}/{booking}/associations/default/{EXAMS}/{exam}"
    async with s.put(path, headers=AUTH) as resp:
        if resp.status == 200:
            run.write_ids.add(resp.headers["X-HubSpot-Proxy-Write-Id"])
            run.links.setdefault(exam, set()).add(booking)
        elif resp.status != 503:
            run.refused[resp.status] += 1
        return resp.status


async def prepare(
    s: aiohttp.ClientSession, fleet: Fleet, name: str, variant: Variant
) -> tuple[Run, list[tuple[str, ...]]]:
    exams = await seed(
        s, fleet, EXAMS, [{"capacity": "100000", "total_bookings": "0"}] * EXAM_COUNT
    )
    (contact,) = await seed(s, fleet, "0-1", [{"email": f"{name}@example.com"}])
    links = variant.writes // 2
    bookings = await seed(s, fleet, BOOKINGS, [{"is_active": "Active"}] * links)
    run = Run(name, exams, contact)
    for exam in exams:  # first sight seeds each counter from HubSpot, before any fault is on
        assert await read_count(s, fleet.gateways[0].url, exam) == 0
    jobs: list[tuple[str, ...]] = [
        ("link", b, exams[i % EXAM_COUNT]) for i, b in enumerate(bookings)
    ]
    contacts = variant.writes // 10
    jobs += [("contact", f"trainee{i}@{name}.example") for i in range(contacts)]
    for i in range(variant.writes - links - contacts):
        bad = variant.invalid_every and i % variant.invalid_every == 0
        body = f"{name} note {i}"
        if bad:
            run.invalid.add(body)
        stamp = list(VARIANTS).index(name) * 10_000 + i
        jobs.append(("note", body, "999999999" if bad else contact, str(stamp)))
    jobs.sort(key=lambda job: hash(job) % 997)  # notes and links interleaved
    return run, jobs


async def send_round(
    s: aiohttp.ClientSession, fleet: Fleet, run: Run, jobs: list[tuple[str, ...]]
) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    urls = [g.url for g in fleet.gateways]

    async def one(i: int, job: tuple[str, ...]) -> None:
        async with gate:
            await accept(s, urls[i % len(urls)], run, job)

    await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))


async def drained(fleet: Fleet, timeout_s: float = 120.0) -> None:
    client = aioredis.from_url(fleet.redis_url)
    try:
        for _ in range(int(timeout_s / 0.25)):
            try:
                if await client.xlen("hubspot:{writes}") == 0:
                    return
            except (RedisError, OSError):
                pass  # Valkey restarting: refused, timing out or loading its AOF
            await asyncio.sleep(0.25)
    finally:
        await client.aclose()
    raise AssertionError("the write stream did not drain")


async def dead_letters(s: aiohttp.ClientSession, fleet: Fleet, run: Run) -> list[dict[str, Any]]:
    async with s.get(
        f"{fleet.gateways[0].url}/proxy/v1/dead-letters?limit=1000", headers=ADMIN
    ) as resp:
        assert resp.status == 200, await resp.text()
        found = (await resp.json())["results"]
    return [d for d in found if d["writeId"] in run.write_ids]


async def outcome(s: aiohttp.ClientSession, fleet: Fleet, run: Run) -> dict[str, int]:
    notes = (await sim_json(s, fleet, "GET", f"/__sim/objects/{NOTES}"))["results"]
    mine = Counter(
        n["properties"]["hs_note_body"]
        for n in notes
        if n["properties"]["hs_note_body"].startswith(f"{run.name} note ")
    )
    linked = 0
    for exam in run.exams:
        found = await sim_json(s, fleet, "GET", f"/__sim/associations/{EXAMS}/{exam}/{BOOKINGS}")
        targets = {str(r["toObjectId"]) for r in found["results"]}
        assert run.links.get(exam, set()) == targets, exam  # nothing lost, nothing extra
        linked += len(targets)
    people = (await sim_json(s, fleet, "GET", "/__sim/objects/0-1"))["results"]
    emails = Counter(
        str(p["properties"].get("email"))
        for p in people
        if str(p["properties"].get("email", "")).endswith(f"@{run.name}.example")
    )
    assert set(emails) == run.contacts and max(emails.values(), default=1) == 1
    valid = {b for b in run.notes if b not in run.invalid}
    assert set(mine) - valid == set(), run.refused  # only accepted notes
    assert valid - set(mine) == set()  # every accepted note
    assert max(mine.values(), default=1) == 1  # none twice
    return {"notes": sum(mine.values()), "links": linked, "contacts": sum(emails.values())}


async def answered(s: aiohttp.ClientSession, fleet: Fleet) -> Counter[str]:
    """HubSpot's answers to the gateways so far, by status."""
    token = TOKEN
    stats = await sim_json(s, fleet, "GET", f"/__sim/stats?token={token}")
    return Counter(stats["by_status"])


def _retry_line(line: str) -> bool:
    if line.startswith("hubspot_proxy_upstream_retries_total{"):
        return True  # a call retried below the worker (idempotent ones, 423s)
    return line.startswith("hubspot_proxy_writes_total{") and 'state="failed"' in line


async def retried_attempts(s: aiohttp.ClientSession, fleet: Fleet) -> float:
    """Calls the replicas retried, by the worker or below it, from their /metrics."""
    total = 0.0
    for gateway in fleet.gateways:
        async with s.get(f"{gateway.url}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if _retry_line(line):
                    total += float(line.rsplit(" ", 1)[1])
    return total


async def unfinished(fleet: Fleet) -> int:
    client = aioredis.from_url(fleet.redis_url)
    try:
        return int(await client.xlen("hubspot:{writes}"))
    finally:
        await client.aclose()


async def apply_fault(fleet: Fleet, run: Run, fault: str) -> None:
    if not fault:
        return
    run.unfinished_at_fault = await unfinished(fleet)
    if fault == "kill-gateway":
        fleet.kill_gateway(fleet.gateways[0])
    elif fault == "restart-redis":
        await asyncio.to_thread(fleet.restart_valkey)


@pytest.mark.parametrize("name", list(VARIANTS))
async def test_fault_matrix(fleet: Fleet, name: str) -> None:
    variant = VARIANTS[name]
    while len(fleet.gateways) < 3:  # a replica killed by an earlier variant is replaced
        await asyncio.to_thread(fleet.start_gateway)
    async with aiohttp.ClientSession() as s:
        run, jobs = await prepare(s, fleet, name, variant)
        before = await answered(s, fleet)
        failed_before = await retried_attempts(s, fleet)
        await sim_json(s, fleet, "POST", "/__sim/config", {**QUIET, **variant.sim})
        try:
            per_round = -(-len(jobs) // ROUNDS)
            for start in range(0, len(jobs), per_round):
                await send_round(s, fleet, run, jobs[start : start + per_round])
                await check_counts(s, fleet, run)
            await apply_fault(fleet, run, variant.fault)
            await drained(fleet)
        finally:
            await sim_json(s, fleet, "POST", "/__sim/config", QUIET)
        await check_counts(s, fleet, run)
        held = await outcome(s, fleet, run)
        dead = await dead_letters(s, fleet, run)
        statuses = await answered(s, fleet) - before
        retried = await retried_attempts(s, fleet) - failed_before
    accepted_notes = len(run.notes) - len(run.invalid & set(run.notes))
    accepted_links = sum(len(v) for v in run.links.values())
    print(
        f"\nFAULT-MATRIX {name}: writes={len(run.write_ids)} refused={dict(run.refused)} "
        f"503s retried={run.retried} "
        f"notes accepted={accepted_notes} in HubSpot={held['notes']} | links accepted="
        f"{accepted_links} in HubSpot={held['links']} | contacts accepted={len(run.contacts)} "
        f"in HubSpot={held['contacts']} | dead letters={len(dead)} "
        f"(refused by HubSpot: {len(run.invalid)}) | exam reads={run.reads}, all exact"
        f" | unfinished writes at the fault={run.unfinished_at_fault}"
        f" | HubSpot answered {dict(sorted(statuses.items()))} | attempts retried={retried:.0f}"
    )
    assert not variant.retried or retried > 0
    assert not variant.struck or sum(statuses[code] for code in variant.struck) > 0
    assert run.unfinished_at_fault > 0 or not variant.fault  # the fault struck mid-drain
    assert not run.refused  # nothing here may cost the client a 503
    assert len(run.write_ids) == variant.writes
    assert held == {
        "notes": accepted_notes,
        "links": accepted_links,
        "contacts": len(run.contacts),
    }
    assert sorted(d["error"] != "" for d in dead) == [True] * len(run.invalid)
    assert len(dead) == len(run.invalid)
