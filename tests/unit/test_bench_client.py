"""The bench's keep-alive HTTP client against a real uvicorn server that closes idle
connections quickly: a request on a connection the server closed is sent again on a new one.
The open loop times without the load generator's collector."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from dul.chain.testing import free_port
from ledger_gateway.bench import _Connection, _open_loop

KEEP_ALIVE_S = 1


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 201, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=port, timeout_keep_alive=KEEP_ALIVE_S, log_config=None
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(10)


def test_a_connection_closed_while_idle_is_reopened(server: str) -> None:
    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        connection = _Connection(server, "token")
        try:
            answers = [await connection.post("/echo", {"n": 1})]
            answers.append(await connection.post("/echo", {"n": 2}))  # reused, still open
            assert connection.reconnects == 0
            await asyncio.sleep(KEEP_ALIVE_S + 1.0)  # the server closes it meanwhile
            answers.append(await connection.post("/echo", {"n": 3}))
            return answers, connection.reconnects
        finally:
            connection.close()

    answers, reconnects = asyncio.run(scenario())
    assert answers == [(201, b'{"n": 1}'), (201, b'{"n": 2}'), (201, b'{"n": 3}')]
    assert reconnects == 1


def test_a_server_that_is_not_there_is_an_error_not_a_retry_loop() -> None:
    connection = _Connection(f"http://127.0.0.1:{free_port()}", "token")
    with pytest.raises(ConnectionError):
        asyncio.run(connection.post("/echo", {}))


def test_the_open_loop_times_without_the_load_generators_collector(server: str) -> None:
    async def scenario() -> tuple[list[float], list[bool]]:
        seen: list[bool] = []

        async def watch() -> None:
            for _ in range(5):
                seen.append(gc.isenabled())
                await asyncio.sleep(0.02)

        bodies = [{"n": n} for n in range(30)]
        latencies, _ = await asyncio.gather(_open_loop(server, "token", bodies, 200.0), watch())
        return latencies, seen

    latencies, seen = asyncio.run(scenario())
    assert len(latencies) == 30
    assert seen == [False] * 5  # a full collection would stall every send meanwhile
    assert gc.isenabled()
