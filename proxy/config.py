"""Process settings: CLI flags > environment (HUBSPOT_PROXY_*) > defaults.

Budget and behaviour live in the rules file; these are the things that differ per deployment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from yarl import URL

DEFAULT_UPSTREAM = "https://api.hubapi.com"
MiB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a value the gateway cannot use; the message names the setting."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    upstream: str = DEFAULT_UPSTREAM
    rules_path: str = "rules/default.yaml"
    redis_url: str | None = None
    # The embedded Valkey's data (and generated credential key); unused with redis_url.
    data_dir: str | None = None
    # REDIS_URL names one node of a Redis Cluster (see proxy/store/client.py for why a flag).
    redis_cluster: bool = False
    max_body_bytes: int = 10 * MiB
    pool_size: int = 100
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    # A client's request head must arrive whole within this, and its body within the other:
    # slow clients cannot hold connections open (slowloris).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 4096
    # Connections the kernel completes before the gateway accepts them (capped by the kernel's
    # net.core.somaxconn). aiohttp's 128 overflows when a 9:00 burst opens connections faster
    # than a busy event loop accepts them; TCP then retries the dropped handshakes after 1, 3,
    # 7, 15 s and the client's first call appears to hang.
    listen_backlog: int = 2048
    redis_timeout_s: float = 0.25
    redis_max_connections: int = 512
    # Replicas that must hold an accepted write before the client hears of it (Redis WAIT).
    redis_wait_replicas: int = 0
    admin_token: str | None = field(default=None, repr=False)
    # Unset (""): generated and kept in data_dir with the embedded Valkey, refused otherwise.
    credential_key: str = field(default="", repr=False)
    log_level: str = "INFO"
    access_log: bool = False
    shutdown_timeout_s: float = 20.0
    # How long a write-behind entry sits unacknowledged before another replica takes it over.
    write_claim_idle_s: float = 30.0
    # Accepted credentials that get their own `credential` label; later ones are `other`.
    credential_labels: int = 20
    # How long after an unanswered create the worker waits before searching HubSpot for it
    # (HubSpot indexes new records for search "after a few moments").
    write_lookup_delay_s: float = 10.0
    # A kind of written-behind write leaves at most this often unless its batch is full (100):
    # during a burst the writes nobody waits for go in a few full batches, leaving the budget
    # to the calls students wait on. 0: a batch every worker cycle.
    write_flush_interval_s: float = 3.0

    @property
    def upstream_url(self) -> URL:
        return URL(self.upstream)


# Environment variable for each setting; REDIS_URL keeps its conventional name.
ENV_NAMES: Mapping[str, str] = {
    f.name: ("REDIS_URL" if f.name == "redis_url" else f"HUBSPOT_PROXY_{f.name.upper()}")
    for f in fields(Settings)
}
ENV_NAMES = {**ENV_NAMES, "rules_path": "HUBSPOT_PROXY_RULES"}
SECRET_SETTINGS = frozenset({"admin_token", "credential_key"})


def _coerce(name: str, raw: str, default: Any) -> Any:
    kind = type(default) if default is not None else str
    try:
        if kind is bool:
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{ENV_NAMES[name]}: expected {kind.__name__}, got {raw!r}") from exc


def validate(settings: Settings) -> Settings:
    url = settings.upstream_url
    if url.scheme not in {"http", "https"} or not url.host:
        raise SettingsError(f"upstream: expected an http(s) URL, got {settings.upstream!r}")
    if url.query_string or url.fragment:
        raise SettingsError("upstream: must not carry a query string or fragment")
    if not 0 < settings.port < 65536:
        raise SettingsError(f"port: {settings.port} is not a TCP port")
    if settings.redis_wait_replicas < 0:
        raise SettingsError("redis_wait_replicas: must be >= 0")
    if settings.write_flush_interval_s < 0:
        raise SettingsError("write_flush_interval_s: must be >= 0")
    for name in (
        "max_body_bytes",
        "pool_size",
        "max_connections",
        "listen_backlog",
        "credential_labels",
    ):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{name}: must be > 0")
    for name in (
        "connect_timeout_s",
        "read_timeout_s",
        "header_timeout_s",
        "body_timeout_s",
        "redis_timeout_s",
        "shutdown_timeout_s",
        "write_claim_idle_s",
        "write_lookup_delay_s",
    ):
        if getattr(settings, name) <= 0:
            raise SettingsError(f"{name}: must be > 0")
    if settings.redis_cluster and not settings.redis_url:
        raise SettingsError("redis_cluster: needs REDIS_URL (the embedded Valkey is one server)")
    return replace(settings, upstream=str(url).rstrip("/"))


def load_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from defaults, then the environment, then explicit (CLI) overrides."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = env.get(ENV_NAMES[f.name])
        if raw is not None and raw != "":
            values[f.name] = _coerce(f.name, raw, getattr(defaults, f.name))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(replace(defaults, **values))


def credential_key_status(settings: Settings) -> tuple[bool, str]:
    """(usable, what happens): how the gateway gets the key of credential hashes and vault."""
    env = ENV_NAMES["credential_key"]
    if settings.credential_key:
        return True, "set"
    if settings.redis_url:
        return False, (
            f"{env} is unset: refused with an external Redis, where every replica must use the "
            "same key; set it (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return True, (
        f"{env} is unset: a key is generated on first start and kept in the data directory, "
        "beside the embedded Valkey's data; set it for anything but a trial"
    )


def masked(settings: Settings) -> dict[str, Any]:
    """Effective settings for display, secrets masked."""
    shown: dict[str, Any] = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        if f.name in SECRET_SETTINGS and value:
            value = "********"
        if f.name == "credential_key" and not value:
            value = "(unset) " + credential_key_status(settings)[1]
        if f.name == "redis_url" and value:
            value = str(URL(value).with_password("********")) if URL(value).password else value
        shown[f.name] = value
    return shown
