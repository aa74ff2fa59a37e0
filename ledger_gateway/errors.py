"""Errors of the gateway. Each has a stable `code` and an HTTP status; one handler turns them
into RFC 9457 problem JSON (`type`, `title`, `status`, `detail`, `code`).

    GatewayError                      500 internal_error (never raised on purpose)
    ├── BadRequestError               422 validation_error, request_expired, deadline_too_far,
    │   │                                 bad_signature, batch_too_large
    │   └── CodeMismatchError         400 authorization_code_mismatch
    ├── UnauthorizedError             401 unauthorized
    ├── ForbiddenError                403 forbidden
    ├── NotFoundError                 404 not_found, unknown_agreement, unknown_dataset
    ├── ConflictError                 409 request_id_conflict
    └── UnavailableError              503 not_ready, outbox_full (with Retry-After)
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal error"

    def __init__(self, detail: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class BadRequestError(GatewayError):
    status = 422
    code = "validation_error"
    title = "Invalid request"


class CodeMismatchError(BadRequestError):
    """An authorization code that is not the one the request's `authorization_ref` names."""

    status = 400
    code = "authorization_code_mismatch"
    title = "Authorization code mismatch"


class UnauthorizedError(GatewayError):
    status = 401
    code = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(GatewayError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class NotFoundError(GatewayError):
    status = 404
    code = "not_found"
    title = "Not found"


class ConflictError(GatewayError):
    status = 409
    code = "request_id_conflict"
    title = "Conflict"


class UnavailableError(GatewayError):
    status = 503
    code = "not_ready"
    title = "Service unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(detail, **kwargs)
        self.retry_after = retry_after
