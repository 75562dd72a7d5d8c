"""The write-behind flush cadence: a kind of write leaves at most once per interval unless its
batch is full (pure, on an injected clock)."""

from __future__ import annotations

from proxy.writes.batching import Batch, plan
from proxy.writes.cadence import FlushCadence
from proxy.writes.model import ASSOCIATE_DEFAULT, NOTE_CREATE, WriteItem, WriteRequest

CRED = "c0ffee"
_seq = iter(range(1, 1_000_000))


def _item(kind: str, req: WriteRequest, cred: str = CRED) -> WriteItem:
    n = next(_seq)
    return WriteItem(f"w{n}", f"{1000 + n}-0", cred, kind, req)


def notes(count: int, cred: str = CRED) -> Batch:
    items = [
        _item(NOTE_CREATE, WriteRequest("notes", properties={"hs_note_body": str(i)}), cred)
        for i in range(count)
    ]
    [batch] = plan(items)
    return batch


def links(count: int, to_type: str = "deals") -> Batch:
    items = [
        _item(ASSOCIATE_DEFAULT, WriteRequest("contacts", str(i), to_type=to_type, to_id="9"))
        for i in range(count)
    ]
    [batch] = plan(items)
    return batch


def test_a_kind_quiet_for_an_interval_leaves_at_once() -> None:
    cadence = FlushCadence(interval_s=3.0, max_inputs=100)
    batch = notes(1)
    assert cadence.due([batch], now=100.0) == ([batch], [], 100.0)


def test_a_burst_of_one_kind_sends_one_batch_per_interval() -> None:
    cadence = FlushCadence(interval_s=3.0, max_inputs=100)
    sent = 0
    for tick in range(100):  # a worker cycle every 100 ms for 10 s, a few writes each
        send, _later, _due = cadence.due([notes(3)], now=tick / 10)
        sent += len(send)
    assert sent == 4  # at 0, 3, 6 and 9 s


def test_a_held_batch_says_when_its_kind_is_due() -> None:
    cadence = FlushCadence(interval_s=3.0, max_inputs=100)
    cadence.due([notes(2)], now=10.0)
    held = notes(2)
    assert cadence.due([held], now=11.0) == ([], [held], 13.0)


def test_a_full_batch_never_waits() -> None:
    cadence = FlushCadence(interval_s=3.0, max_inputs=100)
    cadence.due([notes(1)], now=10.0)
    full = notes(100)
    assert cadence.due([full], now=10.5) == ([full], [], 10.5)


def test_kinds_keep_their_own_cadence() -> None:
    cadence = FlushCadence(interval_s=3.0, max_inputs=100)
    cadence.due([notes(1), links(1)], now=10.0)
    other_pair, other_token = links(1, to_type="companies"), notes(1, cred="beef")
    note, link = notes(1), links(1)
    send, later, due = cadence.due([note, link, other_pair, other_token], now=11.0)
    assert send == [other_pair, other_token]
    assert later == [note, link]
    assert due == 13.0


def test_no_interval_sends_every_cycle() -> None:
    cadence = FlushCadence(interval_s=0.0, max_inputs=100)
    assert all(cadence.due([notes(1)], now=t / 10)[0] for t in range(20))
