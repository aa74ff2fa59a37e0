"""`dul bench --json` with tiny sizes runs each part to the end on its own scratch stack and
reports every figure SPEC §5 names (the figures themselves are not asserted: timing under
load is noise)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from audit.bench import child_pids, scratch_schema
from audit.testing import POSTGRES_ENV
from dul.chain.node import process_alive
from dul.cli.main import app

pytestmark = pytest.mark.integration

GATEWAY_KEYS = {
    "single_events_per_s",
    "single_answered_per_s",
    "batch_events_per_s",
    "batch_answered_per_s",
    "raw_node_tx_per_s",
    "raw_node_batched_events_per_s",
    "raw_node_batched_first_events_per_s",
    "raw_node_batched_second_events_per_s",
    "batch_vs_raw_batched",
    "decision_p50_ms",
    "decision_p99_ms",
    "decision_p50_ms_250",
    "decision_p99_ms_250",
    "decision_p50_ms_1000",
    "decision_p99_ms_1000",
    "outbox_commit_p50_ms",
    "outbox_commit_p99_ms",
}


def test_bench_gateway_with_tiny_sizes_reports_every_figure() -> None:
    sizes = ["--single", "20", "--batch", "40", "--rate", "500", "--seconds", "0.2"]
    raw = ["--raw-txs", "10", "--raw-batched", "300"]
    result = CliRunner().invoke(app, ["bench", "gateway", "--json", *sizes, *raw])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)["gateway"]
    assert set(figures) >= GATEWAY_KEYS
    assert all(figures[key] > 0 for key in GATEWAY_KEYS)
    # the gateway's CPU per event (/proc, 10 ms ticks: a tiny run may read zero)
    assert figures["single_gateway_cpu_us_per_event"] >= 0
    assert figures["batch_gateway_cpu_us_per_event"] >= 0
    # the window's two parts: answered (no block rounding) and the wait until all are on chain
    for api in ("single", "batch"):
        assert figures[f"{api}_answered_per_s"] >= figures[f"{api}_events_per_s"]
        assert figures[f"{api}_confirm_tail_s"] >= 0
    assert figures["raw_node_batch_records"] == 256  # 300 records: one full, one partial tx
    # the chain's ceiling: two runs bracketing the APIs, both runs' records over their seconds
    first, second = (figures[f"raw_node_batched_{n}_events_per_s"] for n in ("first", "second"))
    assert figures["raw_node_batched_events_per_s"] == pytest.approx(
        2 / (1 / first + 1 / second), rel=0.01
    )
    assert figures["batch_vs_raw_batched"] == pytest.approx(
        figures["batch_events_per_s"] / figures["raw_node_batched_events_per_s"], rel=0.01
    )


def _descendants(root: int) -> dict[int, str]:
    """Every live process under `root` (its tasks' children, recursively): pid -> command."""
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        for child in child_pids(frontier.pop()):
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{child}/cmdline").read_bytes()
                found[child] = command.replace(b"\0", b" ").decode()
                frontier.append(child)
    return found


def _terminate_bench(
    args: list[str], ready: str, *, after_s: float = 0.0, env: dict[str, str] | None = None
) -> dict[int, str]:
    """Runs `dul bench ARGS`, sends it SIGTERM `after_s` seconds after a process whose command
    names `ready` is under it, and checks it exits as Ctrl-C does with none of the processes it
    had started left alive; returns them (pid -> command)."""
    bench = subprocess.Popen(
        [sys.executable, "-c", "from dul.cli.main import app; app()", "bench", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env,
    )  # fmt: skip
    try:
        started: dict[int, str] = {}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and bench.poll() is None:
            started = _descendants(bench.pid)
            if any(ready in command for command in started.values()):
                break
            time.sleep(0.2)
        assert any(ready in c for c in started.values()), (started, bench.poll())
        assert any("anvil" in c for c in started.values()), started
        time.sleep(after_s)
        bench.send_signal(signal.SIGTERM)
        _, stderr = bench.communicate(timeout=120)
        assert bench.returncode == 128 + signal.SIGTERM, stderr.decode()[-2000:]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(process_alive(p, c) for p, c in started.items()):
            time.sleep(0.5)
        left = {p: c for p, c in started.items() if process_alive(p, c)}
        assert left == {}
        return started
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.wait()


def test_a_terminated_bench_stops_the_chain_and_gateway_it_started() -> None:
    """SIGTERM (what a CI timeout or `kill` sends) ends `dul bench` as Ctrl-C does: its scratch
    chain, proxy and gateway stop with it. They used to outlive it (the node at 2.7 GB)."""
    args = ["gateway", "--single", "100000", "--raw-txs", "10", "--raw-batched", "300"]
    _terminate_bench(args, "gateway serve")


def test_an_audit_bench_terminated_while_filling_its_chain_stops_it_and_leaves_nothing() -> None:
    """The audit part's chain is started, deployed and filled before any catch-up: SIGTERM in
    that window used to leave its node and proxy running and its directory behind."""
    scratch = Path(tempfile.mkdtemp(prefix="dulb-"))  # short: the node's IPC path is under it
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_DATABASE_URL")},
           "TMPDIR": str(scratch)}  # SQLite only: the fill is what is interrupted  # fmt: skip
    try:
        # 2 s after its proxy answers: deploying, or recording the first of 1,000,000 accesses
        _terminate_bench(["audit", "--events", "1000000"], "rpc_proxy", after_s=2, env=env)
        assert list(scratch.iterdir()) == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_bench_sizes_are_bounded_at_the_edge() -> None:
    result = CliRunner().invoke(app, ["bench", "gateway", "--rate", "0"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_bench_audit_and_patients_with_tiny_sizes_report_every_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = os.environ.get("DUL_RPC_TOKEN")
    sizes = ["--events", "300", "--indexed", "2000", "--cohort", "30"]
    postgres = os.environ.get(POSTGRES_ENV)
    schemas_before = _bench_schemas(postgres) if postgres else set()
    # the bench's scratch directories go here (short: a node's IPC socket path is under them)
    scratch = Path(tempfile.mkdtemp(prefix="dulb-"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    try:
        result = CliRunner().invoke(app, ["bench", "audit", "patients", "--json", *sizes])
        left = sorted(path.name for path in scratch.iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert result.exit_code == 0, result.output
    assert left == []  # the chain's home, every round's store, the synthesized store: removed
    assert os.environ.get("DUL_RPC_TOKEN") == token  # the bench chains' own tokens: put back
    figures = json.loads(result.stdout)
    audit = figures["audit"]
    assert audit["indexed_events"] >= 2000
    for key in ("sqlite_events_per_s", "raw_fetch_decode_events_per_s", "provenance_p95_ms"):
        assert audit[key] > 0
    # three rounds of catch-ups, each figure the median round's
    assert audit["catchup_rounds"] == 3
    for kind in ["raw_fetch_decode", "sqlite", *(["postgres"] if postgres else [])]:
        rounds = audit[f"{kind}_events_per_s_rounds"]
        assert len(rounds) == 3
        assert min(rounds) > 0
        assert audit[f"{kind}_events_per_s"] == sorted(rounds)[1]
    for query in ("access_up", "artifact_up", "agreement_down", "agreement_both"):
        assert audit[f"provenance_{query}_p95_ms"] > 0
    if postgres:  # measured in a schema of its own, dropped after
        assert audit["postgres_events_per_s"] > 0
        assert _bench_schemas(postgres) == schemas_before
    patients = figures["patients"]
    # p95 of 100 decisions is the 96th, not the slowest
    assert 0 < patients["cohort_10k_decision_ms"] <= patients["cohort_decision_p95_ms"]
    assert patients["transparency_report_ms"] > 0


@pytest.mark.parametrize(
    "option", [["--events", "5000001"], ["--indexed", "10000001"], ["--cohort", "100001"]]
)
def test_bench_store_and_cohort_sizes_are_bounded_at_the_edge(option: list[str]) -> None:
    result = CliRunner().invoke(app, ["bench", "patients", *option])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def _bench_schemas(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT schema_name FROM information_schema.schemata "
                "WHERE schema_name LIKE 'dul_bench_%'"
            ))  # fmt: skip
            return {row[0] for row in rows}
    finally:
        engine.dispose()


def test_each_postgres_catch_up_is_measured_in_an_empty_schema_dropped_after() -> None:
    """A second `dul bench audit` into the same database must not find the first one's store:
    its checkpoint names a chain that is gone, so the catch-up would begin by rolling every
    event back as a reorg, inside the measured window."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (PostgreSQL runs under .ci/run)")
    before = _bench_schemas(url)
    with scratch_schema(url) as first:
        engine = sa.create_engine(first)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE checkpoint (id INTEGER)"))
            conn.execute(sa.text("INSERT INTO checkpoint VALUES (1)"))
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar()
        engine.dispose()
        assert _bench_schemas(url) - before == {schema}
        with scratch_schema(url) as second:
            engine = sa.create_engine(second)
            with engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError):
                conn.execute(sa.text("SELECT id FROM checkpoint"))
            engine.dispose()
    assert _bench_schemas(url) == before
