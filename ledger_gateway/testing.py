"""Run a real gateway in-process on 127.0.0.1 (tests and `dul bench`), like starlette.testclient
but over real HTTP: uvicorn in a thread, stopped on exit; or as its own process
(`GatewayProcess`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from dul.contracts.typed_data import Domain
from dul.serving import serve_asgi
from ledger_gateway.app import create_app
from ledger_gateway.client import GatewayClient
from ledger_gateway.settings import GatewaySettings


@dataclass
class GatewayHandle:
    url: str
    token: str
    client: GatewayClient
    domain: Domain
    settings: GatewaySettings


@contextlib.contextmanager
def serve(settings: GatewaySettings, *, ready_timeout: float = 30.0) -> Iterator[str]:
    """Serve the gateway of `settings` until the block ends; yields its URL once ready."""
    with serve_asgi(
        create_app(settings),
        "gateway",
        port=settings.port,
        ready_path="/readyz",
        ready_timeout=ready_timeout,
        poll_s=0.1,
        stop_timeout=15.0,
    ) as url:
        yield url


class GatewayProcess:
    """`dul gateway serve [--workers N]` as a real process (tests of `kill -9` and of several
    processes sharing one outbox): `env` is its whole environment; logs go to `log_path`."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path, workers: int = 1) -> None:
        self.env = {**env, "DUL_GATEWAY_PORT": str(port), "DUL_GATEWAY_WORKERS": str(workers)}
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until /readyz answers 200."""
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from dul.cli.main import app; app()", "gateway", "serve"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gateway at {self.url} did not become ready: {self.log_tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def workers(self) -> list[int]:
        """Pids of the worker processes serving (`--workers` > 1: the server's children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        found = []
        for child in map(int, children):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(child)
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
