"""`dul bench [gateway|audit|patients] [--json]`: the performance figures of SPEC §5, each
measured on a private scratch stack and printed beside the target it is held against."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dul.cli.common import cli_errors, console, emit_json, exit_on_sigterm
from dul.errors import DulError


class BenchError(DulError):
    code = "bench_failed"


TARGETS: dict[str, dict[str, str]] = {
    "gateway": {
        "raw_node_tx_per_s": "- (one record per pre-signed transaction)",
        "raw_node_batched_events_per_s": "- (pre-signed transactions of the submitter's batch; "
        "both runs' records over both runs' seconds)",
        "raw_node_batched_first_events_per_s": "- (run before the single API)",
        "raw_node_batched_second_events_per_s": "- (run right after the batch API)",
        "single_events_per_s": ">= 1,500 (first request sent -> all confirmed on chain)",
        "single_answered_per_s": "- (first request sent -> last answer: no block rounding)",
        "single_confirm_tail_s": "- (last answer -> all on chain: includes the last block)",
        "batch_events_per_s": ">= 10,000 or >= 0.6 x raw_node_batched, the lower",
        "batch_vs_raw_batched": ">= 0.6 (unless batch_events_per_s >= 10,000)",
        "batch_answered_per_s": "- (first batch sent -> last answer)",
        "batch_confirm_tail_s": "- (last answer -> all on chain)",
        "single_gateway_cpu_us_per_event": "- (the gateway process's CPU, every thread)",
        "batch_gateway_cpu_us_per_event": "- (the gateway process's CPU, every thread)",
        "decision_p99_ms": "<= 25 at 500 req/s (each decision waits for one durable commit)",
        "outbox_commit_p99_ms": "- (this disk: a 10-row SQLite commit, synchronous=FULL; "
        "the floor under decision_p99_ms)",
        "decision_p99_ms_250": "- (beside 500 req/s: where the knee is)",
        "decision_p99_ms_1000": "- (beside 500 req/s: where the knee is)",
    },
    "audit": {
        "raw_fetch_decode_events_per_s": "- (one thread: fetch, then decode, page by page)",
        "sqlite_events_per_s": ">= 30,000 and >= 0.8 x raw",
        "sqlite_vs_raw": ">= 0.8",
        "postgres_events_per_s": ">= 0.6 x raw",
        "postgres_vs_raw": ">= 0.6",
        "sqlite_cpu_us_per_event": "- (indexer and fetch workers; the node's not included)",
        "catchup_rounds": "- (raw, SQLite, PostgreSQL in turn; each figure the median round's)",
        "provenance_p95_ms": "<= 20 at 1M events",
        "provenance_agreement_down_p95_ms": "- (each kind of the mix: its own p95)",
        "verify_s": "<= 60 at 1M events",
        "catchup_peak_rss_mb": "<= 500",
    },
    "patients": {
        "cohort_10k_decision_ms": "<= 50",
        "cohort_decision_p95_ms": "<= 100 and <= 2 x p50",
        "transparency_report_ms": "<= 100 at 1M events",
    },
}


def _postgres_url() -> str | None:
    """The database of the PostgreSQL catch-up: DUL_BENCH_DATABASE_URL, else the tests'."""
    import os

    return os.environ.get("DUL_BENCH_DATABASE_URL") or os.environ.get("DUL_TEST_DATABASE_URL")


def _check_postgres() -> None:
    """A PostgreSQL URL that cannot be used is one line before anything is measured."""
    from audit import bench as audit_bench

    postgres = _postgres_url()
    if postgres is None:
        return
    try:
        audit_bench.check_postgres(postgres)
    except ValueError as exc:
        raise BenchError(
            "DUL_BENCH_DATABASE_URL (or DUL_TEST_DATABASE_URL) cannot hold the PostgreSQL "
            f"catch-up: {exc}"
        ) from None


def _audit(events: int, indexed: int, store: str) -> dict[str, Any]:
    from audit import bench as audit_bench

    postgres = _postgres_url()
    results: dict[str, Any] = dict(audit_bench.catchup_rate(events, postgres_url=postgres))
    audit_bench.synthesize_store(store, accesses=indexed)
    latency = audit_bench.provenance_latency(store)
    results["provenance_p50_ms"] = latency["provenance_p50_ms"]
    results["provenance_p95_ms"] = latency["provenance_p95_ms"]
    for query, figures in latency["by_query"].items():  # the mix's kinds, their own tails
        results[f"provenance_{query}_p95_ms"] = figures["p95_ms"]
    results["indexed_events"] = latency["indexed_events"]
    verify = audit_bench.verify_time(store)
    # Signatures and invariants of every row; the chain comparison is measured in the
    # catch-up above and is not repeated for rows that were never on a chain.
    results["verify_s"] = verify["verify_offchain_s"]
    return results


