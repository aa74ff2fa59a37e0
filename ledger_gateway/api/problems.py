"""RFC 9457 problem JSON for every error; no input, however malformed, gets a traceback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dul.chain.rpc import NodeError, NodeUnavailableError
from dul.openapi_problems import document_problems
from ledger_gateway.errors import GatewayError, UnavailableError

log = structlog.get_logger(__name__)

PROBLEM = "application/problem+json"

PROBLEM_CODES: dict[int, tuple[str, ...]] = {
    400: ("authorization_code_mismatch", "bad_request"),
    401: ("unauthorized",),
    403: ("forbidden", "wrong_organization", "sender_not_member"),
    404: ("not_found", "unknown_agreement", "unknown_dataset"),
    405: ("method_not_allowed",),
    409: ("request_id_conflict", "release_not_allowed", "nonce_too_low", "tx_refused"),
    413: ("body_too_large",),
    422: (
        "validation_error",
        "body_too_deep",
        "request_expired",
        "deadline_too_far",
        "bad_signature",
        "batch_too_large",
        "unknown_field",
        "reverted",
        "malformed_transaction",
        "wrong_transaction",
        "not_an_authorization_agreement",
    ),
    500: ("internal_error",),
    502: ("rpc_error",),
    503: ("not_ready", "outbox_full", "consents_unavailable", "chain_unavailable"),
}
"""Every problem code the gateway answers, by status (the OpenAPI lists them; a unit test
keeps this table complete)."""


def problem(status: int, code: str, title: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:dul:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def gateway_problem(exc: GatewayError) -> JSONResponse:
    response = problem(exc.status, exc.code, exc.title, exc.detail, **exc.extra)
    if isinstance(exc, UnavailableError):
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


def node_problem(exc: NodeError) -> JSONResponse:
    """A chain node's failure: 503 `chain_unavailable` (try again) when it gave no usable
    answer, else 502 `rpc_error` with the node's JSON-RPC error."""
    if isinstance(exc, NodeUnavailableError):
        response = problem(503, "chain_unavailable", "Service unavailable", exc.message)
        response.headers["Retry-After"] = "1"
        return response
    return problem(502, "rpc_error", "Chain node error", exc.message)


def validation_problem(raw: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """422 `validation_error` naming each invalid input (pydantic's errors, `loc` from the
    request's part: body, query, ...)."""
    errors = [
        {
            "loc": [str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "")),
        }
        for e in raw
    ]
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else str(first["msg"])
    return problem(422, "validation_error", "Invalid request", detail, errors=errors)


def http_problem(exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method) as problem JSON."""
    codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    return problem(exc.status_code, code, str(exc.detail), str(exc.detail))


def install(app: FastAPI) -> None:
    document_problems(
        app,
        {s: c for s, c in PROBLEM_CODES.items() if s != 405},
        public_paths=("/healthz", "/readyz", "/metrics"),
    )

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return gateway_problem(exc)

    @app.exception_handler(NodeError)
    async def node_error(request: Request, exc: NodeError) -> JSONResponse:
        return node_problem(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_problem(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return http_problem(exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request.unhandled", path=request.url.path)
        return problem(
            500, "internal_error", "Internal error", "the gateway failed; nothing was recorded"
        )
