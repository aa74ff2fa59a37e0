"""Detached service processes of the local stack (gateway, audit service) with pid files and
logs under `DUL_HOME`: started by `dul up`, stopped by `dul down`.

A service is ready when the process started here says so: each start gives the process an
instance id (DUL_SERVICE_INSTANCE) that its `/healthz` repeats (`dul.endpoints.service_identity`).
Any other answer on the port — another program, another stack's service, a stale one — is
refused at once with an error naming it, instead of being taken for the service."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog

from dul.chain.node import process_alive, read_pid, terminate
from dul.endpoints import INSTANCE_ENV
from dul.errors import ConfigError
from dul.home import PRIVATE_UMASK, Home, open_private, write_private

log = structlog.get_logger(__name__)

MARKER = "dul.cli.main"


@dataclass(frozen=True)
class Service:
    name: str
    url: str | None
    pid: int


def _paths(home: Home, name: str) -> tuple[Path, Path, Path]:
    return (
        home.run_dir / f"{name}.pid",
        home.run_dir / f"{name}.json",
        home.logs_dir / f"{name}.log",
    )


def running(home: Home, name: str) -> Service | None:
    pid_path, info_path, _ = _paths(home, name)
    pid = read_pid(pid_path)
    if pid is None or not process_alive(pid, MARKER):
        return None
    info = json.loads(info_path.read_text())
    return Service(name, info["url"], pid)


def start(
    home: Home,
    name: str,
    args: list[str],
    url: str | None,
    env: dict[str, str],
    *,
    ready_path: str = "/readyz",
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
) -> Service:
    """Run `dul ARGS…` detached until it is ready — its `/healthz` names this very process and
    `url + ready_path` answers 200, or for a service without HTTP, `ready()` holds — and return
    it; idempotent. Another process answering at `url` is a ConfigError at once."""
    existing = running(home, name)
    if existing is not None:
        return existing
    pid_path, info_path, log_path = _paths(home, name)
    home.ensure()
    instance = secrets.token_hex(16)
    with open_private(log_path) as out:
        process = subprocess.Popen(
            [sys.executable, "-c", f"from {MARKER} import app; app()", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "DUL_HOME": str(home.root), **env, INSTANCE_ENV: instance},
            umask=PRIVATE_UMASK,
        )
    write_private(pid_path, f"{process.pid}\n")
    write_private(info_path, json.dumps({"url": url, "pid": process.pid}) + "\n")
    deadline = time.monotonic() + timeout
    started = False
    try:
        while not started and time.monotonic() < deadline and process.poll() is None:
            try:
                started = _ready(url, ready_path, ready, instance)
            except ConfigError as exc:
                raise ConfigError(f"{name} not started: {exc.message}", code=exc.code) from None
            if not started:
                time.sleep(0.2)
    finally:  # not ready, refused, or the caller interrupted (Ctrl-C, SIGTERM): no half-started
        if not started:  # service outlives this (it runs in a session of its own)
            terminate(process.pid, MARKER, 10)
    if started:
        log.info("service.started", name=name, url=url, pid=process.pid)
        return Service(name, url, process.pid)
    tail = log_path.read_text(errors="replace").splitlines()[-5:]
    raise ConfigError(
        f"{name} did not become ready at {url}; last log lines: {' | '.join(tail)}",
        code="service_start_failed",
    )


def _ready(url: str | None, path: str, ready: Callable[[], bool] | None, instance: str) -> bool:
    """Whether the service is ready: False while nothing answers at `url` (or it is not ready
    yet); a ConfigError when what answers is not the process started with `instance`."""
    if ready is not None:
        return ready()
    try:
        health = httpx.get(f"{url}/healthz", timeout=1)
    except httpx.HTTPError:
        return False
    answered = _identity(health)
    if answered.get("instance") != instance:
        raise ConfigError(
            f"{url} is answered by another process ({_describe(answered, health)}), not the "
            "one just started: stop that process, or give this service another port",
            code="service_port_taken",
        )
    if path == "/healthz":
        return health.status_code == 200
    try:
        return httpx.get(f"{url}{path}", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _identity(response: httpx.Response) -> dict[str, object]:
    """The `service` / `instance` a /healthz answer names ({} when it is no such JSON)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _describe(answered: dict[str, object], response: httpx.Response) -> str:
    service = answered.get("service")
    if isinstance(service, str) and service:
        return f"a dul {service[:40]!r} service of another start"
    return f"not a dul service: /healthz answered HTTP {response.status_code}"


def stop(home: Home, name: str) -> bool:
    pid_path, info_path, _ = _paths(home, name)
    pid = read_pid(pid_path)
    stopped = pid is not None and process_alive(pid, MARKER)
    if pid is not None:
        terminate(pid, MARKER, 15)
    for path in (pid_path, info_path):
        path.unlink(missing_ok=True)
    return stopped