def _patients(indexed: int, cohort: int, store: str) -> dict[str, Any]:
    """The 10,000-subject decision on a scratch stack, and the transparency report over the
    synthesized store (the audit part's, when it ran: its cohorts are added after its figures)."""
    from audit import bench as audit_bench
    from ledger_gateway import bench as gateway_bench

    decision = gateway_bench.cohort_decision_ms(gateway_bench.CohortBenchSizes(cohort=cohort))
    report = audit_bench.transparency_report_ms(store, accesses=indexed)
    return {
        "cohort_10k_decision_ms": decision["cohort_10k_decision_ms"],
        "cohort_decision_p95_ms": decision.get("cohort_decision_p95_ms"),
        "transparency_report_ms": report["transparency_report_ms"],
        "transparency_report_p50_ms": report.get("transparency_report_p50_ms"),
    }


@cli_errors
def bench(
    parts: Annotated[
        list[str] | None, typer.Argument(help="gateway, audit, patients (default: all built)")
    ] = None,
    single: Annotated[
        int, typer.Option(help="Requests through the single API.", min=1, max=1_000_000)
    ] = 12_000,
    batch: Annotated[
        int, typer.Option(help="Requests through the batch API.", min=1, max=1_000_000)
    ] = 40_000,
    rate: Annotated[
        float,
        typer.Option(
            help="Offered load of decision_p50/p99_ms, req/s (250 and 1,000 are measured too).",
            min=1,
            max=5_000,
        ),
    ] = 500.0,
    seconds: Annotated[
        float,
        typer.Option(help="Seconds of offered load at each rate.", min=0.1, max=600),
    ] = 10.0,
    raw_txs: Annotated[
        int,
        typer.Option(
            help="Pre-signed one-record transactions (raw_node_tx_per_s).", min=1, max=100_000
        ),
    ] = 2_000,
    raw_batched: Annotated[
        int,
        typer.Option(
            help="Records per run of pre-signed batch transactions (raw_node_batched_...).",
            min=1,
            max=1_000_000,
        ),
    ] = 40_000,
    events: Annotated[
        int, typer.Option(help="Access events on chain for the catch-up.", min=1, max=5_000_000)
    ] = 50_000,
    indexed: Annotated[
        int,
        typer.Option(
            help="Access events in the store for the query figures.", min=1, max=10_000_000
        ),
    ] = 1_000_000,
    cohort: Annotated[
        int,
        # at most the gateway's MAX_COHORT subjects per request
        typer.Option(help="Subjects named by each cohort decision (patients).", min=1, max=100_000),
    ] = 10_000,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Measure; every figure is printed beside its limit, all from the same run."""
    import tempfile
    from pathlib import Path

    from ledger_gateway import bench as gateway_bench

    chosen = parts or ["gateway", "audit", "patients"]
    unknown = set(chosen) - {"gateway", "audit", "patients"}
    if unknown:
        raise typer.BadParameter(f"unknown part(s): {', '.join(sorted(unknown))}")
    if "audit" in chosen:
        _check_postgres()
    results: dict[str, Any] = {}
    exit_on_sigterm()  # an interrupted run stops its scratch chains and services
    try:
        if "gateway" in chosen:
            sizes = gateway_bench.GatewayBenchSizes(
                single_requests=single,
                batch_requests=batch,
                offered_rate=rate,
                latency_seconds=seconds,
                raw_transactions=raw_txs,
                raw_batched_records=raw_batched,
            )
            results["gateway"] = gateway_bench.run(sizes)
        with tempfile.TemporaryDirectory(prefix="dul-bench-store-") as tmp:
            store = f"sqlite:///{Path(tmp) / 'synthesized.db'}"
            if "audit" in chosen:
                results["audit"] = _audit(events, indexed, store)
            if "patients" in chosen:
                results["patients"] = _patients(indexed, cohort, store)
    except (DulError, typer.Exit, KeyboardInterrupt):
        raise
    except Exception as exc:  # a measurement that fails is one line, never a traceback
        part = next((p for p in chosen if p not in results), "bench")
        detail = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise BenchError(f"{part} measurement failed: {type(exc).__name__}: {detail}") from None
    if json_output:
        emit_json(results)
        return
    for part, figures in results.items():
        console.print(f"[bold]{part}[/bold]")
        for key, value in figures.items():
            target = TARGETS.get(part, {}).get(key, "")
            console.print(f"  {key:<30} {value!s:>12}   {target}", highlight=False)
