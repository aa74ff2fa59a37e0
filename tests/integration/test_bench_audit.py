"""`dul bench audit`'s catch-up measurement, at a small size: rounds of raw, SQLite and
PostgreSQL catch-ups on one filled chain, reduced to the median round's figures, with nothing
left behind (the chain's home and a store per round are hundreds of MB at the bench's size)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from audit import bench as audit_bench


def _run(events: int, seconds: float, **more: Any) -> dict[str, Any]:
    return {"events": events, "seconds": seconds, "cpu_s": events * 40e-6,
            "own_cpu_s": events * 20e-6, "pss_mb": 0.0, "rss_mb": 300.0, "workers": 2,
            "phases_s": {"run": seconds}, **more}  # fmt: skip


def test_the_figures_are_the_median_rounds_and_each_ratio_is_of_its_own_minute() -> None:
    measured = [
        {"raw": _run(1000, 0.04), "sqlite": _run(1000, 0.05, pss_mb=280.0),
         "postgres": _run(1000, 0.08)},  # raw 25,000/s, SQLite 20,000 (0.80), PG 12,500 (0.50)
        {"raw": _run(1000, 0.05), "sqlite": _run(1000, 0.04, pss_mb=310.0),
         "postgres": _run(1000, 0.07)},  # raw 20,000/s, SQLite 25,000 (1.25), PG 14,286 (0.71)
        {"raw": _run(1000, 0.02), "sqlite": _run(1000, 0.10, pss_mb=290.0),
         "postgres": _run(1000, 0.05, pss_mb=420.0)},  # raw 50,000/s, SQLite 10,000 (0.20)
    ]  # fmt: skip
    figures = audit_bench.catchup_figures(measured)
    assert figures["catchup_rounds"] == 3
    assert figures["raw_fetch_decode_events_per_s_rounds"] == [25_000, 20_000, 50_000]
    assert figures["sqlite_events_per_s_rounds"] == [20_000, 25_000, 10_000]
    assert figures["postgres_events_per_s_rounds"] == [12_500, 14_286, 20_000]
    assert figures["raw_fetch_decode_events_per_s"] == 25_000
    assert figures["sqlite_events_per_s"] == 20_000
    assert figures["postgres_events_per_s"] == 14_286
    # the median of each round's own ratio, not a ratio of medians from different minutes
    assert figures["sqlite_vs_raw"] == 0.8
    assert figures["postgres_vs_raw"] == 0.5
    assert figures["sqlite_phases_s"] == {"run": 0.05}  # the median run's
    assert figures["catchup_peak_rss_mb"] == 420.0  # the largest of any run
    # one round: its own figures; without PostgreSQL, no PostgreSQL keys
    one = audit_bench.catchup_figures([{"raw": _run(1000, 0.04), "sqlite": _run(1000, 0.05)}])
    assert one["sqlite_events_per_s"] == 20_000
    assert one["sqlite_vs_raw"] == 0.8
    assert not [key for key in one if key.startswith("postgres")]


def test_catchup_rate_measures_every_round_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DUL_RPC_TOKEN", "")  # set to the bench chain's own token: put back after
    # its scratch directory goes here (short: the node's IPC socket path is under it)
    scratch = Path(tempfile.mkdtemp(prefix="dulb-"))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    postgres = os.environ.get("DUL_TEST_DATABASE_URL")
    try:
        figures = audit_bench.catchup_rate(events=300, postgres_url=postgres, rounds=2)
        left = list(scratch.iterdir())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert left == []  # the chain's home and every round's store removed
    assert figures["catchup_rounds"] == 2
    assert figures["indexed_events"] >= 300
    kinds = ["raw_fetch_decode", "sqlite", *(["postgres"] if postgres else [])]
    for kind in kinds:
        rounds = figures[f"{kind}_events_per_s_rounds"]
        assert len(rounds) == 2
        assert all(rate > 0 for rate in rounds)
        assert figures[f"{kind}_events_per_s"] == min(rounds)  # the lower of two
    assert figures["sqlite_cpu_us_per_event"] > 0
    assert figures["catchup_peak_rss_mb"] > 0
