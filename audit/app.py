"""The audit REST service (`dul audit serve`): the regulator's read-only view of the store.

    GET /v1/provenance/{kind}/{id}   ?direction=up|down|both &format=json|prov-json|fhir &limit=
    GET /v1/verify                   ?chain=true|false &signatures=true|false
    GET /v1/reports/agreements/{id}
    GET /v1/subjects/{ref}/accesses  the patient transparency report (`audit.transparency`)
    GET /v1/organizations, /v1/agreements, /v1/accesses   the console's front door, paged
                                     (`audit.directory`)
    GET /healthz, GET /readyz       liveness; the indexer's health and lag (`audit.health`)
    GET /metrics                     open (the metrics carry routes and codes, never ids)
    GET /auth/config|me, POST /auth/token   the console's sign-in (`audit.signin`)
    GET /, GET /console/...          the web console (`audit.console`), which reads only the
                                     API above

Every `/v1` path needs `Authorization: Bearer <credential>` (`audit.auth`: an API token, an
OpenID Connect access token, or a patient token), and answers what the caller's role may see
(`audit.scope`): 401 without a valid credential (`credential_missing`, `credential_invalid`,
`credential_expired`, `credential_revoked`), 403 `out_of_scope` outside it (404
`subject_not_found` for another hospital's patient: that it exists must not leak); a provenance
graph is cut at what the caller may see, the cut listed in `cut`.

Errors are RFC 9457 problem JSON with a stable `code`: a malformed id or parameter 422
(`malformed_id`, `validation_error`), an unknown id 404 (`<kind>_not_found`), the store or the
node unreachable 503 (`store_unavailable`, `node_unavailable`). Nothing a client sends can
cause a 500: the catch-all handler exists for bugs only and logs them.

The service opens the store read-only (SQLite `mode=ro`; on PostgreSQL grant the role SELECT
only): it never writes, so it cannot be the editor that `verify` looks for. Nothing is created
at import time; `create_app(settings)` builds everything and the lifespan disposes of it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import structlog
from fastapi import Depends, FastAPI, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from starlette.exceptions import HTTPException as StarletteHTTPException

from audit.auth import Authenticator
from audit.cohorts import close_sources, open_sources
from audit.cohorts import read_only_engine as read_only_engine  # the API and CLI read with it
from audit.console import mount_console
from audit.directory import (
    MAX_LIMIT,
    AccessPage,
    AgreementPage,
    ListedStatus,
    OrganizationPage,
)
from audit.directory import accesses as list_accesses
from audit.directory import agreements as list_agreements
from audit.directory import organizations as list_organizations
from audit.exports import block_times, fhir_json, graph_blocks, prov_json
from audit.health import IndexerHealth, StoreCollector, health_of
from audit.indexer import IndexerError
from audit.provenance import (
    AuditQueryError,
    Direction,
    Graph,
    Kind,
    MalformedIdError,
    parse_id,
    provenance,
    store_errors,
)
from audit.reports import AgreementReport, agreement_report
from audit.scope import Caller, CallerRole, Scope, require_not_patient
from audit.settings import AuditSettings
from audit.shared_runs import SharedRuns
from audit.signin import signin_router
from audit.transparency import SubjectReport, subject_report
from audit.verify import VerifyReport, verify_store
from dul.body_limit import BodyLimit
from dul.chain.rpc import NodeError, NodeUnavailableError, RpcClient
from dul.endpoints import service_identity
from dul.errors import DulError
from dul.openapi_problems import document_problems

log = structlog.get_logger("audit.app")

PROBLEM = "application/problem+json"


@dataclass
class AuditState:
    settings: AuditSettings
    engine: Engine
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    auth: Authenticator
    refused: Counter
    verifies: SharedRuns[VerifyReport] = field(default_factory=SharedRuns)

    def deployment(self) -> tuple[int | None, dict[str, str] | None]:
        """The manifest's deployment block (where verify starts) and contract addresses (what
        the store must be the index of), when there is one."""
        from dul.contracts.deployment import Deployment  # only needed by verify

        try:
            deployment = Deployment.load(self.settings.resolved_deployment_path())
        except (DulError, OSError, ValueError, KeyError):
            return None, None
        block = deployment.raw.get("block")
        return None if block is None else int(block), dict(deployment.addresses)


PageLimit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"rows at most (1-{MAX_LIMIT})")]
PageCursor = Annotated[
    str | None, Query(max_length=40, description="`next_cursor` of the previous page")
]


def _state(request: Request) -> AuditState:
    state: AuditState = request.app.state.audit
    return state


StateDep = Annotated[AuditState, Depends(_state)]
_bearer = HTTPBearer(auto_error=False, description="API token, OIDC access token or patient token")


def _caller(
    request: Request,
    state: StateDep,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> Caller:
    """The authenticated caller of a `/v1` request (401/403/503 problem JSON otherwise)."""
    try:
        caller = state.auth.authenticate(request.headers.get("authorization"))
    except DulError as exc:
        state.refused.labels(exc.code).inc()
        raise
    request.state.caller = caller  # for the request's log line
    return caller


CallerDep = Annotated[Caller, Depends(_caller)]


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:dul:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


_TITLES = {
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    422: "Invalid request",
    503: "Service unavailable",
}


MAX_BODY_BYTES = 2**20

PROBLEM_CODES: dict[int, tuple[str, ...]] = {
    400: ("bad_request",),
    401: ("credential_missing", "credential_invalid", "credential_expired", "credential_revoked",
          "oidc_not_configured"),
    403: ("out_of_scope", "role_missing"),
    404: ("not_found", "agreement_not_found", "subject_not_found"),
    409: ("ambiguous_access",),
    413: ("body_too_large",),
    422: ("validation_error", "malformed_id", "malformed_kind", "malformed_cursor",
          "body_too_deep"),
    500: ("internal_error", "audit_error"),
    503: ("store_unavailable", "node_unavailable", "rpc_error", "range_refused", "indexer_error",
          "identity_provider_unavailable", "token_store_unavailable"),
}  # fmt: skip
"""The problem codes the audit API answers, by status (documented in its OpenAPI)."""


def _install_problems(app: FastAPI) -> None:
    document_problems(app, PROBLEM_CODES, public_paths=("/healthz", "/metrics"))

    @app.exception_handler(AuditQueryError)
    async def audit_error(request: Request, exc: AuditQueryError) -> JSONResponse:
        response = problem(exc.status, exc.code, _TITLES.get(exc.status, "Error"), exc.message)
        if exc.status == 401:  # RFC 6750 §3
            error = "" if exc.code == "credential_missing" else ', error="invalid_token"'
            response.headers["WWW-Authenticate"] = f'Bearer realm="dul-audit"{error}'
        return response

    @app.exception_handler(NodeError)
    @app.exception_handler(IndexerError)
    async def node_error(request: Request, exc: IndexerError | NodeError) -> JSONResponse:
        code = exc.code if isinstance(exc, NodeUnavailableError) else "node_unavailable"
        response = problem(503, code, "Service unavailable", f"the chain node: {exc.message}")
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(first['loc'])}: {first['msg']}"
        return problem(422, "validation_error", "Invalid request", detail, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.exception("audit.internal_error", path=request.url.path)
        return problem(500, "internal_error", "Internal error", "an internal error was logged")


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", "unmatched"))


def create_app(settings: AuditSettings | None = None) -> FastAPI:
    """The audit service on the store of `settings` (default: `AuditSettings()` from env)."""
    settings = settings or AuditSettings()
    auth = Authenticator(settings)  # here, not in the lifespan: a misconfiguration fails at once
    identity = service_identity("audit")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = read_only_engine(settings.resolved_database_url())
        registry = CollectorRegistry()
        registry.register(StoreCollector(engine))
        app.state.audit = AuditState(
            settings=settings,
            engine=engine,
            registry=registry,
            requests=Counter(
                "dul_audit_http_requests_total", "Audit API requests",
                ["route", "status"], registry=registry,
            ),
            latency=Histogram(
                "dul_audit_http_request_seconds", "Audit API latency", ["route"],
                registry=registry,
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 30, 120),
            ),
            auth=auth,
            refused=Counter(
                "dul_audit_auth_refused_total", "Credentials refused, by problem code",
                ["code"], registry=registry,
            ),
        )  # fmt: skip
        log.info(
            "audit.serving", store=make_url(settings.resolved_database_url()).render_as_string()
        )
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="Data-Use Ledger audit",
        version="1",
        description="Provenance, integrity verification and compliance reports for regulators.",
        lifespan=lifespan,
    )
    _install_problems(app)

    @app.middleware("http")
    async def summary(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            response = await call_next(request)
            seconds = time.perf_counter() - started
            route = _route_of(request)
            state: AuditState | None = getattr(request.app.state, "audit", None)
            if state is not None:
                state.requests.labels(route, str(response.status_code)).inc()
                state.latency.labels(route).observe(seconds)
            # Who read what is itself worth a trail: the role and the credential's name (a
            # token's name, an OIDC `sub`, a patient token's signing steward), never the secret.
            caller: Caller | None = getattr(request.state, "caller", None)
            who = (
                {}
                if caller is None
                else {
                    "caller": f"{caller.role.value}:{caller.via}",
                    "caller_name": caller.name,
                }
            )
            log.info("audit.request", method=request.method, route=route,
                     status=response.status_code, ms=round(seconds * 1000, 2), **who)  # fmt: skip
        response.headers["x-request-id"] = request_id
        return response

    @app.get("/healthz", tags=["health"])
    def healthz(state: StateDep) -> dict[str, Any]:
        """Liveness, with what the store says (a regulator's first question: how far?), and
        which process this is (`service`, `instance`: `dul up` checks it started it)."""
        try:
            with store_errors(), state.engine.connect() as conn:
                row = conn.execute(text("SELECT block_number FROM checkpoint")).first()
        except AuditQueryError as exc:
            return {"status": "ok", **identity, "store": "unavailable", "detail": exc.message}
        checkpoint = None if row is None else int(row[0])
        return {"status": "ok", **identity, "store": "ok", "checkpoint": checkpoint}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=IndexerHealth,
        responses={503: {"model": IndexerHealth, "description": "behind or failing"}},
    )
    def readyz(state: StateDep) -> JSONResponse:
        """Ready when the indexer keeps up: no quarantined event, and the checkpoint within
        `index_behind_blocks` / `index_behind_s` of the head; else 503 naming why."""
        health = health_of(state.settings, state.engine)
        return JSONResponse(health.model_dump(), status_code=200 if health.ready else 503,
                            headers={} if health.ready else {"Retry-After": "5"})  # fmt: skip

    @app.get("/metrics", tags=["health"])
    def metrics(state: StateDep) -> Response:
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get(
        "/v1/provenance/{kind}/{item_id:path}",
        tags=["provenance"],
        response_model=Graph,
        responses={
            200: {"content": {"application/fhir+json": {}}},
            404: {"description": "unknown id"},
            409: {"description": "a request id naming accesses under several agreements"},
            422: {"description": "malformed id"},
            503: {"description": "store unavailable"},
        },
    )
    def get_provenance(
        state: StateDep,
        caller: CallerDep,
        kind: str,
        item_id: str,
        direction: Direction = Direction.BOTH,
        format: Annotated[
            Literal["json", "prov-json", "fhir"], Query(description="graph JSON, PROV-JSON or FHIR")
        ] = "json",
        limit: Annotated[int, Query(ge=1, le=1000, description="neighbours per node")] = 100,
    ) -> Any:
        """The provenance graph of one agreement, dataset, access, artifact (released result),
        subject or organization; every node and edge with its chain reference, cut at what
        the caller may see."""
        require_not_patient(caller, "provenance graphs")
        try:
            parsed = Kind(kind)
        except ValueError:
            raise MalformedIdError(
                f"{kind[:40]!r} is not a kind (one of {', '.join(k.value for k in Kind)})",
                code="malformed_kind",
            ) from None
        scope = Scope(caller)
        graph = provenance(
            state.engine, parsed, item_id, direction=direction, limit=limit,
            consent_lag=state.settings.consent_lag_s,
            visibility=None if scope.everything else scope,
        )  # fmt: skip
        if format == "prov-json":
            return Response(prov_json(graph), media_type="application/json")
        if format == "fhir":
            times = block_times(state.engine, graph_blocks(graph))
            return Response(fhir_json(graph, times), media_type="application/fhir+json")
        return graph

    @app.get("/v1/verify", tags=["verify"], response_model=VerifyReport)
    def get_verify(
        state: StateDep,
        caller: CallerDep,
        chain: Annotated[bool, Query(description="re-read the chain and compare")] = True,
        signatures: Annotated[bool, Query(description="recompute every signature")] = True,
    ) -> VerifyReport:
        """Re-reads the chain and compares it with the store, recomputes every signature and
        re-checks every agreement invariant; `ok` is false when anything is off. An
        organization gets the verdict and the counts, and the unreviewed break-glass accesses
        of its own agreements; the findings and everyone's cases are listed to regulators."""
        require_not_patient(caller, "verify")

        def run() -> VerifyReport:
            rpc: RpcClient | None = None
            if chain:
                try:
                    url = state.settings.resolved_rpc_url()
                except DulError as exc:
                    raise NodeUnavailableError(exc.message) from None
                rpc = RpcClient(url, timeout=state.settings.request_timeout)
            start_block, contracts = state.deployment()
            sources = open_sources(state.settings.cohort_sources)
            try:
                return verify_store(
                    state.engine, rpc, start_block=start_block, chain=chain,
                    deployment=contracts, signatures=signatures,
                    consent_lag=state.settings.consent_lag_s,
                    max_lag_blocks=state.settings.index_behind_blocks,
                    max_lag_s=state.settings.index_behind_s, cohort_sources=sources,
                )  # fmt: skip
            finally:
                close_sources(sources)
                if rpc is not None:
                    rpc.close()

        # callers asking while the same verify runs share it (every console polls this)
        report = state.verifies.run((chain, signatures), run)
        if caller.role == CallerRole.REGULATOR:
            return report
        # the verdict and the counts; of the cases behind them, only the caller's own
        scope = Scope(caller)
        with store_errors(), state.engine.connect() as conn:
            cases = [c for c in report.break_glass_unreviewed
                     if scope.allows(conn, f"agreement:{c.agreement_id}")]  # fmt: skip
        update: dict[str, Any] = {"findings": [], "break_glass_unreviewed": cases}
        if report.findings:
            update["notes"] = [*report.notes, f"{report.findings_total} finding(s) over the "
                               "whole ledger: listed to regulators only"]  # fmt: skip
        return report.model_copy(update=update)

    @app.get("/v1/reports/agreements/{agreement_id}", tags=["reports"])
    def get_report(state: StateDep, caller: CallerDep, agreement_id: str) -> AgreementReport:
        """The compliance report of one agreement version (a regulator's, or a party's)."""
        require_not_patient(caller, "agreement reports")
        report = agreement_report(state.engine, agreement_id)  # 422 / 404 first
        scope = Scope(caller)
        if not scope.everything:
            with store_errors(), state.engine.connect() as conn:
                scope.check_root(conn, f"agreement:{report.agreement_id}")
        return report

    @app.get(
        "/v1/subjects/{ref}/accesses",
        tags=["subjects"],
        response_model=SubjectReport,
        responses={422: {"description": "malformed subject reference"},
                   503: {"description": "store unavailable"}},
    )  # fmt: skip
    def get_subject_accesses(
        state: StateDep,
        caller: CallerDep,
        ref: str,
        limit: Annotated[
            int, Query(ge=1, le=100_000, description="accesses at most, oldest first")
        ] = 10_000,
    ) -> Response:
        """The patient transparency report: every access whose cohort included this subject
        reference, each with its Merkle inclusion proof against the root on chain, every
        authorization code issued or redeemed for it, and its consents with their history.
        An unknown subject gets an empty report. Open to a regulator (everything), the
        subject's hospital and the patient (a patient token for this reference): theirs hold the
        hospital's own records only."""
        subject = parse_id(Kind.SUBJECT, ref)
        scope = Scope(caller)
        visible = True
        if not scope.everything:
            with store_errors(), state.engine.connect() as conn:
                visible = scope.check_subject_report(conn, subject)
        report = subject_report(
            state.engine, subject, limit=limit, empty=not visible,
            holder=None if scope.everything else caller.org,
        )  # fmt: skip
        return Response(report.model_dump_json(), media_type="application/json")

    @app.get("/v1/organizations", tags=["directory"], response_model=OrganizationPage)
    def get_organizations(
        state: StateDep,
        caller: CallerDep,
        limit: PageLimit = 50,
        cursor: PageCursor = None,
    ) -> OrganizationPage:
        """The data space's organizations in the order they joined (an organization's
        credential: its own only)."""
        require_not_patient(caller, "the directory")
        return list_organizations(state.engine, caller, limit, cursor)

    @app.get("/v1/agreements", tags=["directory"], response_model=AgreementPage)
    def get_agreements(
        state: StateDep,
        caller: CallerDep,
        status: Annotated[
            ListedStatus | None,
            Query(
                description="only this status (EXPIRED: past the window's end, as the chain "
                "judges it at the newest indexed block)"
            ),
        ] = None,
        limit: PageLimit = 50,
        cursor: PageCursor = None,
    ) -> AgreementPage:
        """Agreement versions newest first, with their status and quota use (an
        organization's credential: those it is a party to)."""
        require_not_patient(caller, "the agreement list")
        return list_agreements(state.engine, caller, status, limit, cursor)

    @app.get("/v1/accesses", tags=["directory"], response_model=AccessPage)
    def get_accesses(
        state: StateDep,
        caller: CallerDep,
        limit: PageLimit = 50,
        cursor: PageCursor = None,
    ) -> AccessPage:
        """Access decisions newest first, granted and denied with the reason (an
        organization's credential: those under its agreements)."""
        require_not_patient(caller, "the access list")
        return list_accesses(state.engine, caller, limit, cursor)

    app.include_router(signin_router(_state, _caller))
    mount_console(app)  # after the API routes: `/v1/...` keeps its own answers
    # The API reads; only sign-in posts a small form. Refused before anything reads it.
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    return app
