"""The decision routes without FastAPI's per-request machinery.

`POST /v1/access-requests` and `POST /v1/access-requests/batch` are most of the gateway's
traffic. Through FastAPI each request solved its dependency tree (context, header, token,
caller, body) and walked five layers of routing: in a CPU profile that was more than the
decision itself. This ASGI layer answers the two routes directly: the token checked as
`AccessCallerDep` checks it, the body decoded and validated from bytes in one pass by pydantic's
JSON parser, the answer serialized once. Errors are the same problem JSON as everywhere else
(`problems.gateway_problem`, `problems.validation_problem`).

The FastAPI routes stay: they are what the OpenAPI document describes (same paths, bodies and
answers), and they still serve any call this layer does not take (another query string).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from dul.chain.rpc import NodeError
from ledger_gateway.answers import batch_json
from ledger_gateway.api.access import wait_for
from ledger_gateway.api.deps import GatewayContext
from ledger_gateway.api.problems import gateway_problem, node_problem, validation_problem
from ledger_gateway.callers import Caller
from ledger_gateway.errors import BadRequestError, GatewayError
from ledger_gateway.models import AccessBatchIn, AccessBatchOut, AccessRequestIn
from ledger_gateway.tokens import TokenRole

SINGLE = "/v1/access-requests"
BATCH = "/v1/access-requests/batch"
_QUERIES = {b"": False, b"wait=confirmed": True}
"""The query strings taken here (and whether they ask to wait); others go to FastAPI."""
_JSON = [(b"content-type", b"application/json")]


class AccessHotPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        wait = _QUERIES.get(scope.get("query_string", b""))
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or path not in (SINGLE, BATCH)
            or wait is None
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = self._route(scope, path)  # the request log's metric label
        try:
            context: GatewayContext = scope["app"].state.context
            token = context.tokens.authenticate(_bearer(scope["headers"]))
            context.access.authorize(token)  # as `AccessCallerDep`: this organization's
            Caller.of(token, TokenRole.ACCESS_SERVICE)  # access services only
            body = await _body(receive)
            if path == SINGLE:
                status, payload, headers = await _single(context, token, body, wait)
            else:
                status, payload, headers = await _batch(context, token, body, wait)
        except GatewayError as exc:
            await gateway_problem(exc)(scope, receive, send)
            return
        except NodeError as exc:
            await node_problem(exc)(scope, receive, send)
            return
        except ValidationError as exc:
            errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
            await validation_problem(errors)(scope, receive, send)
            return
        headers = [*_JSON, (b"content-length", str(len(payload)).encode()), *headers]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    def _route(self, scope: Scope, path: str) -> Any:
        """The FastAPI route of `path` (its `path` names the metric, as for every route)."""
        route = self._routes.get(path)
        if route is None:
            for candidate in scope["app"].routes:
                if getattr(candidate, "path", None) == path and "POST" in getattr(
                    candidate, "methods", ()
                ):
                    route = self._routes[path] = candidate
                    break
        return route


def _bearer(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1")
            return text[7:].strip() if text.lower().startswith("bearer ") else None
    return None


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError("the client went away before sending the whole body")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json(answer: BaseModel) -> bytes:
    return answer.__pydantic_serializer__.to_json(answer)


async def _single(
    context: GatewayContext, token: Any, body: bytes, wait: bool
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    request = AccessRequestIn.model_validate_json(body)
    [answer] = await context.access.answers(token, [request])
    location = f"/v1/access-requests/0x{answer.view.key.hex()}".encode()
    if not wait:
        return 201, answer.json(), [(b"location", location)]
    return 201, _json(await wait_for(context, answer.model())), [(b"location", location)]


async def _batch(
    context: GatewayContext, token: Any, body: bytes, wait: bool
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    batch = AccessBatchIn.model_validate_json(body)
    limit = context.settings.max_batch_request
    if len(batch.requests) > limit:
        raise BadRequestError(
            f"a batch holds at most {limit} requests, not {len(batch.requests)}",
            code="batch_too_large",
        )
    answers = await context.access.answers(token, batch.requests)
    if not wait:  # the answers' bytes without their models (`answers.batch_json`)
        return 201, batch_json(answers), []
    waited = [await wait_for(context, a.model()) for a in answers]
    return 201, _json(AccessBatchOut(results=waited)), []
