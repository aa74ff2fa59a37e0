"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ledger_gateway.api.deps import ContextDep, GatewayContext

log = structlog.get_logger(__name__)

router = APIRouter(tags=["operations"])

STALE_AFTER_S = 3.0
"""The chain view must have refreshed within this long (or 10 refresh intervals, if longer)."""


def stale_after(context: GatewayContext) -> float:
    return max(STALE_AFTER_S, 10 * context.settings.refresh_interval_s)


async def refresh_metrics(context: GatewayContext) -> int:
    """Bring the submitter and outbox metrics up to date; returns the outbox depth."""
    if context.submitter is not None:
        context.metrics.sync_submitter(context.submitter)
    depth = await context.outbox.depth()
    context.metrics.queue_depth.set(depth)
    return depth


@router.get("/healthz")
async def healthz(context: ContextDep) -> dict[str, Any]:
    """The process is up, and which one: `service`, `instance` (`dul.endpoints`), its
    organization and chain id (`dul up` checks it is the process it started)."""
    return {"status": "ok", **context.identity}


@router.get("/readyz")
async def readyz(context: ContextDep) -> JSONResponse:
    """Chain reachable (the chain view refreshed lately and the submitter reaches the node),
    contracts deployed, signer authorized, store writable, submitter running: 200, else 503
    with Retry-After, naming what is not. `status` is `degraded` (still 200) with the reasons
    in `degraded` while something needs an operator's eye: confirmations that left the chain,
    answered operations the chain refused to record, answered operations the chain has not
    mined long after they were sent."""
    age = time.monotonic() - context.access.view.last_refresh
    submitter = context.submitter
    reachable = submitter is None or submitter.stats.chain_reachable
    checks = {"chain": age < stale_after(context) and reachable, **context.readiness}
    detail: dict[str, Any] = {
        "chain_view_age_s": round(min(age, 1e9), 3),
        # one worker process of those sharing the outbox holds the submitter lease
        "submitter_lease": "held" if submitter is not None else "standby",
    }
    degraded: dict[str, str] = {}
    if submitter is not None:
        alarm = submitter.confirmation_alarm()
        if alarm is not None:
            degraded["confirmations_vanished"] = alarm
        refused = submitter.refusal_alarm()
        if refused is not None:
            degraded["operations_refused"] = refused
        unrecorded = submitter.unrecorded_alarm()
        if unrecorded is not None:
            degraded["operations_not_on_chain"] = unrecorded
        task = submitter.task
        checks["submitter"] = task is not None and not task.done()
        detail |= {
            "chain_reachable": submitter.stats.chain_reachable,
            "in_flight": submitter.in_flight,
            "last_error": submitter.stats.last_error,
        }
    try:
        depth = await refresh_metrics(context)
    except Exception:  # an unreachable store is exactly what readiness reports
        checks["store"] = False
        depth = -1
    ready = all(checks.values())
    status = "not_ready" if not ready else "degraded" if degraded else "ready"
    body = {"ready": ready, "status": status, "degraded": degraded, "checks": checks}
    return JSONResponse(
        {**body, "outbox_depth": depth, **detail},
        status_code=200 if ready else 503,
        headers=None if ready else {"Retry-After": "1"},
    )


@router.get("/metrics")
async def metrics(context: ContextDep) -> Response:
    try:
        await refresh_metrics(context)
    except Exception as exc:  # a scrape still answers; the depth gauge keeps its last value
        log.warning("metrics.refresh_failed", error=repr(exc))
    return Response(generate_latest(context.metrics.registry), media_type=CONTENT_TYPE_LATEST)
