"""The patient page's server: the page's files and a small API that does exactly what the page
needs for the one patient a patient token names, and nothing else.

    GET  /                         the page (index.html); /page/… its script and stylesheet
    GET  /page/proof.js            the audit console's inclusion-proof check (the same file)
    GET  /page/vendor/ethers.min.js  ethers from the repository's node_modules (npm, pinned)
    GET  /api/session              who signed in, the EIP-712 domain the page signs in, the key
                                   registered for the patient, and what codes may be issued for
    GET  /api/report               the transparency report (the audit service, with the
                                   patient's own token)
    GET  /api/consents             the patient's consents as the hospital's gateway has them now,
                                   each with the key whose signature may withdraw it (withdraw_key)
    POST /api/consents/typed-data  the EIP-712 ConsentGrant of the consent the patient chose, as
                                   a wallet signs it (eth_signTypedData_v4 JSON)
    POST /api/consents             the patient's signed ConsentGrant, relayed
    POST /api/consents/{consent_id}/withdraw   the patient's signed ConsentWithdrawal, relayed
    POST /api/codes                the patient's signed Authorization, relayed
    POST /api/codes/{code_hash}/revoke   the patient's signed AuthorizationRevocation, relayed
    POST /api/qr                   a one-time code drawn as a QR code (SVG), kept nowhere
    GET  /healthz

Every `/api` path needs `Authorization: Bearer dulpt_…`, a patient token signed by an active
steward of this page's hospital (checked on chain as the audit service does). Failed sign-ins
per client, codes per patient token and per client, and the other signed changes relayed
(consents given or withdrawn, codes cancelled) per patient token are rate-limited: 429
`rate_limited` with Retry-After (`ledger_gateway.patient_page.limits`). The subject is the
token's: no path takes another. The page's server talks to the hospital's gateway with a
STEWARD token of its own; that token lets it relay signed transactions and read consents, and
signs nothing: every change a patient makes is signed in the browser with their own key and
checked on chain against the key the hospital registered for them.
"""

# No `from __future__ import annotations`: the routes' dependencies are closures.
import contextlib
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Annotated, Any

import httpx
import segno
import structlog
from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from audit.auth import PatientVerifier, UnauthenticatedError
from audit.console import STATIC as CONSOLE_STATIC
from dul.body_limit import BodyLimit
from dul.chain.rpc import NodeUnavailableError, RpcClient
from dul.chain.rpc_auth import rpc_token
from dul.consent_terms import ConsentTerms
from dul.contracts.bindings import event, function
from dul.contracts.typed_data import ConsentGrant, consent_domain
from dul.domain import Scenario, Tier, slug_id
from dul.endpoints import service_identity
from dul.errors import ConfigError, DulError
from dul.patient_tokens import PatientToken, PatientTokenError
from ledger_gateway.api.problems import http_problem, problem
from ledger_gateway.patient_page.assets import find_ethers
from ledger_gateway.patient_page.limits import PageLimits, RateLimitedError
from ledger_gateway.patient_page.settings import (
    GRANT_SIGNATURE_S,
    GRANTABLE_SCENARIOS,
    MAX_CODE_LIFETIME_S,
    MAX_CONSENT_YEARS,
    PatientPageSettings,
)

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
HEX32 = r"^0x[0-9a-fA-F]{64}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){3}$")
MAX_BODY_BYTES = 64 * 1024
SERVER_OPTIONS: dict[str, Any] = {"proxy_headers": False}
"""How uvicorn serves the page: the client is the TCP peer. uvicorn's default trusts
X-Forwarded-For from any 127.0.0.1 peer, so a local client (or one behind a local proxy that
passes the header on) would name its own address: sign-in failures and codes spread over made-up
addresses, or counted against a patient's."""
_SUBJECT_KEY_OF = function("ConsentRegistry", "subjectKeyOf")
_AUTHORIZATION = function("ConsentRegistry", "authorization")
_NEXT_CONSENT_ID = function("ConsentRegistry", "nextConsentId")
_KEY_REGISTERED = event("ConsentRegistry", "SubjectKeyRegistered")
ZERO_ADDRESS = "0x" + "00" * 20
YEAR_S = 365 * 86_400

