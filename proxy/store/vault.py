"""Tokens kept for work done after the client has gone (write-behind, jobs).

A write accepted now is sent later, possibly by another replica, so the token must outlive the
request. It is stored encrypted (Fernet, keyed from HUBSPOT_PROXY_CREDENTIAL_KEY) under the
credential's hash: never in a key, a log line or a label (invariant 8).
"""

from __future__ import annotations

import base64
import hashlib

import redis.asyncio as aioredis
from cryptography.fernet import Fernet, InvalidToken

from proxy.store.keys import key

TOKEN_TTL_S = 30 * 24 * 3600


def _fernet(secret: str) -> Fernet:
    digest = hashlib.sha256(b"hubspot-proxy-vault:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def vault_key(credential: str) -> str:
    return key(credential, "token")


class TokenVault:
    def __init__(self, redis: aioredis.Redis, secret: str) -> None:
        self._redis = redis
        self._fernet = _fernet(secret)
        self._known: dict[str, str] = {}

    async def remember(self, credential: str, token: str) -> None:
        """Store the token once per process and credential; refresh its TTL on first sight."""
        if self._known.get(credential) == token:
            return
        await self._redis.set(
            vault_key(credential), self._fernet.encrypt(token.encode()), ex=TOKEN_TTL_S
        )
        self._known[credential] = token

    async def token_for(self, credential: str) -> str | None:
        if credential in self._known:
            return self._known[credential]
        sealed = await self._redis.get(vault_key(credential))
        if sealed is None:
            return None
        try:
            token = self._fernet.decrypt(sealed).decode()
        except InvalidToken:
            return None
        self._known[credential] = token
        return token
