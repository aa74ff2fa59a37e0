"""`dul patient serve` through the real CLI: without the gateway credential it stops at once
with one line; with one (in a file, as a deployment keeps it) it serves the page and its health
on DUL_PATIENT_PORT, and a patient-less call to its API is a 401 problem."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from dul.chain.testing import free_port
from dul.cli.main import app

DUL = (sys.executable, "-c", "from dul.cli.main import app; app()")


def test_patient_serve_without_a_gateway_token_is_one_line(tmp_path: Path) -> None:
    env = {"DUL_HOME": str(tmp_path), "DUL_PATIENT_GATEWAY_TOKEN": ""}
    result = CliRunner().invoke(app, ["patient", "serve", "--port", "1"], env=env)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "STEWARD token" in lines[0]
    result = CliRunner().invoke(app, ["patient", "serve", "--port", "70000"], env=env)
    assert result.exit_code != 0
    assert "Traceback" not in result.output


def test_patient_serve_serves_the_page(tmp_path: Path) -> None:
    port = free_port()
    token = tmp_path / "gateway.token"
    token.write_text("dul_not_checked_until_a_patient_signs_in\n")
    env = {**os.environ, "DUL_HOME": str(tmp_path / "home"), "DUL_PATIENT_PORT": str(port),
           "DUL_SERVICE_INSTANCE": "instance-of-this-test"}  # fmt: skip
    server = subprocess.Popen(
        [*DUL, "patient", "serve", "--gateway-token-file", str(token)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "dul patient serve did not answer"
                time.sleep(0.2)
        # names itself and the instance it was started as (what `dul up` checks)
        named = health.json()
        assert (named["status"], named["service"]) == ("ok", "patient-page")
        assert named["instance"] == "instance-of-this-test"
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert page.status_code == 200
        assert "Patient token" in page.text
        refused = httpx.get(f"http://127.0.0.1:{port}/api/session", timeout=5)
        assert refused.status_code == 401
        assert refused.json()["code"] == "credential_missing"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
