"""`dul bench`'s synthesized stores, at a small size: the rows it writes behind the indexer's
back must keep matching the store's schema (a new column once broke the 1M-event run), and the
figures it reads from them must come out."""

from __future__ import annotations

from pathlib import Path

from audit import bench as audit_bench


def test_the_synthesized_store_serves_provenance_and_transparency_reports(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'bench.db'}"
    audit_bench.synthesize_store(store, accesses=2_000)
    latency = audit_bench.provenance_latency(store, samples=20)
    assert latency["indexed_events"] >= 2_000
    assert latency["provenance_p95_ms"] > 0
    report = audit_bench.transparency_report_ms(
        store, accesses=2_000, cohorts_per_subject=5, measured=2, samples=5
    )
    assert report["transparency_report_ms"] > 0
