"""Per-object order: an update never overtakes an earlier update of the same record.

Consumer groups hand entries to whichever replica asks, so two updates of one record may sit
with two replicas. An update may go only when no earlier entry of its record is unfinished:
XPENDING lists every delivered, unacked entry of the group, and delivery follows stream order,
so "no earlier pending entry of this record outside my hands" means every earlier update of it
has been recorded (sent or dead-lettered). Within one worker, a record's writes wait for its
earliest one (which may be backing off), and are then merged into one input.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from proxy.writes.model import WriteItem, entry_sort_key
from proxy.writes.store import WriteStore

RECHECK_S: Final = 0.2  # how soon to look again at an update waiting for another replica


@dataclass
class Held:
    """A write this worker holds (pending under its name), and when it may be sent."""

    item: WriteItem
    due: float  # time.monotonic()


class OrderGate:
    def __init__(self, store: WriteStore) -> None:
        self._store = store
        self._keys: dict[str, str | None] = {}  # other consumers' entries -> their record

    async def eligible(self, held: Sequence[Held], mine: Collection[str]) -> list[WriteItem]:
        """Held writes that are due and may go now; pushes back the due time of the others."""
        now = time.monotonic()
        ordered = sorted(held, key=lambda h: entry_sort_key(h.item.entry_id))
        blockers = await self._blockers(ordered, mine)
        waiting: dict[str, float] = {}  # record -> when its earliest held write is due
        eligible: list[WriteItem] = []
        for h in ordered:
            key = h.item.order_key
            blocker = blockers.get(key) if key is not None else None
            if blocker is not None and entry_sort_key(blocker) < entry_sort_key(h.item.entry_id):
                h.due = max(h.due, now + RECHECK_S)
            elif key is not None and key in waiting:
                h.due = max(h.due, waiting[key])  # never before the write ahead of it
            elif h.due <= now:
                eligible.append(h.item)
                continue
            if key is not None:
                waiting.setdefault(key, h.due)
        return eligible

    async def _blockers(self, ordered: Sequence[Held], mine: Collection[str]) -> dict[str, str]:
        """record -> earliest pending entry of that record this worker does not hold."""
        keyed = [h.item for h in ordered if h.item.order_key is not None]
        if not keyed:
            return {}
        pending = await self._store.pending_owners(keyed[-1].entry_id)
        others = [eid for eid, _consumer in pending if eid not in mine]
        missing = [eid for eid in others if eid not in self._keys]
        for eid, fields in (await self._store.fetch(missing)).items():
            self._keys[eid] = _order_key_of(eid, fields)
        self._keys = {eid: self._keys.get(eid) for eid in others}  # forget finished ones
        wanted = {item.order_key for item in keyed}
        blockers: dict[str, str] = {}
        for eid in others:
            key = self._keys.get(eid)
            if key is not None and key in wanted:
                blockers.setdefault(key, eid)
        return blockers


def _order_key_of(entry_id: str, fields: Mapping[str, Any]) -> str | None:
    try:
        return WriteItem.from_fields(entry_id, fields).order_key
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
        return None
