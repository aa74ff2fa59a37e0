"""The permissioned JSON-RPC endpoint: the only door to the embedded node.

anvil has no access control, so it answers only on an IPC socket inside a network namespace of
its own (or, where namespaces are unavailable, on an internal loopback port) and this ASGI app
sits on the public port. It forwards an allowlist of standard methods (single and batch
requests, order and ids preserved) over a pool of connections (`ipc.IpcUpstream` or
`upstream.StreamUpstream`), answers `eth_accounts` with `[]` and the fee methods with the
node's zero gas price, refuses every other method (anvil_*, evm_*, debug_*,
eth_sendTransaction, …) with JSON-RPC error -32601, and lets a signed transaction through only
when its sender is the operator or an active member (`Membership.isAuthorizedSender(address)`
at the address in the deployment manifest, cached for `membership_ttl` seconds); otherwise
error -32003. With `--jwt-public-key` (as `dul chain up` starts it) every request needs a
bearer JWT checked as Besu does (`dul.chain.rpc_auth`): 401 without a valid one, 403 for a
method outside its permissions. Every malformed body (not UTF-8, not JSON, too deep, too
large, wrong content-type) gets a JSON-RPC error with a 4xx or 200 status, never a 5xx. With
`--max-log-range N` it refuses `eth_getLogs` over more than N blocks as Besu does
(`dul.chain.log_range`).

This module is transport and knows no contract: the sender check's selector is handed in
(`create_app(..., sender_check=...)`, `main(argv, sender_check)`) by the process entry point
`dul.rpc_proxy`, which takes it from the contract bindings. Run it with `python -m
dul.rpc_proxy --upstream IPC_PATH|URL --port N [--deployment PATH]`; `dul chain up` does that
for you.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dul.chain.ipc import IpcUpstream, is_ipc_target
from dul.chain.log_range import head_reader, range_refusal
from dul.chain.rpc_auth import (
    UNAUTHORIZED_CODE,
    Caller,
    RpcAuthError,
    TokenVerifier,
    check_method,
)
from dul.chain.rpc_filter import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LOCAL_ANSWERS,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    MethodClass,
    Refusal,
    TxDecodeError,
    classify_method,
    creation_refusal,
    decode_raw_transaction,
    error_response,
    method_refusal_message,
    override_refusal,
    parse_hex_bytes,
    replay_refusal,
    request_id_of,
    request_shape_error,
    result_response,
    sender_refusal,
)
from dul.chain.settings import ProxySettings
from dul.chain.upstream import StreamUpstream, Upstream, UpstreamError
from dul.json_depth import MAX_JSON_DEPTH, bracket_shape

log = structlog.get_logger("dul.chain.rpc_proxy")
_ACCOUNT = re.compile(r"^0x[0-9a-f]{40}$")

JSON_HEADERS = {"content-type": "application/json"}


def _normalize_address(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if len(text) != 42 or not text.startswith("0x"):
        return None
    try:
        bytes.fromhex(text[2:])
    except ValueError:
        return None
    return text


@dataclass
class _Manifest:
    operator: str | None = None
    membership: str | None = None


def read_manifest(path: Path) -> _Manifest:
    """The two fields the proxy needs from the deployment manifest."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError("deployment manifest is not a JSON object")
    membership = None
    contracts = data.get("contracts")
    if isinstance(contracts, dict):
        entry = contracts.get("Membership")
        if isinstance(entry, dict):
            membership = _normalize_address(entry.get("address"))
    return _Manifest(operator=_normalize_address(data.get("operator")), membership=membership)


