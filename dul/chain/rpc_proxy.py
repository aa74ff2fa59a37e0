"""The permissioned JSON-RPC endpoint: the only door to the embedded node.

anvil has no access control, so it listens on an internal port and this ASGI app sits on the
public one. It forwards an allowlist of standard methods (single and batch requests, order and
ids preserved) over a pool of keep-alive connections (`upstream.StreamUpstream`), answers
`eth_accounts` with `[]`, refuses every other method (anvil_*, evm_*, debug_*,
eth_sendTransaction, …) with JSON-RPC error -32601, and
lets a signed transaction through only when its sender is the operator or an active member
(`Membership.isAuthorizedSender(address)` at the address in the deployment manifest, cached
for `membership_ttl` seconds); otherwise error -32003. With `--max-log-range N` it refuses
`eth_getLogs` over more than N blocks as Besu does (`dul.chain.log_range`).

Run it with `python -m dul.chain.rpc_proxy --upstream URL --port N [--deployment PATH]`;
`dul chain up` does that for you.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from eth_hash.auto import keccak
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dul.chain.log_range import head_reader, range_refusal
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
    parse_hex_bytes,
    request_shape_error,
    result_response,
    sender_refusal,
)
from dul.chain.settings import ProxySettings
from dul.chain.upstream import StreamUpstream, Upstream, UpstreamError

log = structlog.get_logger("dul.chain.rpc_proxy")

IS_AUTHORIZED_SENDER_SELECTOR = keccak(b"isAuthorizedSender(address)")[:4].hex()
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
    """

    upstream: Upstream
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
        data = "0x" + IS_AUTHORIZED_SENDER_SELECTOR + "0" * 24 + address[2:]
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

    async def send_refusal(self, item: dict[str, Any]) -> Refusal | None:
        params = item.get("params")
        if not isinstance(params, list) or not params:
            return Refusal(INVALID_PARAMS, "expected the signed transaction as first parameter")
        try:
            tx = decode_raw_transaction(parse_hex_bytes(params[0]))
        except TxDecodeError as exc:
            return Refusal(INVALID_PARAMS, f"invalid raw transaction: {exc}")
        operators = self.oracle.operators()
        refusal = creation_refusal(tx, operators)
        if refusal is None and tx.sender not in operators:
            refusal = sender_refusal(tx, operators, await self.oracle.is_member(tx.sender))
        if refusal is not None:
            log.info("transaction_refused", sender=tx.sender, to=tx.to, reason=refusal.message)
        return refusal

    async def local_answer(self, item: object) -> dict[str, Any] | None:
        """The proxy's own answer for a request, or None when it goes to the node."""
        request_id = item.get("id") if isinstance(item, dict) else None
        shape = request_shape_error(item)
        if shape is not None:
            return error_response(request_id, INVALID_REQUEST, shape)
        assert isinstance(item, dict)
        method: str = item["method"]
        kind = classify_method(method)
        if kind is MethodClass.FORWARD:
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
        return await self.upstream.post(content)

    async def handle(self, request: Request) -> Response:
        declared = request.headers.get("content-length")
        if (
            declared is not None
            and declared.isdigit()
            and int(declared) > self.settings.max_body_bytes
        ):
            return _too_large(self.settings.max_body_bytes)
        body = await request.body()
        if len(body) > self.settings.max_body_bytes:
            return _too_large(self.settings.max_body_bytes)
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse(error_response(None, PARSE_ERROR, "parse error: body is not JSON"))
        try:
            if isinstance(payload, list):
                return await self.handle_batch(payload, body)
            return await self.handle_single(payload, body)
        except UpstreamError as exc:
            log.error("upstream_unreachable", upstream=self.settings.upstream_url, error=str(exc))
            message = "the chain node is unreachable"
            if isinstance(payload, list) and payload:
                ids = [i.get("id") if isinstance(i, dict) else None for i in payload]
                errors: Any = [error_response(i, INTERNAL_ERROR, message) for i in ids]
            else:
                rid = payload.get("id") if isinstance(payload, dict) else None
                errors = error_response(rid, INTERNAL_ERROR, message)
            return JSONResponse(errors, status_code=502)

    async def handle_single(self, payload: object, body: bytes) -> Response:
        answer = await self.local_answer(payload)
        if answer is not None:
            return JSONResponse(answer)
        status, content = await self.forward(body)
        return Response(content, status_code=status, headers=JSON_HEADERS)

    async def handle_batch(self, items: list[Any], body: bytes) -> Response:
        if not items:
            return JSONResponse(error_response(None, INVALID_REQUEST, "empty batch"))
        # Sequential, not gather: decisions rarely await (membership is cached), and a
        # hundred tasks per batch cost more than the checks themselves.
        answers = [await self.local_answer(item) for item in items]
        forwarded = [i for i, answer in enumerate(answers) if answer is None]
        if len(forwarded) == len(items):
            status, content = await self.forward(body)  # fast path: the untouched body
            return Response(content, status_code=status, headers=JSON_HEADERS)
        merged: list[Any] = list(answers)
        if forwarded:
            subset = [items[i] for i in forwarded]
            status, content = await self.forward(json.dumps(subset).encode())
            for index, reply in zip(forwarded, _align(subset, status, content), strict=True):
                merged[index] = reply
        return JSONResponse(merged)


