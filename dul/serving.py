"""An ASGI app served over real HTTP in-process (uvicorn in a thread) until a block ends: the
gateway, the audit service and the patient page in tests and `dul bench`, like
starlette.testclient but through a real socket on 127.0.0.1."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from dul.chain.testing import free_port


@contextlib.contextmanager
def serve_asgi(
    app: Any,
    name: str,
    *,
    port: int | None = None,
    ready_path: str = "/healthz",
    ready_timeout: float = 20.0,
    poll_s: float = 0.05,
    stop_timeout: float = 10.0,
    **options: Any,
) -> Iterator[str]:
    """Serve `app` on 127.0.0.1:`port` (a free one when None) until the block ends; yields its
    URL once `ready_path` answers 200. `name` names the thread and the start-up error;
    `options` go to `uvicorn.Config`. RuntimeError when it does not answer in time."""
    port = free_port() if port is None else port
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, **options
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"{name}-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}{ready_path}", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError(f"the {name} at {url} did not start")
            time.sleep(poll_s)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=stop_timeout)
