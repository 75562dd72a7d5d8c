"""The credential key generated on first start when HUBSPOT_PROXY_CREDENTIAL_KEY is unset.

Only with the embedded Valkey: the key is kept beside its data (`<data dir>/credential.key`,
mode 0600), never in Redis, so a copy of the Redis data alone does not give the tokens away.
Replicas sharing an external Redis must share one key, so they must be given it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

KEY_FILE: Final = "credential.key"


def load_or_create_key(data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = data_dir / KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        if not key:
            raise ValueError(f"{KEY_FILE} in the data directory is empty") from None
        return key
    key = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    return key
