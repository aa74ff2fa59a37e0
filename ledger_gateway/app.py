"""The gateway app factory: `create_app(settings)` builds everything in the lifespan, nothing at
import time, so tests and `dul gateway serve` each get their own fully wired instance."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from dul.body_limit import BodyLimit
from dul.chain.node import rpc_url
from dul.chain.rpc import AsyncRpcClient
from dul.contracts.artifacts import load
from dul.contracts.deployment import CONTRACT_NAMES, Deployment
from dul.contracts.typed_data import access_log_domain
from dul.domain import Role, slug_id
from dul.endpoints import service_identity
from dul.home import private_dir
from dul.keys import KeyStore
from ledger_gateway.api import access, agreements, break_glass, consents, datasets, health, problems
from ledger_gateway.api.deps import GatewayContext, Metrics
from ledger_gateway.api.hot import AccessHotPath
from ledger_gateway.api.middleware import RequestLog
from ledger_gateway.chain_view import ChainView
from ledger_gateway.consents import ConsentView
from ledger_gateway.lease import SubmitterLease
from ledger_gateway.migrations import migrate
from ledger_gateway.service import AccessService
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.store import OutboxSettings, SqlOutbox, make_engine
from ledger_gateway.submitter import Submitter, SubmitterSettings
from ledger_gateway.tokens import TokenStore

log = structlog.get_logger(__name__)

GC_THRESHOLDS = (10_000, 20, 20)
"""The collector's thresholds once start-up is frozen (see the lifespan)."""

SWITCH_INTERVAL_S = 0.0005
"""How long a thread may keep the GIL while another waits for it (Python's default: 5 ms).

The event loop, the outbox writer, the submitter's worker threads and the verifier threads
share one GIL. Each time the writer hands SQLite a statement (or fsyncs a commit) it lets the
GIL go, and getting it back waits until the thread holding it is forced to yield: up to the
switch interval while the event loop is busy, and a group commit takes it back after each of
its ten or so statements. At 5 ms a commit of a few rows, whose disk work is well under a
millisecond, took tens of milliseconds whenever the event loop was busy, and every decision
waits for one. The same holds the other way round: the event loop, giving the GIL up for a
signature recovery or a socket call, waited for the writer's or a worker's slice."""

METRICS_INTERVAL_S = 1.0
"""How often the outbox depth and the submitter's counts are copied into the metrics."""


async def _check_chain(
    rpc: AsyncRpcClient, view: ChainView, deployment: Deployment, gateway: str, org: bytes
) -> dict[str, bool]:
    """The packaged contracts are at the recorded addresses and our key is a gateway of `org`."""
    contracts = True
    for name in CONTRACT_NAMES:
        code = await rpc.request("eth_getCode", deployment.address(name), "latest")
        contracts &= load(name).runtime_code_matches(bytes.fromhex(str(code)[2:]))
    return {"contracts": contracts, "signer": await view.has_role(gateway, org, Role.GATEWAY)}


