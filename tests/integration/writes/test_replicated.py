"""`WAIT` for accepted writes: on a cluster a replica holds each one; alone, they are refused."""

from __future__ import annotations

import pytest

from proxy.store.replicated import NotReplicated
from proxy.writes.model import WriteItem, WriteRequest
from proxy.writes.store import WriteStore, now_ms
from tests.kit.cluster import RedisTarget


def note(i: int) -> WriteItem:
    request = WriteRequest("notes", properties={"hs_note_body": f"n{i}", "hs_timestamp": "1"})
    return WriteItem(f"w{i}", "", "cred0000cred0000", "notes.create", request, now_ms())


async def test_an_accepted_write_is_held_by_a_replica_or_refused_and_withdrawn(
    redis_target: RedisTarget,
) -> None:
    client = redis_target.client()
    store = WriteStore(client, wait_replicas=1, wait_timeout_ms=200)
    try:
        if redis_target.cluster:  # every primary has one replica
            entries = [await store.enqueue(note(i)) for i in range(3)]
            assert len(set(entries)) == 3 and await client.xlen(store.keys.stream) == 3
            await store.mark_sending([note(0)], now_ms())
            assert await client.hget(store.keys.status("w0"), "sending") is not None
        else:  # one server, no replica: nothing may be accepted on this copy alone
            with pytest.raises(NotReplicated):
                await store.enqueue(note(0))
            assert await client.xlen(store.keys.stream) == 0
            assert await client.exists(store.keys.status("w0")) == 0
    finally:
        await client.aclose()