def _align(subset: Sequence[dict[str, Any]], status: int, content: bytes) -> list[Any]:
    """Upstream batch replies in the order of `subset` (by id when ids are unique)."""
    try:
        replies = json.loads(content)
    except ValueError:
        replies = None
    if not isinstance(replies, list) or len(replies) != len(subset):
        message = f"the chain node answered the batch with HTTP {status}"
        return [error_response(item.get("id"), INTERNAL_ERROR, message) for item in subset]
    ids = [json.dumps(item.get("id")) for item in subset]
    if len(set(ids)) == len(ids):
        by_id = {json.dumps(r.get("id")) if isinstance(r, dict) else "": r for r in replies}
        if all(i in by_id for i in ids):
            return [by_id[i] for i in ids]
    return list(replies)


def _too_large(limit: int) -> Response:
    return JSONResponse(
        error_response(None, INVALID_REQUEST, f"request body exceeds {limit} bytes"),
        status_code=413,
    )


def create_app(
    settings: ProxySettings, upstream_factory: Callable[[], Upstream] | None = None
) -> Starlette:
    """The proxy app; the upstream connection pool lives for the app's lifespan.

    `upstream_factory` swaps the node connection (tests pass an in-memory double).
    """
    holder: dict[str, _Proxy] = {}

    def default_upstream() -> Upstream:
        return StreamUpstream(
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
            deployment_path=settings.deployment_path,
            static_operator=operator,
            ttl=settings.membership_ttl,
        )
        oracle.refresh()
        holder["proxy"] = _Proxy(settings=settings, upstream=upstream, oracle=oracle)
        log.info(
            "rpc_proxy_started",
            upstream=settings.upstream_url,
            operator=operator,
            deployment=str(settings.deployment_path),
        )
        try:
            yield
        finally:
            holder.clear()
            await upstream.aclose()

    async def rpc(request: Request) -> Response:
        return await holder["proxy"].handle(request)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/", rpc, methods=["POST"]), Route("/healthz", healthz, methods=["GET"])],
        lifespan=lifespan,
    )


def _parse_args(argv: Sequence[str] | None) -> ProxySettings:
    parser = argparse.ArgumentParser(prog="python -m dul.chain.rpc_proxy", description=__doc__)
    parser.add_argument("--upstream", help="the node's internal JSON-RPC URL")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--deployment", type=Path, help="deployment manifest JSON")
    parser.add_argument("--operator", help="operator address (may send before any deployment)")
    parser.add_argument("--membership-ttl", type=float)
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
        "max_log_range": args.max_log_range,
        "log_level": args.log_level,
    }
    return ProxySettings(**{k: v for k, v in overrides.items() if v is not None})


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from dul.log import configure

    settings = _parse_args(argv)
    configure(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_keep_alive=60,
    )


if __name__ == "__main__":
    main()
