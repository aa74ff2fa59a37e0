"""One summary log line and metrics per request, with a request id bound for every log inside.

A plain ASGI middleware (not BaseHTTPMiddleware): it sits on the hot path of every decision.
"""

from __future__ import annotations

import random
import time

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger_gateway.api.deps import Metrics

log = structlog.get_logger("ledger_gateway.request")


class RequestLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        """The metrics' children per (method, route, status): `labels` costs more than the
        observation itself."""

    def _count(self, method: str, path: str, status: int, elapsed: float) -> None:
        key = (method, path, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.metrics.requests.labels(method, path, str(status)),
                self.metrics.latency.labels(path),
            )
        children[0].inc()
        children[1].observe(elapsed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = f"{random.getrandbits(64):016x}"  # to find a request's logs: not a secret

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self._count(scope["method"], path, status, elapsed)
            log.info(
                "request",
                method=scope["method"],
                # a subject reference is a patient's pseudonym: its route's template instead
                path=path if "{subject}" in path else scope["path"],
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")
