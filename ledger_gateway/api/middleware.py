"""One summary log line and metrics per request, with a request id bound for every log inside.

A plain ASGI middleware (not BaseHTTPMiddleware): it sits on the hot path of every decision.
"""

from __future__ import annotations

import random
import time
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ledger_gateway.api.deps import Metrics

log = structlog.get_logger("ledger_gateway.request")


class _Bound:
    """`log`, bound once per logging configuration. structlog's lazy proxy assembles a new
    logger on every call (`cache_logger_on_first_use` is off so a reconfiguration, e.g. a
    test's capture, is seen): ~9 µs per request for a line the default level drops. Bound
    loggers share the configured processor list, so only the level filter (the wrapper class)
    and the output (the logger factory) call for binding again."""

    def __init__(self) -> None:
        self._key: tuple[Any, Any] | None = None
        self._logger: Any = None

    def get(self) -> Any:
        config = structlog.get_config()
        key = (config["wrapper_class"], config["logger_factory"])
        if key != self._key:
            self._logger, self._key = log.bind(), key
        return self._logger


_request_log = _Bound()


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
            _request_log.get().info(
                "request",
                method=scope["method"],
                # a subject reference is a patient's pseudonym: its route's template instead
                path=path if "{subject}" in path else scope["path"],
                status=status,
                ms=round(elapsed * 1000, 2),
            )
            structlog.contextvars.unbind_contextvars("request_id")
