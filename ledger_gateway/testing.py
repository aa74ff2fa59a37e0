"""Run a real gateway in-process on 127.0.0.1 (tests and `dul bench`), like starlette.testclient
but over real HTTP: uvicorn in a thread, stopped on exit."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import uvicorn

from dul.contracts.typed_data import Domain
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
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=settings.port,
            log_config=None,
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{settings.port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"gateway at {url} did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
