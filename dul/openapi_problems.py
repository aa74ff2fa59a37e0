"""Document RFC 9457 problem JSON, with its stable codes, on every error response of an API.

FastAPI documents 422 as `HTTPValidationError` and nothing else; both services answer every
error as `application/problem+json` instead, so their OpenAPI is rewritten once to say so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Request body too large",
    422: "Invalid request",
    500: "Internal error",
    502: "Bad gateway (the chain node)",
    503: "Service unavailable",
}


def problem_schema(codes: Collection[str]) -> dict[str, Any]:
    return {
        "title": "Problem",
        "type": "object",
        "description": "RFC 9457 problem details; `code` is stable, branch on it.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string", "example": "urn:dul:problem:validation_error"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string", "enum": sorted(set(codes))},
            "errors": {
                "type": "array",
                "description": "validation_error only: each invalid input",
                "items": {"type": "object"},
            },
        },
    }


def document_problems(
    app: Any,
    codes: Mapping[int, Sequence[str]],
    *,
    public_paths: Collection[str] = (),
    public_statuses: Collection[int] = (500, 503),
) -> None:
    """Make `app.openapi()` list, on every operation, each error status of `codes` (only
    `public_statuses` on `public_paths`, which take no input) as problem JSON naming its codes."""
    original: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return dict(app.openapi_schema)
        schema = original()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = problem_schema([c for group in codes.values() for c in group])
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status in [s for s in responses if s[:1] in ("4", "5")]:
                    del responses[status]
                for status, status_codes in sorted(codes.items()):
                    if path in public_paths and status not in public_statuses:
                        continue
                    responses[str(status)] = {
                        "description": f"{_TITLES.get(status, 'Error')}: "
                        + ", ".join(f"`{c}`" for c in status_codes),
                        "content": {
                            PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                        },
                    }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
