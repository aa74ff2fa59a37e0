"""Dependencies shared by the routers (`Annotated` aliases, as in the FastAPI template)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ledger_gateway.callers import Caller
from ledger_gateway.outbox import Outbox
from ledger_gateway.service import AccessService
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.submitter import Submitter, SubmitterStats
from ledger_gateway.tokens import Token, TokenRole, TokenStore


class ObservedLatencies(list[float]):
    """`SubmitterStats.submit_latency_s` that also feeds a histogram: the submitter appends one
    stored-to-confirmed time per mined transaction and trims the list, so only `append` sees
    every value exactly once."""

    def __init__(self, histogram: Histogram) -> None:
        super().__init__()
        self.histogram = histogram

    def append(self, value: float) -> None:
        self.histogram.observe(value)
        super().append(value)


@dataclass
class Metrics:
    """The gateway's Prometheus metrics. Request and decision metrics are updated inline;
    submitter and outbox metrics are copied from `SubmitterStats` and the outbox by
    `sync_submitter` / `queue_depth.set` (a background task of the app, and each scrape)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "dul_gateway_requests", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.decisions = Counter(
            "dul_gateway_decisions", "Access decisions", ["decision", "reason"], registry=r
        )
        self.queue_depth = Gauge(
            "dul_gateway_outbox_depth", "Operations not yet confirmed", registry=r
        )
        self.latency = Histogram(
            "dul_gateway_request_seconds", "Request latency", ["route"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )  # fmt: skip
        # --- submitter -----------------------------------------------------------------------
        self.submission_latency = Histogram(
            "dul_gateway_submission_seconds",
            "Stored-to-confirmed seconds per mined transaction (from its oldest decision)",
            registry=r,
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
        )
        self.confirmations = Counter(
            "dul_gateway_confirmations",
            "Operations settled on chain: confirmed (mined) or failed (refused by the chain)",
            ["outcome"],
            registry=r,
        )
        self.transactions_sent = Counter(
            "dul_gateway_transactions_sent", "Signed transactions sent to the node", registry=r
        )
        self.resends = Counter(
            "dul_gateway_transaction_resends",
            "Transactions re-sent at the same nonce (stuck, or the node came back)",
            registry=r,
        )
        self.reverted = Counter(
            "dul_gateway_transactions_reverted", "Mined transactions that reverted", registry=r
        )
        self.chain_reachable = Gauge(
            "dul_gateway_chain_reachable", "1 when the submitter reaches the chain node", registry=r
        )
        self.in_flight = Gauge(
            "dul_gateway_transactions_in_flight", "Transactions sent and not yet mined", registry=r
        )
        self.vanished = Counter(
            "dul_gateway_confirmations_vanished",
            "Confirmed operations whose transaction left the chain (history rewritten; sent again)",
            registry=r,
        )
        self.nonce_resyncs = Counter(
            "dul_gateway_nonce_resyncs",
            "Times the nonce allocator moved back to a nonce the chain lost",
            registry=r,
        )
        self.confirmation_alarm = Gauge(
            "dul_gateway_confirmation_alarm",
            "1 while confirmations left the chain lately (readiness degraded)",
            registry=r,
        )
        self.oldest_unrecorded = Gauge(
            "dul_gateway_oldest_unrecorded_seconds",
            "Seconds since the oldest answered operation sent to the chain and not mined yet was "
            "answered (0: none in flight)",
            registry=r,
        )
        self._seen: dict[str, int] = {}
        self._stats: SubmitterStats | None = None

    def latency_recorder(self) -> ObservedLatencies:
        """A list to put in `SubmitterStats.submit_latency_s`."""
        return ObservedLatencies(self.submission_latency)

    def _advance(self, counter: Counter, name: str, value: int) -> None:
        seen = self._seen.get(name, 0)
        if value > seen:
            counter.inc(value - seen)
        self._seen[name] = value

    def sync_submitter(self, submitter: Submitter) -> None:
        """Copy the submitter's cumulative counts into the counters, and its gauges."""
        stats: SubmitterStats = submitter.stats
        if stats is not self._stats:
            # A new submitter counts from 0: all it counted so far is new (comparing values
            # lost whatever it counted up to the old one's last figure).
            self._stats, self._seen = stats, {}
        self._advance(self.confirmations.labels(outcome="confirmed"), "confirmed", stats.confirmed)
        self._advance(self.confirmations.labels(outcome="failed"), "failed", stats.failed)
        self._advance(self.transactions_sent, "sent", stats.transactions_sent)
        self._advance(self.resends, "resends", stats.resends)
        self._advance(self.reverted, "reverted", stats.reverted_transactions)
        self._advance(self.vanished, "vanished", stats.vanished_operations)
        self._advance(self.nonce_resyncs, "nonce_resyncs", stats.nonce_resyncs)
        self.chain_reachable.set(1 if stats.chain_reachable else 0)
        self.in_flight.set(submitter.in_flight)
        self.confirmation_alarm.set(0 if submitter.confirmation_alarm() is None else 1)
        self.oldest_unrecorded.set(round(submitter.oldest_unrecorded_s(), 3))

    def retire_submitter(self, submitter: Submitter) -> None:
        """The last copy of a submitter that stopped (its process lost the lease, or stops):
        what it counted since the previous sync is counted too, and it has nothing in flight
        any more (the process that leads now reports its own)."""
        self.sync_submitter(submitter)
        self.in_flight.set(0)
        self.oldest_unrecorded.set(0)


@dataclass
class GatewayContext:
    """Everything the routers use, built once per app in the lifespan."""

    settings: GatewaySettings
    tokens: TokenStore
    outbox: Outbox
    access: AccessService
    metrics: Metrics
    readiness: dict[str, bool] = field(default_factory=dict)
    submitter: Submitter | None = None
    """Read by /readyz (chain reachable) and /metrics; None in tests that build no submitter."""
    identity: dict[str, Any] = field(default_factory=dict)
    """What /healthz says this process is (`dul.endpoints.service_identity`, org, chain id)."""


async def get_context(request: Request) -> GatewayContext:
    # async: a plain def dependency would hop to a worker thread on every request
    context: GatewayContext = request.app.state.context
    return context


ContextDep = Annotated[GatewayContext, Depends(get_context)]


async def get_token(
    context: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> Token:
    secret = None
    if authorization and authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()
    return context.tokens.authenticate(secret)


TokenDep = Annotated[Token, Depends(get_token)]


# --- callers: one dependency per role; services check the organization against what a call
# touches (`Caller.require_holder` / `require_party`), never the routes by hand.


async def get_caller(token: TokenDep) -> Caller:
    return Caller.of(token)


async def get_steward_caller(token: TokenDep) -> Caller:
    return Caller.of(token, TokenRole.STEWARD)


async def get_access_caller(context: ContextDep, token: TokenDep) -> Caller:
    context.access.authorize(token)  # an access service of this gateway's organization only
    return Caller.of(token, TokenRole.ACCESS_SERVICE)


CallerDep = Annotated[Caller, Depends(get_caller)]
"""Any valid token (reads the caller must be a party to)."""
StewardCallerDep = Annotated[Caller, Depends(get_steward_caller)]
"""A steward token; what it touches must be its organization's."""
AccessCallerDep = Annotated[Caller, Depends(get_access_caller)]
"""An access-service token of this gateway's organization."""
