"""Redis Cluster hash slots: each script's and each transaction's keys share one slot.

Redis Cluster runs a script or a MULTI/EXEC only when all its keys hash to one slot, and hashes
only the first `{...}` of a key when there is one (redis-py's `key_slot` is the same CRC16).
"""

from __future__ import annotations

from redis.crc import key_slot

from proxy.budget.limiter import BucketSpec, KeyScheme, admit_request
from proxy.reads.counters import CounterKeys
from proxy.rules.loader import CounterRule, load_rules
from proxy.store.keys import key, part, rate_limits_key
from proxy.store.vault import vault_key
from proxy.writes.store import WriteKeys

CRED = "0123456789abcdef"
SPECS = [
    BucketSpec("general", 100, 10_000),
    BucketSpec("search", 5, 1000),
    BucketSpec("daily", 250_000, 0, kind="daily"),
]


def slots(keys: list[str]) -> set[int]:
    return {key_slot(k.encode()) for k in keys}


def counter_rule() -> CounterRule:
    rules = load_rules("rules/default.yaml").rules
    return next(r for r in rules if isinstance(r, CounterRule))


def test_every_key_of_one_credential_is_in_its_slot() -> None:
    admit_keys, _ = admit_request(KeyScheme(), CRED, SPECS, 0, "t", 1)
    rule = counter_rule()
    keys = [
        *admit_keys,
        *CounterKeys.all(CRED, rule, "123", "456"),
        vault_key(CRED),
        rate_limits_key(CRED),
        key(CRED, "oc", "contacts", part("1")),
    ]
    assert slots(keys) == {key_slot(f"{{{CRED}}}".encode())}


def test_ids_from_requests_cannot_move_a_key_to_another_slot() -> None:
    tricky = key(CRED, "rec", part("{other}"), part("}{x"))
    assert slots([tricky]) == slots([key(CRED, "rec")])


def test_keys_shared_by_all_credentials_keep_one_slot_per_concern() -> None:
    writes = WriteKeys()
    keys = [writes.stream, writes.dead, writes.assoc_types, writes.status("w1")]
    assert slots([*keys, writes.created("0-46", "9")]) == slots(["{writes}"])
    assert slots(["hubspot:{jobs}:lease:reconcile", "hubspot:{jobs}:period:reconcile"]) == slots(
        ["{jobs}"]
    )
