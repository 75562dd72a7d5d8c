"""What a write-behind write is: its kind, its request, and how it travels in the stream (pure).

A write is accepted from one HubSpot call (a note create, a default association PUT, an object
PATCH or, when configured, an object create) and sent later inside a batch call. Everything the
worker needs to send it, possibly from another replica, is in the stream entry; the bearer token
is not (it lives in the vault, keyed by the credential hash: invariant 8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from proxy.hubspot.protocol import canonical_object_type, dumps_exact, loads_exact
from proxy.store.keys import PREFIX

NOTE_CREATE: Final = "note_create"
ASSOCIATE_DEFAULT: Final = "associate_default"
UPDATE: Final = "update"
CREATE: Final = "create"
KINDS: Final = frozenset({NOTE_CREATE, ASSOCIATE_DEFAULT, UPDATE, CREATE})

# The batch endpoint family each kind is sent through.
OP_CREATE: Final = "create"
OP_UPDATE: Final = "update"
OP_ASSOCIATE: Final = "associate"
OP_OF_KIND: Final[Mapping[str, str]] = {
    NOTE_CREATE: OP_CREATE,
    CREATE: OP_CREATE,
    UPDATE: OP_UPDATE,
    ASSOCIATE_DEFAULT: OP_ASSOCIATE,
}

_OBJECTS = r"/crm/(?:v3/objects|objects/\d{4}-\d{2})"
_ASSOCS = r"/crm/(?:v4/objects|objects/\d{4}-\d{2})"
_CREATE_PATH = re.compile(rf"^{_OBJECTS}/(?P<type>[^/]+)/?$")
_UPDATE_PATH = re.compile(rf"^{_OBJECTS}/(?P<type>[^/]+)/(?P<id>[^/]+)/?$")
_ASSOC_PATH = re.compile(
    rf"^{_ASSOCS}/(?P<from>[^/]+)/(?P<fromId>[^/]+)/associations/default/(?P<to>[^/]+)/(?P<toId>[^/]+)/?$"
)


class NotWritable(ValueError):
    """This call cannot be written behind (unexpected path, query or body): forward it instead."""


@dataclass(frozen=True)
class WriteRequest:
    """One accepted call, reduced to what its batch input needs.

    `object_type`/`object_id` name the record written (the `from` side of an association);
    `base` is the caller's current copy of an updated object, used only to shape the answer.
    """

    object_type: str
    object_id: str | None = None
    to_type: str | None = None
    to_id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)
    associations: tuple[Any, ...] = ()
    base: Mapping[str, Any] | None = field(default=None, compare=False)
    unique_property: str | None = None  # a create's property no two records share (lookups)

    @classmethod
    def from_call(cls, kind: str, path_qs: str, body: bytes) -> WriteRequest:
        """Parse the client's call; raises NotWritable when it does not fit `kind`."""
        path, _, query = path_qs.partition("?")
        if kind not in KINDS:
            raise NotWritable(f"unknown write kind {kind!r}")
        if query:
            # idProperty, archived, ... change what the call means; the batch input cannot say so.
            raise NotWritable("calls with a query string are forwarded, not written behind")
        if kind == ASSOCIATE_DEFAULT:
            return cls._association(path, body)
        payload = _json_object(body)
        properties = payload.get("properties")
        if not isinstance(properties, dict):
            raise NotWritable("the body needs a `properties` object")
        if kind == UPDATE:
            m = _UPDATE_PATH.match(path)
            if m is None or m["id"] in {"batch", "search"}:
                raise NotWritable(f"not an object update path: {path}")
            return cls(m["type"], m["id"], properties=properties)
        m = _CREATE_PATH.match(path)
        if m is None:
            raise NotWritable(f"not an object create path: {path}")
        associations = payload.get("associations") or []
        if not isinstance(associations, list):
            raise NotWritable("`associations` must be a list")
        return cls(m["type"], properties=properties, associations=tuple(associations))

    @classmethod
    def _association(cls, path: str, body: bytes) -> WriteRequest:
        m = _ASSOC_PATH.match(path)
        if m is None:
            raise NotWritable(f"not a default association path: {path}")
        if body.strip() not in {b"", b"{}", b"null"}:
            raise NotWritable("a default association PUT carries no body")
        return cls(m["from"], m["fromId"], to_type=m["to"], to_id=m["toId"])

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.object_type}
        optional = {
            "id": self.object_id,
            "toType": self.to_type,
            "toId": self.to_id,
            "properties": dict(self.properties) or None,
            "associations": list(self.associations) or None,
            "unique": self.unique_property,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> WriteRequest:
        return cls(
            object_type=str(raw["type"]),
            object_id=_opt_str(raw.get("id")),
            to_type=_opt_str(raw.get("toType")),
            to_id=_opt_str(raw.get("toId")),
            properties=dict(raw.get("properties") or {}),
            associations=tuple(raw.get("associations") or ()),
            unique_property=_opt_str(raw.get("unique")),
        )


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = loads_exact(body or b"{}")
    except ValueError as exc:
        raise NotWritable(f"the body is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise NotWritable("the body must be a JSON object")
    return payload


@dataclass(frozen=True)
class WriteItem:
    """A write as read back from the stream: its ids, owner credential, kind and request."""

    write_id: str
    entry_id: str  # the stream entry now carrying it (a retried dead letter gets a new one)
    credential: str
    kind: str
    request: WriteRequest
    accepted_ms: int = 0

    @property
    def op(self) -> str:
        return OP_OF_KIND[self.kind]

    @property
    def order_key(self) -> str | None:
        """Writes sharing a key must reach HubSpot in stream order; None: order does not matter.

        Only updates need it: creates make distinct records and associating is idempotent and
        commutative. The credential is left out on purpose: two tokens of one portal write the
        same record.
        """
        if self.kind != UPDATE:
            return None
        return f"{canonical_object_type(self.request.object_type)}/{self.request.object_id}"

    def to_fields(self) -> dict[str, bytes]:
        return {
            "w": self.write_id.encode(),
            "c": self.credential.encode(),
            "k": self.kind.encode(),
            "r": dumps_exact(self.request.to_json()),
            "t": str(self.accepted_ms).encode(),
        }

    @classmethod
    def from_fields(cls, entry_id: str, fields: Mapping[str, Any]) -> WriteItem:
        """Decode an entry; raises ValueError, KeyError or TypeError for one it cannot read."""
        kind = _text(fields["k"])
        if kind not in KINDS:
            raise ValueError(f"unknown write kind {kind!r}")
        raw = loads_exact(fields["r"])
        if not isinstance(raw, dict):
            raise ValueError("the request is not a JSON object")
        return cls(
            write_id=_text(fields["w"]),
            entry_id=entry_id,
            credential=_text(fields["c"]),
            kind=kind,
            request=WriteRequest.from_json(raw),
            accepted_ms=int(_text(fields.get("t", "0"))),
        )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def entry_sort_key(entry_id: str) -> tuple[int, int]:
    """Stream ids order as (milliseconds, sequence), not as text."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class WriteConfig:
    """Write-behind settings; every duration is configurable so tests can shrink them."""

    key_prefix: str = PREFIX
    group: str = "writers"
    consumer: str | None = None  # None: host-pid-random, unique per process
    linger_s: float = 0.1  # lets concurrent writes gather into one batch
    # A kind of write (operation, object types) leaves at most this often unless its batch is
    # full, so a burst's writes ride in few full batches (0: every cycle).
    flush_interval_s: float = 0.0
    # Longest XREADGROUP BLOCK when nothing is due; keep it under the Redis socket timeout.
    block_s: float = 0.5
    read_count: int = 500
    max_held: int = 2000  # writes one worker holds in memory at most
    max_inputs: int = 100  # HubSpot's batch limit
    claim_idle_s: float = 30.0  # an entry idle this long belongs to a dead consumer
    # One replica at a time reads new writes, under a lease of this TTL renewed at each read,
    # so a burst's writes gather into full batches on one replica instead of each replica
    # sending its share every flush interval. A reader busy longer than the TTL (a batch
    # waiting for budget) loses the lease to another replica. 0: every replica reads.
    reader_lease_s: float = 3.0
    max_attempts: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0
    lookup_delay_s: float = 10.0  # before searching for a create that may have landed
    send_wait_s: float = 30.0  # how long one batch call may wait for budget
    status_ttl_s: int = 7 * 24 * 3600
    accept_timeout_s: float = 1.0  # Redis must have stored the write by then, or 503
    # An accept that probes a Redis the breaker holds as away: it must not cost more than this.
    accept_probe_timeout_s: float = 0.25
    # >0: an accepted write (and a create's in-flight mark) waits until this many replicas
    # have it, up to wait_timeout_ms, or it is refused (see proxy/store/replicated.py)
    wait_replicas: int = 0
    wait_timeout_ms: int = 250
    # Accepts talking to Redis at once, per process. On a saturated process each holds its slot
    # for event-loop turns of 100 ms and more: 32 capped accepts near 100 a second at N=3000.
    accept_concurrency: int = 256
    metrics_interval_s: float = 5.0
    status_path: str = "/proxy/v1/writes/{id}"
    # "from>to" (canonical type ids, e.g. "2-50158943>2-50158913") -> (category, typeId)
    association_types: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    fallback_association_type_id: int = 0

    def __post_init__(self) -> None:
        for name in (
            "block_s",
            "claim_idle_s",
            "backoff_base_s",
            "send_wait_s",
            "accept_timeout_s",
            "accept_probe_timeout_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"writes.{name} must be > 0")
        for name in ("flush_interval_s", "reader_lease_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"writes.{name} must be >= 0")
        if 0 < self.reader_lease_s <= self.block_s:
            raise ValueError("writes.reader_lease_s must outlast one blocking read (block_s)")
        if not 1 <= self.max_inputs <= 100:
            raise ValueError("writes.max_inputs must be between 1 and 100")
        for name in ("max_attempts", "read_count", "max_held", "accept_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"writes.{name} must be >= 1")
