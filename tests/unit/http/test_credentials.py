"""A credential's keyed hash is kept per (key, token): the same answer as computing it, bounded."""

from __future__ import annotations

import hashlib
import hmac

from proxy.http import credentials
from proxy.http.credentials import ANONYMOUS, HASHED_MAX, credential_id


def computed(token: str, key: bytes) -> str:
    return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()[:16]


def test_a_kept_hash_is_the_computed_one_for_each_key() -> None:
    for key in (b"key-one", b"key-two"):
        for _ in range(2):
            assert credential_id("pat-na1-token", key) == computed("pat-na1-token", key)
    assert credential_id("pat-na1-token", b"key-one") != credential_id("pat-na1-token", b"key-two")
    assert credential_id(None, b"key-one") == ANONYMOUS


def test_made_up_tokens_do_not_grow_memory() -> None:
    for n in range(HASHED_MAX * 2):
        assert credential_id(f"token-{n}", b"key") == computed(f"token-{n}", b"key")
        assert len(credentials._hashed) <= HASHED_MAX