@dataclass
class MembershipOracle:
    """Who may send: the operator(s) and whoever `Membership.isAuthorizedSender` says.

    The manifest is re-read when its mtime or size changes (a fresh deployment clears the
    cache); answers are cached per address for `ttl` seconds and concurrent look-ups of the
    same address share one `eth_call`, so a burst of transactions costs one call.
    `sender_check` is the selector of the contract's `(address) -> bool` view.
    """

    upstream: Upstream
    sender_check: bytes
    deployment_path: Path | None
    static_operator: str | None
    ttl: float
    clock: Callable[[], float] = time.monotonic
    _manifest: _Manifest = field(default_factory=_Manifest)
    _manifest_key: tuple[int, int] | None = None
    _cache: dict[str, tuple[float, bool]] = field(default_factory=dict)
    _inflight: dict[str, asyncio.Future[bool]] = field(default_factory=dict)

    def refresh(self) -> None:
        if self.deployment_path is None:
            return
        try:
            st = os.stat(self.deployment_path)
        except FileNotFoundError:
            if self._manifest_key is not None:
                log.info("deployment_manifest_removed", path=str(self.deployment_path))
                self._manifest, self._manifest_key = _Manifest(), None
                self._cache.clear()
            return
        key = (st.st_mtime_ns, st.st_size)
        if key == self._manifest_key:
            return
        try:
            manifest = read_manifest(self.deployment_path)
        except (OSError, ValueError) as exc:
            # A half-written file: keep the previous view and retry on the next request.
            log.warning(
                "deployment_manifest_unreadable", path=str(self.deployment_path), error=str(exc)
            )
            return
        self._manifest, self._manifest_key = manifest, key
        self._cache.clear()
        log.info(
            "deployment_manifest_loaded",
            operator=manifest.operator,
            membership=manifest.membership,
        )

    def operators(self) -> frozenset[str]:
        self.refresh()
        found = {a for a in (self.static_operator, self._manifest.operator) if a is not None}
        return frozenset(found)

    @property
    def membership_address(self) -> str | None:
        return self._manifest.membership

    async def is_member(self, address: str) -> bool:
        self.refresh()
        membership = self._manifest.membership
        if membership is None:
            return False
        now = self.clock()
        cached = self._cache.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]
        pending = self._inflight.get(address)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[address] = future
        try:
            answer = await self._call_is_authorized(membership, address)
            self._cache[address] = (self.clock() + self.ttl, answer)
            future.set_result(answer)
            return answer
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters, if any, re-raise it themselves
            raise
        finally:
            del self._inflight[address]

    async def _call_is_authorized(self, membership: str, address: str) -> bool:
        data = "0x" + self.sender_check.hex() + "0" * 24 + address[2:]
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"to": membership, "data": data}, "latest"],
        }
        try:
            _, content = await self.upstream.post(json.dumps(body).encode())
            reply = json.loads(content)
        except (UpstreamError, ValueError) as exc:
            log.warning("membership_lookup_failed", address=address, error=str(exc))
            return False  # fail closed
        result = reply.get("result") if isinstance(reply, dict) else None
        if not isinstance(result, str) or len(result) != 66:
            log.warning("membership_lookup_unexpected", address=address, reply=reply)
            return False
        return int(result, 16) == 1