# Same origin only, no inline script or style: the page's own files and its own API. Set on every
# answer (`SecurityHeaders`): the page is reachable as `/` and as `/page/index.html`.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]


class SecurityHeaders:
    """`SECURITY_HEADERS` on every answer, whichever route or mount gave it (an answer's own
    Cache-Control, e.g. the signing library's, is kept)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in _HEADERS if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


class PageError(DulError):
    status = 502
    code = "upstream_error"


# --------------------------------------------------------------------------- models


class Offer(BaseModel):
    """What a patient may issue a one-time code for: one dataset of an active agreement of the
    hospital whose consent policy is the patient's authorization."""

    agreement_id: str
    grantee: str = Field(description="the organization the code is for (readable slug)")
    grantee_id: str
    scenario: str
    scenario_value: int
    tier: str
    tier_value: int
    dataset: str
    dataset_id: str
    field_mask: str = Field(description="decimal: a uint256 does not fit a JSON number")
    fields: list[str]
    valid_until: int


class Session(BaseModel):
    subject: str
    holder: str
    holder_id: str
    expires_at: int = Field(description="the patient token's expiry (unix seconds)")
    chain_id: int
    consent_registry: str
    subject_key: str | None = Field(description="the key registered for the patient, if any")
    offers: list[Offer]
    max_code_lifetime_s: int = MAX_CODE_LIFETIME_S


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deadline: int = Field(ge=0, lt=2**64)
    signature: str = Field(pattern=SIGNATURE)


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    agreement_id: str = Field(pattern=HEX32)
    dataset_id: str = Field(pattern=HEX32)
    code_hash: str = Field(pattern=HEX32)
    expires_at: int = Field(ge=0, lt=2**64)
    multi_use: bool = Field(False, description="true: usable until it expires; false: once")
    signature: str = Field(pattern=SIGNATURE)


GrantableScenario = Annotated[str, Field(pattern="^(" + "|".join(GRANTABLE_SCENARIOS) + ")$")]


class ConsentChoiceIn(BaseModel):
    """What the patient chose to consent to: purposes and for how many years."""

    model_config = ConfigDict(extra="forbid")
    scenarios: list[GrantableScenario] = Field(min_length=1, max_length=len(GRANTABLE_SCENARIOS))
    years: int = Field(ge=1, le=MAX_CONSENT_YEARS)


class ConsentGrantPageIn(BaseModel):
    """The ConsentGrant the patient signed (its message's own values) and the signature."""

    model_config = ConfigDict(extra="forbid")
    consent_id: str = Field(pattern=HEX32)
    scenarios: list[GrantableScenario] = Field(min_length=1, max_length=len(GRANTABLE_SCENARIOS))
    valid_until: int = Field(ge=1, lt=2**64)
    subject_key: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    deadline: int = Field(ge=0, lt=2**64)
    signature: str = Field(pattern=SIGNATURE)


class QrIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=23, max_length=23, description="XXXXX-XXXXX-XXXXX-XXXXX")


@dataclass(frozen=True)
class Patient:
    subject: str
    holder_id: str
    expires_at: int
    token: str


# --------------------------------------------------------------------------- the app


@dataclass
class PageState:
    settings: PatientPageSettings
    verifier: PatientVerifier
    gateway: httpx.AsyncClient
    audit: httpx.AsyncClient
    holder_id: str
    domain: tuple[int, str] | None = None


