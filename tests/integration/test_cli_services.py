"""Service commands through the real CLI: `dul audit serve` on DUL_AUDIT_PORT (a subprocess,
stopped at the end), and `dul bench` refusing an unknown part before measuring anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from dul.chain.testing import ChainHandle, free_port
from dul.cli.main import app

pytestmark = pytest.mark.integration

DUL = (sys.executable, "-c", "from dul.cli.main import app; app()")


def test_audit_serve_listens_on_dul_audit_port(chain: ChainHandle) -> None:
    port = free_port()
    env = {**os.environ, **chain.env, "DUL_AUDIT_PORT": str(port)}
    server = subprocess.Popen(
        [*DUL, "audit", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "dul audit serve did not answer"
                time.sleep(0.2)
        assert health.status_code == 200
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


def test_bench_refuses_an_unknown_part_before_measuring() -> None:
    result = CliRunner().invoke(app, ["bench", "everything"])
    assert result.exit_code == 2
    assert "unknown part(s): everything" in result.output


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