@dataclass
class _Proxy:
    settings: ProxySettings
    upstream: Upstream
    oracle: MembershipOracle
    verifier: TokenVerifier | None = None

    async def send_refusal(self, item: dict[str, Any]) -> Refusal | None:
        params = item.get("params")
        if not isinstance(params, list) or not params:
            return Refusal(INVALID_PARAMS, "expected the signed transaction as first parameter")
        try:
            tx = decode_raw_transaction(parse_hex_bytes(params[0]))
        except TxDecodeError as exc:
            return Refusal(INVALID_PARAMS, f"invalid raw transaction: {exc}")
        operators = self.oracle.operators()
        refusal = replay_refusal(tx) or creation_refusal(tx, operators)
        if refusal is None and tx.sender not in operators:
            refusal = sender_refusal(tx, operators, await self.oracle.is_member(tx.sender))
        if refusal is not None:
            log.info("transaction_refused", sender=tx.sender, to=tx.to, reason=refusal.message)
        return refusal

    async def check_account(self, caller: Caller) -> None:
        """Reading needs membership too: a token made for an account (`sub` an address) is
        honoured while the chain says it is the operator or an active member (the answer
        cached as a sender's is), not for the rest of the token's life once the member is
        removed or its organization suspended. A service's token names no account."""
        account = caller.subject.lower()
        if not _ACCOUNT.match(account) or account in self.oracle.operators():
            return
        if not await self.oracle.is_member(account):
            raise RpcAuthError(
                403, f"Unauthorized: the token's account {account} is not an active member of "
                "the data space",
            )  # fmt: skip

    async def local_answer(self, item: object) -> dict[str, Any] | None:
        """The proxy's own answer for a request, or None when it goes to the node."""
        request_id = request_id_of(item)
        shape = request_shape_error(item)
        if shape is not None:
            return error_response(request_id, INVALID_REQUEST, shape)
        assert isinstance(item, dict)
        method: str = item["method"]
        kind = classify_method(method)
        if kind is MethodClass.FORWARD:
            override = override_refusal(method, item.get("params", []))
            if override is not None:
                log.info("override_refused", method=method)
                return error_response(request_id, INVALID_PARAMS, override)
            if method == "eth_getLogs" and self.settings.max_log_range:
                error = await range_refusal(
                    item.get("params"), self.settings.max_log_range, head_reader(self.forward)
                )
                return (
                    None if error is None else {"jsonrpc": "2.0", "id": request_id, "error": error}
                )
            return None
        if kind is MethodClass.LOCAL:
            return result_response(request_id, LOCAL_ANSWERS[method])
        if kind is MethodClass.REFUSED:
            log.info("method_refused", method=method)
            return error_response(request_id, METHOD_NOT_FOUND, method_refusal_message(method))
        refusal = await self.send_refusal(item)
        return (
            None
            if refusal is None
            else {"jsonrpc": "2.0", "id": request_id, "error": refusal.error()}
        )

    async def forward(self, content: bytes) -> tuple[int, bytes]:
        """One message to the node, which answers every request in it: a caller's
        notification or null id is forwarded under an id of the proxy's (`handle_single`,
        `handle_batch`), so a node that refuses either (Hardhat's answers both with -32600)
        or answers a notification anyway behaves as one that does not, and no reply is ever
        left unread on a pooled connection for the next caller to receive."""
        return await self.upstream.post(content)

    async def handle(self, request: Request) -> Response:
        caller = None
        if self.verifier is not None:  # before the body is read: strangers cost nothing
            try:
                caller = self.verifier.caller(request.headers.get("authorization"))
                await self.check_account(caller)
            except RpcAuthError as refused:
                return JSONResponse(
                    error_response(None, UNAUTHORIZED_CODE, refused.message),
                    status_code=refused.status,
                    headers={"www-authenticate": "Bearer"},
                )
        try:
            payload = await self.read_payload(request)
        except BadRequestError as bad:
            return JSONResponse(error_response(None, bad.code, bad.message), status_code=bad.status)
        try:
            if isinstance(payload.value, list):
                return await self.handle_batch(payload.value, payload.body, caller)
            return await self.handle_single(payload.value, payload.body, caller)
        except UpstreamError as exc:
            log.error("upstream_unreachable", upstream=self.settings.upstream_url, error=str(exc))
            message = "the chain node is unreachable"
            value = payload.value
            if isinstance(value, list) and value:
                errors: Any = [
                    error_response(request_id_of(i), INTERNAL_ERROR, message) for i in value
                ]
            else:
                errors = error_response(request_id_of(value), INTERNAL_ERROR, message)
            return JSONResponse(errors, status_code=502)

    async def read_payload(self, request: Request) -> _Payload:
        """The body as JSON, or `BadRequestError` naming what is wrong with it (never a 5xx)."""
        if not _json_content_type(request.headers.get("content-type")):
            raise BadRequestError(
                INVALID_REQUEST, "content-type must be application/json", status=415
            )
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
        except ClientDisconnect as exc:
            raise BadRequestError(PARSE_ERROR, "the client went away mid-body", status=400) from exc
        body = b"".join(chunks)
        return _Payload(parse_body(body), body)

    async def handle_single(self, payload: object, body: bytes, caller: Caller | None) -> Response:
        refusal = _permission_refusal(payload, caller)
        if refusal is not None:
            return JSONResponse(refusal, status_code=403)
        answer = await self.local_answer(payload)
        if answer is not None:
            return Response(status_code=204) if _is_notification(payload) else JSONResponse(answer)
        assert isinstance(payload, dict)
        if payload.get("id") is not None:
            status, content = await self.forward(body)
            return _node_response(status, content)
        status, content = await self.forward(json.dumps({**payload, "id": 0}).encode())
        if "id" not in payload:
            return Response(status_code=204)  # JSON-RPC 2.0: a notification gets no reply
        (reply,) = _align([{"id": 0}], status, b"[" + content + b"]")
        return JSONResponse(_with_id(reply, None), status_code=200 if status == 204 else status)

    async def handle_batch(self, items: list[Any], body: bytes, caller: Caller | None) -> Response:
        if not items:
            return JSONResponse(error_response(None, INVALID_REQUEST, "empty batch"))
        # Sequential, not gather: decisions rarely await (membership is cached), and a
        # hundred tasks per batch cost more than the checks themselves.
        answers = [
            _permission_refusal(item, caller) or await self.local_answer(item) for item in items
        ]
        forwarded = [i for i, answer in enumerate(answers) if answer is None]
        if len(forwarded) == len(items) and all(i.get("id") is not None for i in items):
            # fast path: the untouched body
            status, content = await self.forward(body)
            return _node_response(status, content)
        merged: list[Any] = list(answers)
        if forwarded:
            # The node sees ids of the proxy's own (each forwarded item's position), so a
            # notification or a null id among them is answered like any request (`forward`).
            subset = [{**items[i], "id": n} for n, i in enumerate(forwarded)]
            status, content = await self.forward(json.dumps(subset).encode())
            for index, reply in zip(forwarded, _align(subset, status, content), strict=True):
                if "id" in items[index]:
                    merged[index] = _with_id(reply, items[index]["id"])
        # JSON-RPC 2.0: a notification gets no reply, not even a refusal (it is logged).
        replies = [
            reply
            for item, reply in zip(items, merged, strict=True)
            if reply is not None and not _is_notification(item)
        ]
        return JSONResponse(replies) if replies else Response(status_code=204)