def create_app(settings: PatientPageSettings | None = None) -> FastAPI:
    settings = settings or PatientPageSettings()
    holder_id = "0x" + slug_id(settings.org).hex()
    limits = PageLimits(
        signin_failures=settings.signin_failures,
        signin_window_s=settings.signin_window_s,
        codes_per_token=settings.codes_per_token,
        codes_per_client=settings.codes_per_client,
        codes_window_s=settings.codes_window_s,
        writes_per_token=settings.writes_per_token,
        writes_window_s=settings.writes_window_s,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(settings.request_timeout)
        async with (
            httpx.AsyncClient(base_url=settings.gateway_url, timeout=timeout) as gateway,
            httpx.AsyncClient(base_url=settings.audit_url, timeout=timeout) as audit,
        ):
            app.state.page = PageState(
                settings, PatientVerifier(settings), gateway, audit, holder_id
            )
            yield

    app = FastAPI(
        title="Data-Use Ledger patient page",
        description=__doc__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _install_errors(app)

    def state_of(request: Request) -> PageState:
        page: PageState = request.app.state.page
        return page

    State = Annotated[PageState, Depends(state_of)]  # noqa: N806

    async def patient_of(
        request: Request, state: State, authorization: Annotated[str | None, Header()] = None
    ) -> Patient:
        client = _client(request)
        limits.check_signin(client, authorization or "")  # too many failures: 429 first
        try:
            patient = await _authenticated(state, authorization)
        except UnauthenticatedError:
            limits.failed_signin(client)
            raise
        limits.signed_in(authorization or "", patient.expires_at)
        return patient

    async def _authenticated(state: PageState, authorization: str | None) -> Patient:
        raw = ""
        if authorization and authorization.lower().startswith("bearer "):
            raw = authorization[7:].strip()
        if not raw:
            raise UnauthenticatedError(
                "sign in with the patient token your hospital gave you",
                code="credential_missing",
            )
        try:
            token = PatientToken.decode(raw)
        except PatientTokenError as exc:
            raise UnauthenticatedError(str(exc)) from None
        caller = await run_in_threadpool(state.verifier.verify, raw)
        if caller.org != state.holder_id:
            raise UnauthenticatedError(
                f"this patient token is from another hospital, not {state.settings.org}",
                code="wrong_hospital",
            )
        assert caller.subject is not None
        return Patient(caller.subject, state.holder_id, token.expires_at, raw)

    PatientDep = Annotated[Patient, Depends(patient_of)]  # noqa: N806

    # --- the page ------------------------------------------------------------------------------

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.api_route("/page/proof.js", methods=["GET", "HEAD"], include_in_schema=False)
    def proof_module() -> Response:
        # the console's own module, not a copy: one proof check for regulators and patients
        return FileResponse(CONSOLE_STATIC / "proof.js", media_type="text/javascript")

    @app.api_route("/page/vendor/ethers.min.js", methods=["GET", "HEAD"], include_in_schema=False)
    def ethers_module() -> Response:
        path = find_ethers()
        if path is None:
            raise PageError(
                "the signing library (npm ethers) is not installed: run scripts/bootstrap "
                "(npm ci) in the repository, or set DUL_PATIENT_ETHERS",
                code="page_asset_missing",
                status=404,
            )
        return FileResponse(path, media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=3600"})  # fmt: skip

    identity = {**service_identity("patient-page"), "org": settings.org}

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str | None]:
        """The page is up, and which process it is (`dul up` checks it started it)."""
        return {"status": "ok", **identity}

    # --- the API -------------------------------------------------------------------------------

    @app.get("/api/session", response_model=Session, tags=["patient"])
    async def session(state: State, patient: PatientDep) -> Session:
        """Who is signed in, where the page signs, and what codes may be issued for."""
        chain_id, registry = await _domain(state)
        key = await run_in_threadpool(_subject_key, state, registry, patient)
        return Session(
            subject=patient.subject,
            holder=state.settings.org,
            holder_id=state.holder_id,
            expires_at=patient.expires_at,
            chain_id=chain_id,
            consent_registry=registry,
            subject_key=key,
            offers=await _offers(state),
        )

    @app.get("/api/report", tags=["patient"])
    async def report(state: State, patient: PatientDep) -> Response:
        """The patient's transparency report, read from the audit service with their token."""
        answer = await _upstream(
            state.audit, "the audit service", "GET", f"/v1/subjects/{patient.subject}/accesses",
            token=patient.token,
        )  # fmt: skip
        return _passed_on(answer)

    @app.get("/api/consents", tags=["patient"])
    async def consents(state: State, patient: PatientDep) -> Response:
        """The patient's consents as the hospital's gateway has them now."""
        answer = await _gateway(state, "GET", f"/v1/consents/{patient.subject}")
        if answer.status_code != 200:
            return _passed_on(answer)
        view = answer.json()
        _, registry = await _domain(state)
        keys = await run_in_threadpool(_withdraw_keys, state, registry, patient,
                                       list(view.get("consents") or []))  # fmt: skip
        for consent, key in zip(view.get("consents") or [], keys, strict=True):
            consent["withdraw_key"] = key
        return JSONResponse(view, headers={"Cache-Control": "no-store"})

    @app.post("/api/consents/typed-data", tags=["patient"])
    async def consent_typed_data(
        body: ConsentChoiceIn, state: State, patient: PatientDep
    ) -> dict[str, Any]:
        """The EIP-712 `ConsentGrant` of the consent the patient chose, for their key to sign:
        the standard JSON a wallet signs (MetaMask `eth_signTypedData_v4` as served; ethers v6
        `signTypedData` without the `EIP712Domain` entry of `types`). Its consent id is the
        patient's next on chain, so the signature grants one consent once."""
        limits.check_write(patient.subject)
        chain_id, registry = await _domain(state)
        key = await run_in_threadpool(_subject_key, state, registry, patient)
        if key is None:
            raise PageError(
                f"{state.settings.org} has no key on record for you: ask its data office to "
                "register yours before you give a consent here",
                code="no_subject_key",
                status=409,
            )
        holder, subject = bytes.fromhex(patient.holder_id[2:]), bytes.fromhex(patient.subject[2:])
        raw = await run_in_threadpool(
            _eth_call, state, registry, _NEXT_CONSENT_ID.encode(holder, subject)
        )
        now = int(time.time())
        grant = ConsentGrant(
            consent_id=raw[:32],
            terms=_grant_terms(holder, subject, body.scenarios, now + body.years * YEAR_S, key),
            deadline=now + GRANT_SIGNATURE_S,
        )
        return grant.typed_data(consent_domain(chain_id, registry))  # type: ignore[arg-type]

    @app.post("/api/consents", tags=["patient"])
    async def grant_consent(
        body: ConsentGrantPageIn, state: State, patient: PatientDep
    ) -> Response:
        """Relay the patient's signed EIP-712 `ConsentGrant`; in force for the next decision. At
        most `writes_per_token` signed changes per patient token in `writes_window_s`."""
        limits.take_write(patient.subject)
        now = int(time.time())
        if not now < body.valid_until <= now + MAX_CONSENT_YEARS * YEAR_S + GRANT_SIGNATURE_S:
            raise PageError(
                f"a consent given here lasts between now and {MAX_CONSENT_YEARS} years",
                code="validity_out_of_range",
                status=422,
            )
        relayed = {
            "consent_id": body.consent_id.lower(),
            "subject": patient.subject,
            "scenarios": sorted(set(body.scenarios), key=GRANTABLE_SCENARIOS.index),
            "valid_until": body.valid_until,
            "subject_key": body.subject_key,
            "deadline": body.deadline,
            "signature": body.signature,
        }
        answer = await _gateway(state, "POST", "/v1/consents/by-patient", json=relayed)
        log.info("patient_page.consent_granted", consent=body.consent_id,
                 status=answer.status_code)  # fmt: skip
        return _passed_on(answer)

    @app.post("/api/consents/{consent_id}/withdraw", tags=["patient"])
    async def withdraw(
        consent_id: str, body: WithdrawIn, state: State, patient: PatientDep
    ) -> Response:
        """Relay the patient's EIP-712 ConsentWithdrawal; in force for the next decision (a
        signed change: `writes_per_token`)."""
        limits.take_write(patient.subject)
        if re.fullmatch(HEX32, consent_id) is None:
            raise PageError(f"{consent_id[:80]!r} is not a consent id (0x + 64 hex digits)",
                            code="validation_error", status=422)  # fmt: skip
        answer = await _gateway(
            state, "POST", f"/v1/consents/{patient.subject}/withdraw",
            json={"consent_id": consent_id.lower(), **body.model_dump()},
        )  # fmt: skip
        log.info("patient_page.withdrawn", consent=consent_id, status=answer.status_code)
        return _passed_on(answer)

    @app.post("/api/codes", tags=["patient"])
    async def issue_code(
        body: CodeIn, request: Request, state: State, patient: PatientDep
    ) -> Response:
        """Relay the patient's EIP-712 Authorization of a code (its hash only); at most
        `codes_per_token` per patient token and `codes_per_client` per client address in
        `codes_window_s` (429 `rate_limited` past that)."""
        limits.take_code(patient.subject, _client(request))
        offer = next(
            (o for o in await _offers(state)
             if o.agreement_id == body.agreement_id.lower()
             and o.dataset_id == body.dataset_id.lower()),
            None,
        )  # fmt: skip
        if offer is None:
            raise PageError(
                "codes may be issued only for what this hospital offers (GET /api/session)",
                code="not_offered",
                status=422,
            )
        now = int(time.time())
        if not now < body.expires_at <= now + MAX_CODE_LIFETIME_S:
            raise PageError(
                f"a code expires between now and {MAX_CODE_LIFETIME_S // 86_400} days from now",
                code="expiry_out_of_range",
                status=422,
            )
        relayed = {
            "code_hash": body.code_hash.lower(),
            "subject": patient.subject,
            "grantee": offer.grantee_id,
            "dataset_id": offer.dataset_id,
            "field_mask": int(offer.field_mask),
            "tier": offer.tier,
            "scenario": offer.scenario,
            "expires_at": body.expires_at,
            "multi_use": body.multi_use,
            "signature": body.signature,
        }
        answer = await _gateway(state, "POST", "/v1/authorizations/by-patient", json=relayed)
        log.info("patient_page.code_issued", code_hash=body.code_hash, status=answer.status_code)
        return _passed_on(answer)

    @app.post("/api/codes/{code_hash}/revoke", tags=["patient"])
    async def revoke_code(
        code_hash: str, body: WithdrawIn, state: State, patient: PatientDep
    ) -> Response:
        """Relay the patient's EIP-712 AuthorizationRevocation of one of their unused codes (a
        signed change: `writes_per_token`)."""
        limits.take_write(patient.subject)
        if re.fullmatch(HEX32, code_hash) is None:
            raise PageError(f"{code_hash[:80]!r} is not a code hash (0x + 64 hex digits)",
                            code="validation_error", status=422)  # fmt: skip
        _, registry = await _domain(state)
        stored = await run_in_threadpool(
            _eth_call, state, registry, _AUTHORIZATION.encode(bytes.fromhex(code_hash[2:]))
        )
        if stored[32:64] != bytes.fromhex(patient.subject[2:]):
            raise PageError("you have no code with this hash", code="unknown_code", status=404)
        answer = await _gateway(
            state, "POST", f"/v1/authorizations/{code_hash.lower()}/revoke-by-patient",
            json=body.model_dump(),
        )  # fmt: skip
        log.info("patient_page.code_revoked", code_hash=code_hash, status=answer.status_code)
        return _passed_on(answer)

    @app.post("/api/qr", tags=["patient"], response_class=Response)
    async def qr(body: QrIn, patient: PatientDep) -> Response:
        """The code as a QR code (SVG): drawn here, logged and kept nowhere."""
        if CODE.match(body.code) is None:
            raise PageError("a one-time code is four groups of five characters",
                            code="validation_error", status=422)  # fmt: skip
        out = BytesIO()
        segno.make(body.code, error="m").save(
            out, kind="svg", scale=6, border=4, dark="#000000", light="#ffffff",
            title="One-time code", xmldecl=False,
        )  # fmt: skip
        return Response(out.getvalue(), media_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    app.mount("/page", StaticFiles(directory=STATIC), name="page")
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)  # a patient's posts are small
    app.add_middleware(SecurityHeaders)  # outermost: on a refused body's 413 too
    return app


# --------------------------------------------------------------------------- helpers


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(DulError)
    async def dul_error(request: Request, exc: DulError) -> JSONResponse:
        status = 503
        given = exc.details.get("status", getattr(exc, "status", None))
        if isinstance(given, int) and 400 <= given < 600:
            status = given
        if isinstance(exc, NodeUnavailableError | ConfigError):
            status = 503
        title = {
            401: "Unauthorized", 422: "Invalid request", 404: "Not found",
            429: "Too many requests",
        }.get(status, "Service unavailable" if status >= 500 else "Refused")  # fmt: skip
        answer = problem(status, exc.code, title, exc.message)
        if isinstance(exc, RateLimitedError):
            answer.headers["Retry-After"] = str(exc.retry_after)
        return answer

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', '')}" if where else str(first.get("msg", ""))
        return problem(422, "validation_error", "Invalid request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_problem(exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("patient_page.unhandled", path=request.url.path)
        return problem(500, "internal_error", "Internal error", "the patient page failed")


async def _upstream(
    client: httpx.AsyncClient,
    what: str,
    method: str,
    path: str,
    *,
    token: str,
    json: Any = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        answer = await client.request(
            method, path, json=json, params=params,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )  # fmt: skip
    except httpx.HTTPError as exc:
        raise PageError(f"{what} cannot be reached ({exc.__class__.__name__})",
                        code="upstream_unreachable", status=503) from None  # fmt: skip
    if answer.status_code >= 500 or answer.status_code in (401, 403):
        # not the patient's doing: the hospital's side is down or its credential refused
        detail = _detail(answer)
        log.warning("patient_page.upstream", what=what, status=answer.status_code, detail=detail)
        raise PageError(f"{what} answered HTTP {answer.status_code}: {detail}",
                        code="upstream_error", status=502)  # fmt: skip
    return answer


async def _gateway(state: PageState, method: str, path: str, json: Any = None) -> httpx.Response:
    return await _upstream(
        state.gateway, "the hospital's gateway", method, path,
        token=state.settings.resolved_gateway_token(), json=json,
        params={"wait": "confirmed"} if method == "POST" else None,
    )  # fmt: skip


def _detail(answer: httpx.Response) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:200]


def _passed_on(answer: httpx.Response) -> Response:
    """The upstream answer as it came (JSON, or problem JSON with its status and code)."""
    media = answer.headers.get("content-type", "application/json")
    return Response(answer.content, status_code=answer.status_code, media_type=media,
                    headers={"Cache-Control": "no-store"})  # fmt: skip


async def _domain(state: PageState) -> tuple[int, str]:
    if state.domain is None:
        from dul.contracts.deployment import Deployment

        try:
            deployment = Deployment.load(state.settings.resolved_deployment_path())
            registry = deployment.address("ConsentRegistry")
        except (DulError, OSError, ValueError, KeyError) as exc:
            raise PageError(f"the deployment manifest: {exc}", code="not_ready",
                            status=503) from None  # fmt: skip
        state.domain = (deployment.chain_id, str(registry))
    return state.domain


def _eth_call(state: PageState, to: str, data: bytes) -> bytes:
    rpc = RpcClient(
        state.settings.resolved_rpc_url(), timeout=state.settings.request_timeout,
        token=rpc_token(),
    )  # fmt: skip
    try:
        result = str(rpc.request("eth_call", {"to": to, "data": "0x" + data.hex()}, "latest"))
    except DulError as exc:
        raise PageError(f"the chain: {exc.message}", code="chain_unavailable",
                        status=503) from None  # fmt: skip
    finally:
        rpc.close()
    try:
        return bytes.fromhex(result.removeprefix("0x"))
    except ValueError:
        raise PageError(f"the chain answered {result[:80]!r}", code="chain_unavailable",
                        status=503) from None  # fmt: skip


def _subject_key(state: PageState, registry: str, patient: Patient) -> str | None:
    data = _SUBJECT_KEY_OF.encode(
        bytes.fromhex(patient.holder_id[2:]), bytes.fromhex(patient.subject[2:])
    )
    result = _eth_call(state, registry, data)
    if len(result) < 32 or not any(result[12:32]):
        return None
    return "0x" + result[12:32].hex()


def _key_ever_registered(state: PageState, registry: str, patient: Patient) -> bool:
    """Whether a steward ever registered a key (or removed one) for the patient: the chain's
    `SubjectKeyRegistered` logs of this holder and subject."""
    rpc = RpcClient(
        state.settings.resolved_rpc_url(), timeout=state.settings.request_timeout,
        token=rpc_token(),
    )  # fmt: skip
    topics = [_KEY_REGISTERED.topic_hex, patient.holder_id.lower(), patient.subject.lower()]
    try:
        logs = rpc.find_logs({"address": registry, "topics": topics},
                             newest_first=True, first_match=True)  # fmt: skip
    except DulError as exc:
        raise PageError(f"the chain: {exc.message}", code="chain_unavailable",
                        status=503) from None  # fmt: skip
    finally:
        rpc.close()
    return bool(logs)


def _withdraw_keys(
    state: PageState, registry: str, patient: Patient, consents: list[dict[str, Any]]
) -> list[str | None]:
    """For each consent, the key whose signature `withdrawConsentBySubject` accepts, as the
    chain decides it: none for a consent recorded without a key; the key a steward registered
    for the subject once one ever was (none after a removal); else the consent's own key."""
    recorded = [str(c.get("subject_key") or ZERO_ADDRESS).lower() for c in consents]
    if all(k == ZERO_ADDRESS for k in recorded):
        return [None] * len(consents)
    current = _subject_key(state, registry, patient)
    # `subjectKeyOf` is the registered key once one was registered, else the newest consent's
    # key: the logs are read only when these two readings differ for some consent.
    registered: bool | None = True if current is None else None
    keys: list[str | None] = []
    for key in recorded:
        if key == ZERO_ADDRESS:
            keys.append(None)
            continue
        if key == current:
            keys.append(key)
            continue
        if registered is None:
            registered = _key_ever_registered(state, registry, patient)
        keys.append(current if registered else key)
    return keys


async def _offers(state: PageState) -> list[Offer]:
    """The configured agreements that are active, this hospital's, and opened by codes."""
    offers: list[Offer] = []
    for agreement in state.settings.offered_agreements():
        if re.fullmatch(HEX32, agreement) is None:
            log.warning("patient_page.offer_skipped", agreement=agreement[:80], why="not an id")
            continue
        answer = await _gateway(state, "GET", f"/v1/agreements/{agreement}")
        if answer.status_code != 200:
            log.warning("patient_page.offer_skipped", agreement=agreement,
                        why=_detail(answer))  # fmt: skip
            continue
        terms = answer.json()
        if (
            terms.get("status") != "ACTIVE"
            or terms.get("consent_policy") != "PATIENT_AUTHORIZATION"
            or _org_id(str(terms.get("holder"))) != state.holder_id
            or terms.get("superseded_by")
        ):
            continue
        grantee = str(terms["requester"])
        for scope in terms.get("datasets", []):
            offers.append(
                Offer(
                    agreement_id=agreement,
                    grantee=grantee,
                    grantee_id=_org_id(grantee),
                    scenario=terms["scenario"],
                    scenario_value=int(Scenario[terms["scenario"]]),
                    tier=terms["max_tier"],
                    tier_value=int(Tier[terms["max_tier"]]),
                    dataset=scope["dataset"],
                    dataset_id=scope["dataset_id"].lower(),
                    field_mask=str(int(scope["field_mask"], 0)),
                    fields=list(scope.get("fields") or []),
                    valid_until=int(terms["valid_until"]),
                )
            )
    return offers


def _client(request: Request) -> str:
    """The client's address as the TCP peer gives it (behind a proxy: the proxy's)."""
    return request.client.host if request.client else "unknown"


def _grant_terms(
    holder: bytes, subject: bytes, scenarios: list[str], valid_until: int, key: str
) -> ConsentTerms:
    """An unrestricted consent from the recording block for the chosen purposes, with the
    patient's key (the one that signs it, and may later withdraw it)."""
    mask = 0
    for name in scenarios:
        mask |= 1 << Scenario[name]
    return ConsentTerms(holder=holder, subject=subject, scenarios=mask, valid_until=valid_until,
                        subject_key=key)  # fmt: skip


def _org_id(slug: str) -> str:
    if re.fullmatch(HEX32, slug):
        return slug.lower()
    return "0x" + slug_id(slug).hex()
