"""Service commands through the real CLI: `dul audit serve` on DUL_AUDIT_PORT (a subprocess,
stopped at the end), `dul up` refusing another process that answers on a service's port, and
`dul bench` refusing an unknown part or an unusable PostgreSQL URL before measuring anything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from dul import services
from dul.chain.testing import ChainHandle, free_port
from dul.cli.main import app
from dul.home import Home

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

DUL = (sys.executable, "-c", "from dul.cli.main import app; app()")


def test_audit_serve_listens_on_dul_audit_port(chain: ChainHandle) -> None:
    port = free_port()
    env = {**os.environ, **chain.env, "DUL_AUDIT_PORT": str(port)}
    server = subprocess.Popen(
        [*DUL, "audit", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 90  # a CLI start and catch-up: 30 s was short at load 25
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "dul audit serve did not answer"
                time.sleep(0.2)
        assert health.status_code == 200
        assert health.json()["service"] == "audit"
        docs = httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()
        assert "Problem" in docs["components"]["schemas"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_audit_serve_refuses_a_bad_port_in_one_line(chain: ChainHandle) -> None:
    result = CliRunner().invoke(
        app, ["audit", "serve"], env={**chain.env, "DUL_AUDIT_PORT": "eighty"}
    )
    assert result.exit_code != 0
    assert "DUL_AUDIT_PORT" in result.stderr
    assert "Traceback" not in result.output


@contextlib.contextmanager
def foreign_server(answer: dict[str, str]) -> Iterator[ThreadingHTTPServer]:
    """Another program listening on a free 127.0.0.1 port, answering 200 and `answer` to every
    GET (as any HTTP server with a health page might)."""
    body = json.dumps(answer).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_up_refuses_another_process_answering_on_the_audit_port(tmp_path: Path) -> None:
    """`dul up` takes a service for ready only when its /healthz names the process just
    started: a foreign server on DUL_AUDIT_PORT (a plain one, then one that says it is a dul
    audit service of another start) is refused in one line, and the audit service it started
    is not left running."""
    home = tmp_path / "home"
    env = {
        "DUL_HOME": str(home),
        "DUL_KEY_PASSPHRASE": "up tests",
        "DUL_KEY_SCRYPT_N": "1024",
        "DUL_CHAIN_PORT": str(free_port()),
        "DUL_CHAIN_NODE_PORT": str(free_port()),
        "DUL_CHAIN_BLOCK_TIME": "0.2",
        "DUL_GATEWAY_PORT": str(free_port()),
        "DUL_PATIENT_PORT": str(free_port()),
    }
    runner = CliRunner()
    answers = (
        ({"status": "ok"}, "not a dul service: /healthz answered HTTP 200"),
        ({"status": "ok", "service": "audit", "instance": "0" * 32},
         "a dul 'audit' service of another start"),
    )  # fmt: skip
    try:
        for answer, named in answers:
            with foreign_server(answer) as squatter:
                url = f"http://127.0.0.1:{squatter.server_address[1]}"
                env["DUL_AUDIT_PORT"] = str(squatter.server_address[1])
                result = runner.invoke(app, ["up", "--detach", "--json"], env=env)
            assert result.exit_code == 1, result.output
            assert (
                f"audit not started: {url} is answered by another process ({named}), not the "
                "one just started" in result.stderr
            )
            assert "Traceback" not in result.output
            assert services.running(Home(home), "audit") is None
    finally:
        runner.invoke(app, ["down"], env=env)


def test_bench_refuses_an_unknown_part_before_measuring() -> None:
    result = CliRunner().invoke(app, ["bench", "everything"])
    assert result.exit_code == 2
    assert "unknown part(s): everything" in result.output


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+psycopg://dul:s3cret@127.0.0.1:{port}/dul", "Connection refused"),
        ("sqlite:///bench.db", "a sqlite URL, not PostgreSQL's"),
        ("not a url", "Could not parse"),
    ],
)
def test_bench_audit_refuses_a_postgres_url_it_cannot_use_before_measuring(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    """A wrong DUL_BENCH_DATABASE_URL is one line up front, not a traceback minutes later
    (after the gateway part, the chain's filling and the SQLite catch-up); no password shown."""
    from audit import bench as audit_bench

    def measured(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("measured before the URL was checked")

    monkeypatch.setattr(audit_bench, "catchup_rate", measured)
    env = {"DUL_BENCH_DATABASE_URL": url.format(port=free_port())}
    result = CliRunner().invoke(app, ["bench", "gateway", "audit"], env=env)
    assert result.exit_code == 1, result.output
    assert "DUL_BENCH_DATABASE_URL (or DUL_TEST_DATABASE_URL) cannot hold" in result.output
    assert reason in result.output
    assert "s3cret" not in result.output
    assert "Traceback" not in result.output


def test_up_on_a_node_at_dul_rpc_url_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    """With DUL_RPC_URL set, `dul up` uses that node instead of starting its own chain: one
    that does not answer is named in one line, and no chain is started."""
    url = f"http://127.0.0.1:{free_port()}"
    env = {"DUL_HOME": str(tmp_path / "home"), "DUL_RPC_URL": url,
           "DUL_KEY_PASSPHRASE": "up tests", "DUL_KEY_SCRYPT_N": "1024"}  # fmt: skip
    result = CliRunner().invoke(app, ["up", "--detach"], env=env)
    assert result.exit_code != 0
    assert f"the node at DUL_RPC_URL ({url}) does not answer" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "home" / "run" / "chain.json").exists()