def _is_notification(item: object) -> bool:
    """A well-formed request without an id (a malformed one is answered with id null)."""
    return isinstance(item, dict) and "id" not in item and request_shape_error(item) is None


def _permission_refusal(item: object, caller: Caller | None) -> dict[str, Any] | None:
    """Besu's answer to a method outside the token's permissions (None: allowed)."""
    if caller is None or not isinstance(item, dict) or not isinstance(item.get("method"), str):
        return None
    try:
        check_method(caller, item["method"])
    except RpcAuthError as refused:
        log.info("method_not_permitted", method=item["method"], subject=caller.subject)
        return error_response(request_id_of(item), UNAUTHORIZED_CODE, refused.message)
    return None


@dataclass(frozen=True)
class _Payload:
    value: Any
    body: bytes


class BadRequestError(Exception):
    """A body the proxy answers itself with a JSON-RPC error (and a 4xx status)."""

    def __init__(self, code: int, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def parse_body(body: bytes) -> Any:
    """Strict UTF-8 JSON, finite numbers, at most `MAX_JSON_DEPTH` deep (real requests nest a
    few levels; a state override, refused later, five); else `BadRequestError`. The depth is
    judged from the bytes before parsing (`dul.json_depth`)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(PARSE_ERROR, "parse error: the body is not UTF-8") from exc
    shape = bracket_shape(body)
    if shape == "unpaired":
        raise BadRequestError(PARSE_ERROR, "parse error: the body is not JSON (unpaired brackets)")
    if shape == "too_deep":
        raise BadRequestError(PARSE_ERROR, _too_deep_message())
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise BadRequestError(PARSE_ERROR, _too_deep_message()) from exc
    except ValueError as exc:
        raise BadRequestError(PARSE_ERROR, f"parse error: the body is not JSON ({exc})") from exc


def _too_deep_message() -> str:
    return f"parse error: the body nests deeper than {MAX_JSON_DEPTH} levels"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _json_content_type(header: str | None) -> bool:
    """No content-type, or application/json (browsers' cross-site text/plain posts are not)."""
    if header is None:
        return True
    return header.split(";", 1)[0].strip().lower() == "application/json"


def _node_response(status: int, content: bytes) -> Response:
    if status == 204 or not content:
        return Response(status_code=204)
    return Response(content, status_code=status, headers=JSON_HEADERS)


def _align(expected: Sequence[dict[str, Any]], status: int, content: bytes) -> list[Any]:
    """Upstream batch replies in the order of `expected` (by id when ids are unique)."""
    if not expected:
        return []
    try:
        replies = json.loads(content)
    except ValueError:
        replies = None
    if not isinstance(replies, list) or len(replies) != len(expected):
        message = f"the chain node answered the batch with HTTP {status}"
        return [error_response(item.get("id"), INTERNAL_ERROR, message) for item in expected]
    ids = [json.dumps(item.get("id")) for item in expected]
    if len(set(ids)) == len(ids):
        by_id = {json.dumps(r.get("id")) if isinstance(r, dict) else "": r for r in replies}
        if all(i in by_id for i in ids):
            return [by_id[i] for i in ids]
    return list(replies)


def _with_id(reply: Any, request_id: Any) -> dict[str, Any]:
    """A node's reply to a request forwarded under the proxy's id, with the caller's id."""
    if not isinstance(reply, dict):
        return error_response(request_id, INTERNAL_ERROR, "the chain node's reply is not JSON-RPC")
    return {**reply, "id": request_id}


def _too_large(limit: int) -> BadRequestError:
    return BadRequestError(INVALID_REQUEST, f"request body exceeds {limit} bytes", status=413)


def create_app(
    settings: ProxySettings,
    upstream_factory: Callable[[], Upstream] | None = None,
    *,
    sender_check: bytes,
) -> Starlette:
    """The proxy app; the upstream connection pool lives for the app's lifespan.

    `upstream_factory` swaps the node connection (tests pass an in-memory double);
    `sender_check` is the selector of the membership contract's `(address) -> bool` view that
    says who may send (`MembershipOracle`).
    """
    if len(sender_check) != 4:
        raise ValueError("sender_check is a 4-byte function selector")
    holder: dict[str, _Proxy] = {}

    def default_upstream() -> Upstream:
        kind = IpcUpstream if is_ipc_target(settings.upstream_url) else StreamUpstream
        return kind(
            settings.upstream_url,
            max_connections=settings.max_connections,
            timeout=settings.upstream_timeout,
        )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        upstream = (upstream_factory or default_upstream)()
        operator = _normalize_address(settings.operator_address)
        oracle = MembershipOracle(
            upstream=upstream,
            sender_check=sender_check,
            deployment_path=settings.deployment_path,
            static_operator=operator,
            ttl=settings.membership_ttl,
        )
        oracle.refresh()
        verifier = (
            None
            if settings.jwt_public_key_path is None
            else TokenVerifier.from_file(settings.jwt_public_key_path)
        )
        holder["proxy"] = _Proxy(
            settings=settings, upstream=upstream, oracle=oracle, verifier=verifier
        )
        log.info(
            "rpc_proxy_started",
            upstream=settings.upstream_url,
            operator=operator,
            deployment=str(settings.deployment_path),
            authentication=verifier is not None,
        )
        try:
            yield
        finally:
            holder.clear()
            await upstream.aclose()

    async def rpc(request: Request) -> Response:
        try:
            return await holder["proxy"].handle(request)
        except Exception:
            log.exception("rpc_proxy_error")  # a bug: still a JSON-RPC answer, never text
            return JSONResponse(
                error_response(None, INTERNAL_ERROR, "internal error in the RPC proxy"),
                status_code=500,
            )

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(_request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 400
        message = "JSON-RPC is served by POST /" if status in (404, 405) else str(exc)
        return JSONResponse(error_response(None, INVALID_REQUEST, message), status_code=status)

    return Starlette(
        routes=[Route("/", rpc, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )


def _parse_args(argv: Sequence[str] | None) -> ProxySettings:
    parser = argparse.ArgumentParser(prog="python -m dul.rpc_proxy", description=__doc__)
    parser.add_argument(
        "--upstream", help="the node: its IPC socket path, or its internal http:// URL"
    )
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--deployment", type=Path, help="deployment manifest JSON")
    parser.add_argument("--operator", help="operator address (may send before any deployment)")
    parser.add_argument("--membership-ttl", type=float)
    parser.add_argument(
        "--jwt-public-key",
        type=Path,
        help="require bearer JWTs signed by this key's private half (as Besu's "
        "--rpc-http-authentication-jwt-public-key-file)",
    )
    parser.add_argument(
        "--max-log-range", type=int, help="refuse wider eth_getLogs ranges, as Besu (0: no limit)"
    )
    parser.add_argument("--log-level")
    args = parser.parse_args(argv)
    overrides = {
        "upstream_url": args.upstream,
        "host": args.host,
        "port": args.port,
        "deployment_path": args.deployment,
        "operator_address": args.operator,
        "membership_ttl": args.membership_ttl,
        "jwt_public_key_path": args.jwt_public_key,
        "max_log_range": args.max_log_range,
        "log_level": args.log_level,
    }
    return ProxySettings(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None, sender_check: bytes) -> None:
    """Serve the proxy of the command line `argv` (the process entry point passes the sender
    check's selector: `dul.rpc_proxy`)."""
    import uvicorn

    from dul.log import configure

    settings = _parse_args(argv)
    configure(settings.log_level)
    uvicorn.run(
        create_app(settings, sender_check=sender_check),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=60,
    )
