"""Dependencies shared by the routers (`Annotated` aliases, as in the FastAPI template)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ledger_gateway.outbox import Outbox
from ledger_gateway.service import AccessService
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.tokens import Token, TokenStore


@dataclass
class Metrics:
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


@dataclass
class GatewayContext:
    """Everything the routers use, built once per app in the lifespan."""

    settings: GatewaySettings
    tokens: TokenStore
    outbox: Outbox
    access: AccessService
    metrics: Metrics
    readiness: dict[str, bool] = field(default_factory=dict)


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
