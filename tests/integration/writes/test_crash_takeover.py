"""Crash takeover of write-behind: a gateway SIGKILLed mid-drain, a second one finishes the job.

1,000 writes (notes, contact->booking and booking->exam default associations) are accepted by
gateway A. A is SIGKILLed after at least one batch has landed and while a note batch is in flight
at the simulator (its notes are marked `sending`, so A's answer is never recorded). Gateway B, on
the same Valkey (one server, then a cluster), reads what A never read, claims A's abandoned entries
once they have been idle for `claim_idle_s` (30 s: the gateway process does not let it be shrunk),
looks up the notes that may have landed, and sends the rest. The simulator must end with every note
and association exactly once, every exam counter equal to its bookings, and nothing left in the
stream or the dead letters.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.kit.cluster import RedisTarget
from tests.kit.harness import AUTH, TOKEN
from tests.kit.processes import Process, start_gateway, start_sim
from tests.kit.rulefiles import notes_written_behind

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ADMIN_TOKEN = "crash-takeover-admin"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
STREAM = "hubspot:{writes}"
DEAD = "hubspot:{writes}:dead"
GROUP = "writers"
WRITE_ID = "X-HubSpot-Proxy-Write-Id"

# The portal's custom objects by type id (`bookings`, `mock_exams` in rules/default.yaml): the
# simulator keeps a custom object's name and id apart, and the counter job writes by id.
BOOKINGS, EXAM_TYPE = "2-50158943", "2-50158913"
NOTES = 400
CONTACT_BOOKINGS = 300
BOOKING_EXAMS = 300
EXAMS = 5
NOTE_TIMESTAMP = "1767261600000"
SLOW_MS = "1500,2500"  # while A drains: each batch call is in flight long enough to be caught
FAST_MS = [50, 150]  # once A is dead: B drains quickly
DRAIN_WITHIN_S = 90.0
COUNTED = "total_bookings,capacity"


async def sim_json(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    async with session.request(method, url, **kw) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def seed(
    session: aiohttp.ClientSession, sim: str, objects: list[dict[str, Any]]
) -> list[str]:
    body = await sim_json(session, "POST", f"{sim}/__sim/seed", json={"objects": objects})
    return [str(o["id"]) for o in body["objects"]]


def note_body(i: int) -> str:
    return f"crash takeover note {i:04d}"


def write_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker's batch sends (not its lookups, nor the exam reads)."""
    return [
        c
        for c in calls
        if c["method"] == "POST"
        and ("/batch/create" in c["path"] or "/batch/associate/" in c["path"])
    ]


async def backlog(redis: aioredis.Redis) -> tuple[int, int, int]:
    """(stream length, pending in the group, dead letters)."""
    summary = await redis.xpending(STREAM, GROUP)
    return await redis.xlen(STREAM), int(summary["pending"]), await redis.xlen(DEAD)


