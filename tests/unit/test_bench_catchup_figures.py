"""`dul bench audit`'s catch-up figures from rounds of measurements: each rate the median round's,
each ratio of its own minute (the measurement itself runs in
tests/integration/test_bench_gateway.py, at a tiny size)."""

from __future__ import annotations

from typing import Any

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
