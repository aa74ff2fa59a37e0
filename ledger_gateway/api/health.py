"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ledger_gateway.api.deps import ContextDep

router = APIRouter(tags=["operations"])

STALE_AFTER_S = 5.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(context: ContextDep) -> JSONResponse:
    """Chain reachable, contracts deployed, store writable: 200, else 503 naming what is not."""
    view = context.access.view
    checks = {"chain": time.monotonic() - view.last_refresh < STALE_AFTER_S, **context.readiness}
    try:
        depth = await context.outbox.depth()
        context.metrics.queue_depth.set(depth)
    except Exception:  # an unreachable store is exactly what readiness reports
        checks["store"] = False
        depth = -1
    ready = all(checks.values())
    return JSONResponse(
        {"ready": ready, "checks": checks, "outbox_depth": depth},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )


@router.get("/metrics")
async def metrics(context: ContextDep) -> Response:
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