def create_app(settings: GatewaySettings) -> FastAPI:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        home = settings.dul_home
        deployment = Deployment.load(home.deployment)
        org = slug_id(settings.org)
        rpc = AsyncRpcClient(settings.rpc_url or rpc_url(home))
        private_dir(settings.data_dir)
        database_url = settings.effective_database_url
        await asyncio.to_thread(migrate, database_url)
        outbox = SqlOutbox(
            make_engine(database_url), OutboxSettings(max_depth=settings.outbox_limit)
        )
        await outbox.start()
        passphrase = settings.key_passphrase.get_secret_value() if settings.key_passphrase else None
        signer = KeyStore(home, passphrase=passphrase).unlock(settings.key)
        # Another worker's writes do not wake this process's submitter: look more often.
        idle_poll = 0.5 if settings.workers == 1 else max(0.02, settings.batch_latency_ms / 1000)

        def new_submitter() -> Submitter:
            submitter = Submitter(
                outbox,
                rpc,
                signer,
                access_log=deployment.address("AccessLog"),
                chain_id=deployment.chain_id,
                settings=SubmitterSettings(
                    max_batch=settings.batch_max,
                    max_delay=settings.batch_latency_ms / 1000,
                    idle_poll=idle_poll,
                    reconfirm_window_s=settings.reconfirm_window_s,
                    reconfirm_interval_s=settings.reconfirm_interval_s,
                    unrecorded_alarm_s=settings.unrecorded_alarm_s,
                ),
            )
            # the metrics feed: the submitter's latencies observed as they are recorded
            submitter.stats.submit_latency_s = metrics.latency_recorder()
            return submitter

        view = ChainView(rpc, deployment)
        registry = deployment.addresses.get("ConsentRegistry")
        first_block = int(deployment.raw.get("block", 0))
        consent_view = (
            None
            if registry is None
            else ConsentView(
                rpc,
                registry,
                org,
                first_block=first_block,
                agreements=deployment.address("AgreementRegistry"),
            )
        )
        context = GatewayContext(
            settings=settings,
            tokens=TokenStore(settings.tokens_path),
            outbox=outbox,
            access=AccessService(
                org=org,
                view=view,
                outbox=outbox,
                domain=access_log_domain(deployment.chain_id, deployment.address("AccessLog")),
                deadline_margin_s=settings.deadline_margin_s,
                max_request_lifetime_s=settings.max_request_lifetime_s,
                decisions=metrics.decisions,
                consents=consent_view,
            ),
            metrics=metrics,
            readiness={"store": True, "contracts": False, "signer": False},
            identity={
                **service_identity("gateway"),
                "org": settings.org,
                "chain_id": deployment.chain_id,
            },
        )
        app.state.context = context
        lease = SubmitterLease(outbox.engine)

        async def try_lease() -> bool:
            try:
                return await asyncio.to_thread(lease.acquire)
            except Exception as exc:  # the store is unreachable: readiness says so
                log.warning("gateway.lease_failed", error=repr(exc))
                return False

        async def lead(acquired: bool) -> None:
            """Run the submitter while this process holds the lease; wait for it otherwise."""
            waiting_logged = False
            while True:
                if acquired:
                    submitter = new_submitter()
                    context.submitter = submitter
                    await submitter.start()
                    log.info("gateway.submitter_leading", pid=os.getpid())
                    try:
                        while await asyncio.to_thread(lease.held):
                            await asyncio.sleep(settings.lease_check_s)
                    finally:
                        await submitter.stop()
                        # what it counted since the last metrics sync (up to a second of it)
                        metrics.retire_submitter(submitter)
                        context.submitter = None
                        await asyncio.to_thread(lease.release)
                elif not waiting_logged:
                    log.info("gateway.submitter_standby", pid=os.getpid())
                    waiting_logged = True
                await asyncio.sleep(settings.lease_check_s)
                acquired = await try_lease()

        async def keep_checking_chain() -> None:
            """Contracts and our key's GATEWAY role, checked for as long as we serve: a key
            whose role is revoked (or whose organization is suspended) turns /readyz false."""
            was: dict[str, bool] | None = None
            while True:
                try:
                    now = await _check_chain(rpc, view, deployment, signer.address, org)
                    context.readiness.update(now)
                    if now != was and not all(now.values()):
                        log.error("gateway.not_ready", **now, org=settings.org, key=settings.key)
                    elif now != was and was is not None:
                        log.info("gateway.chain_checks_ok", org=settings.org, key=settings.key)
                    was = now
                except Exception as exc:  # node down: readiness says so until it is back
                    log.warning("gateway.chain_check_failed", error=str(exc))
                ok = was is not None and all(was.values())
                await asyncio.sleep(settings.chain_check_interval_s if ok else 2.0)

        async def refresh_metrics() -> None:
            """Outbox depth and submitter counts, also between scrapes (/metrics refreshes too)."""
            while True:
                try:
                    await health.refresh_metrics(context)
                except Exception as exc:  # the store may be unreachable; /readyz says so
                    log.warning("gateway.metrics_refresh_failed", error=repr(exc))
                await asyncio.sleep(METRICS_INTERVAL_S)

        tasks = [
            asyncio.create_task(keep_checking_chain(), name="gateway-chain-check"),
            asyncio.create_task(
                view.follow(settings.refresh_interval_s), name="gateway-chain-view"
            ),
            asyncio.create_task(refresh_metrics(), name="gateway-metrics"),
        ]
        if consent_view is not None:  # decisions still catch up themselves; this keeps it warm
            tasks.append(
                asyncio.create_task(
                    consent_view.follow(settings.refresh_interval_s), name="gateway-consents"
                )
            )
        # the first try before serving: a lone gateway starts with its submitter running
        leader = asyncio.create_task(lead(await try_lease()), name="gateway-submitter-lease")
        await asyncio.sleep(0)
        # Everything built so far (modules, schemas, the app) lives as long as the process: out
        # of the collector's sight, a full collection no longer walks it in the middle of a
        # decision (full collections took 80-170 ms each on a loaded machine).
        gc.collect()
        gc.freeze()
        # Collections by allocation count: the default (700 net new objects) ran a young
        # collection every few requests and one of the middle generation every ~7,000
        # objects, and a 500-request batch keeps ~50,000 alive while it is decided, so they
        # walked it over and over (21-40 µs of CPU per access, measured with the collector's
        # callbacks). 10,000 keeps each pause to a few ms and the total near a quarter.
        gc.set_threshold(*GC_THRESHOLDS)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        log.info(
            "gateway.started",
            org=settings.org,
            signer=signer.address,
            database=outbox.engine.dialect.name,
        )
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            leader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leader
            await outbox.close()
            await rpc.aclose()
            log.info("gateway.stopped")

    app = FastAPI(
        title="Data-Use Ledger gateway",
        version="1",
        description="Access requests in, decisions out, every decision recorded on chain.",
        lifespan=lifespan,
        # Metrics are Prometheus at /metrics; OpenTelemetry's per-request checks cost ~5% here.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    problems.install(app)
    app.include_router(access.router)
    app.include_router(health.router)
    app.include_router(agreements.router)
    app.include_router(datasets.router)
    app.include_router(consents.router)
    app.include_router(break_glass.router)
    app.add_middleware(AccessHotPath)  # inside the request log: logged and counted the same
    app.add_middleware(RequestLog, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # before anything reads
    return app


def app_from_env() -> FastAPI:
    """`create_app` on settings from the environment: what each worker process of `dul gateway
    serve --workers N` builds (uvicorn imports it by name)."""
    return create_app(GatewaySettings())