async def test_sigkill_mid_drain_second_gateway_finishes_every_write_exactly_once(
    redis_target: RedisTarget, target_client: aioredis.Redis, tmp_path: Path
) -> None:
    rules = notes_written_behind(tmp_path)  # notes are created synchronously unless opted in
    sim = start_sim("--latency-ms", SLOW_MS, "--seed", "7")
    # A shorter takeover than the 30 s default keeps the test quick; the mechanism is the same.
    env = {
        "HUBSPOT_PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
        "HUBSPOT_PROXY_WRITE_CLAIM_IDLE_S": "5",
        **redis_target.env,
    }
    redis_url = redis_target.url
    gateways: list[Process] = []
    timeout = aiohttp.ClientTimeout(total=120)
    try:
        async with aiohttp.ClientSession(
            timeout=timeout, connector=aiohttp.TCPConnector(limit=100)
        ) as session:
            contacts = await seed(
                session, sim.url, [{"type": "contacts", "properties": {}}] * CONTACT_BOOKINGS
            )
            bookings = await seed(
                session,
                sim.url,
                [{"type": BOOKINGS, "properties": {"is_active": "Active"}}] * BOOKING_EXAMS,
            )
            exams = await seed(
                session,
                sim.url,
                [{"type": EXAM_TYPE, "properties": {"total_bookings": "0", "capacity": "500"}}]
                * EXAMS,
            )
            exam_of = {b: exams[i % EXAMS] for i, b in enumerate(bookings)}

            gateway_a = start_gateway(sim.url, redis_url, rules, env=env)
            gateways.append(gateway_a)

            # The booking app reads an exam before booking it: that seeds its counter (at 0).
            for exam in exams:
                url = f"{gateway_a.url}/crm/v3/objects/{EXAM_TYPE}/{exam}?properties={COUNTED}"
                got = await sim_json(session, "GET", url, headers=AUTH)
                assert got["properties"]["total_bookings"] == "0"

            # -- 1,000 writes through A, all at once, kinds interleaved --------------------------
            jobs: list[tuple[str, int]] = (
                [("note", i) for i in range(NOTES)]
                + [("contact", i) for i in range(CONTACT_BOOKINGS)]
                + [("exam", i) for i in range(BOOKING_EXAMS)]
            )
            random.Random(11).shuffle(jobs)

            async def write(kind: str, i: int) -> tuple[int, str | None]:
                base = gateway_a.url
                if kind == "note":
                    props = {"hs_note_body": note_body(i), "hs_timestamp": NOTE_TIMESTAMP}
                    call = session.post(
                        f"{base}/crm/v3/objects/notes", json={"properties": props}, headers=AUTH
                    )
                elif kind == "contact":
                    path = (
                        f"/crm/v4/objects/contacts/{contacts[i]}/associations/default/"
                        f"{BOOKINGS}/{bookings[i]}"
                    )
                    call = session.put(base + path, headers=AUTH)
                else:
                    booking = bookings[i]
                    path = (
                        f"/crm/v4/objects/{BOOKINGS}/{booking}/associations/default/"
                        f"{EXAM_TYPE}/{exam_of[booking]}"
                    )
                    call = session.put(base + path, headers=AUTH)
                async with call as resp:
                    await resp.read()
                    return resp.status, resp.headers.get(WRITE_ID)

            started = time.monotonic()
            answers = await asyncio.gather(*(write(kind, i) for kind, i in jobs))
            accepted_s = time.monotonic() - started
            statuses = Counter(
                (kind, status) for (kind, _), (status, _) in zip(jobs, answers, strict=True)
            )
            assert statuses == {
                ("note", 202): NOTES,
                ("contact", 200): CONTACT_BOOKINGS,
                ("exam", 200): BOOKING_EXAMS,
            }, statuses
            write_ids = [wid for _, wid in answers]
            assert all(write_ids) and len(set(write_ids)) == len(jobs)

            # -- SIGKILL A once a batch has landed and a note batch is in flight --------------
            calls_url = f"{sim.url}/__sim/calls"
            deadline = time.monotonic() + 60
            while True:
                seen = write_calls(
                    (await sim_json(session, "GET", calls_url, params={"token": TOKEN}))["calls"]
                )
                landed = [c for c in seen if c["status"] is not None]
                in_flight = [c for c in seen if c["status"] is None]
                if landed and any("/notes/batch/create" in c["path"] for c in in_flight):
                    break
                assert time.monotonic() < deadline, f"no note batch in flight: {seen}"
                stream_len, _, _ = await backlog(target_client)
                assert stream_len > 0, f"A drained everything before it could be killed: {seen}"
                await asyncio.sleep(0.02)
            gateway_a.kill()
            killed_at = time.monotonic()
            before_kill, caught = len(seen), {c["t"] for c in in_flight}
            stream_len, pending, _ = await backlog(target_client)
            assert 0 < stream_len < len(jobs), "the kill was not mid-drain"
            assert pending > 0, "A held nothing when it died"

            # -- B takes over ------------------------------------------------------------------
            await sim_json(session, "POST", f"{sim.url}/__sim/config", json={"latency_ms": FAST_MS})
            gateway_b = await asyncio.to_thread(start_gateway, sim.url, redis_url, rules, env=env)
            gateways.append(gateway_b)
            deadline = time.monotonic() + DRAIN_WITHIN_S
            while (left := await backlog(target_client)) != (0, 0, 0):
                assert left[2] == 0, await dead_letters(session, gateway_b.url)
                assert time.monotonic() < deadline, f"not drained: (xlen, pending, dead) = {left}"
                await asyncio.sleep(0.2)
            drained_s = time.monotonic() - killed_at

            # -- the simulator holds every write exactly once ------------------------------------
            notes = await sim_json(session, "GET", f"{sim.url}/__sim/objects/notes")
            bodies = Counter(n["properties"]["hs_note_body"] for n in notes["results"])
            duplicates = {b: n for b, n in bodies.items() if n != 1}
            assert duplicates == {}, f"notes made more than once: {duplicates}"
            assert set(bodies) == {note_body(i) for i in range(NOTES)}

            async def linked(from_type: str, from_id: str, to_type: str) -> list[str]:
                url = f"{sim.url}/__sim/associations/{from_type}/{from_id}/{to_type}"
                results = (await sim_json(session, "GET", url))["results"]
                for r in results:  # one default type per pair, not one per replay
                    assert len(r["associationTypes"]) == 1, r
                return [str(r["toObjectId"]) for r in results]

            for contact, booking in zip(contacts, bookings, strict=True):
                assert await linked("contacts", contact, BOOKINGS) == [booking]
                assert await linked(BOOKINGS, booking, "contacts") == [contact]
            for booking in bookings:
                assert await linked(BOOKINGS, booking, EXAM_TYPE) == [exam_of[booking]]
            booked = {e: sorted(b for b in bookings if exam_of[b] == e) for e in exams}
            for exam in exams:
                got = await linked(EXAM_TYPE, exam, BOOKINGS)
                assert sorted(got) == booked[exam] and len(got) == len(set(got))

            # -- every write recorded sent, nothing dead ---------------------------------------
            async with target_client.pipeline(transaction=False) as pipe:
                for wid in write_ids:
                    pipe.hget(f"{STREAM}:status:{wid}", "state")
                states = Counter(s.decode() if s else None for s in await pipe.execute())
            assert states == {"sent": len(jobs)}, states
            assert await dead_letters(session, gateway_b.url) == []

            # -- counters: B's jobs, as they run every few minutes, bring HubSpot to the count of
            # linked bookings. Reconcile first: a counter op that could not reach Redis in time
            # while A took the 1,000-write burst leaves a count to repair (it says how many).
            drift = (await run_job(session, gateway_b.url, "reconcile"))["drift"]
            synced = await run_job(session, gateway_b.url, "sync_counters")
            expected = {e: str(len(booked[e])) for e in exams}
            totals = await exam_totals(session, sim.url)
            assert totals == expected, (totals, synced, drift)

            # The notes of the batch caught in flight were marked `sending`: B looked them up
            # before sending them again.
            calls = (await sim_json(session, "GET", calls_url, params={"token": TOKEN}))["calls"]
            caught_status = [c["status"] for c in calls if c["t"] in caught]
            searches = [c for c in calls if c["path"].endswith("/search")]
            assert any("/notes/search" in c["path"] for c in searches), searches
            batches = write_calls(calls)
            print(
                f"\naccepted 1000 writes in {accepted_s:.1f} s; batch calls: {before_kill} "
                f"before the kill ({len(caught)} in flight, then {caught_status}), "
                f"{len(batches) - before_kill} after; "
                f"lookups: {len(searches)}; "
                f"drained {drained_s:.1f} s after the kill; total HubSpot calls: {len(calls)}; "
                f"counter drift repaired by reconcile: {drift}"
            )
    finally:
        for gateway in reversed(gateways):
            gateway.stop()  # A is dead already: this only releases its pipe
        sim.stop()


async def dead_letters(session: aiohttp.ClientSession, gateway: str) -> list[Any]:
    url = f"{gateway}/proxy/v1/dead-letters"
    async with session.get(url, headers=ADMIN) as resp:
        assert resp.status == 200, await resp.text()
        results: list[Any] = (await resp.json())["results"]
        return results


async def run_job(session: aiohttp.ClientSession, gateway: str, name: str) -> dict[str, Any]:
    url = f"{gateway}/proxy/v1/jobs/{name}/run"
    for _ in range(40):  # 409 only while the gateway's own periodic run holds the lease
        async with session.post(url, headers=ADMIN) as resp:
            if resp.status != 409:
                assert resp.status == 200, await resp.text()
                result: dict[str, Any] = await resp.json()
                return result
        await asyncio.sleep(0.5)
    pytest.fail(f"{name} stayed busy on another replica")


async def exam_totals(session: aiohttp.ClientSession, sim: str) -> dict[str, str]:
    exams = await sim_json(session, "GET", f"{sim}/__sim/objects/{EXAM_TYPE}")
    return {e["id"]: e["properties"]["total_bookings"] for e in exams["results"]}
