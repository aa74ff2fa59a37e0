"""The submitter's counts reach the gateway's metrics exactly once, across a lease change: what
a submitter counted after the last periodic sync is counted when it stops (its process lost the
lease), and the next submitter's counts are added from zero."""

from __future__ import annotations

from dataclasses import dataclass, field

from ledger_gateway.api.deps import Metrics
from ledger_gateway.submitter import SubmitterStats


@dataclass
class StubSubmitter:
    """What `Metrics.sync_submitter` reads of a submitter."""

    stats: SubmitterStats = field(default_factory=SubmitterStats)
    in_flight: int = 0
    oldest_s: float = 0.0

    def confirmation_alarm(self) -> str | None:
        return None

    def oldest_unrecorded_s(self) -> float:
        return self.oldest_s


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_counts_since_the_last_sync_survive_the_loss_of_the_lease() -> None:
    metrics = Metrics()
    first = StubSubmitter(in_flight=3, oldest_s=12.5)
    first.stats.confirmed, first.stats.transactions_sent = 5, 2
    metrics.sync_submitter(first)  # type: ignore[arg-type]
    assert _value(metrics, "dul_gateway_confirmations_total", outcome="confirmed") == 5
    assert _value(metrics, "dul_gateway_transactions_in_flight") == 3
    assert _value(metrics, "dul_gateway_oldest_unrecorded_seconds") == 12.5

    # counted after the last periodic sync, then the lease is lost and the submitter stops
    first.stats.confirmed, first.stats.transactions_sent, first.stats.failed = 9, 3, 1
    metrics.retire_submitter(first)  # type: ignore[arg-type]
    assert _value(metrics, "dul_gateway_confirmations_total", outcome="confirmed") == 9
    assert _value(metrics, "dul_gateway_confirmations_total", outcome="failed") == 1
    assert _value(metrics, "dul_gateway_transactions_sent_total") == 3
    assert _value(metrics, "dul_gateway_transactions_in_flight") == 0
    assert _value(metrics, "dul_gateway_oldest_unrecorded_seconds") == 0  # another leads now

    # the lease comes back: a new submitter counts from zero, its counts are added
    second = StubSubmitter()
    second.stats.confirmed, second.stats.transactions_sent = 4, 1
    metrics.sync_submitter(second)  # type: ignore[arg-type]
    metrics.sync_submitter(second)  # type: ignore[arg-type]  # a second sync adds nothing
    assert _value(metrics, "dul_gateway_confirmations_total", outcome="confirmed") == 13
    assert _value(metrics, "dul_gateway_transactions_sent_total") == 4
