"""A small async JSON-RPC client for the submitter's hot path (httpx, one keep-alive pool).

web3.py's async provider costs far more per call than the few standard methods the submitter
needs; this client speaks them directly and batches receipt polls into one HTTP request.

    GatewayError (ledger_gateway.errors)
    ├── RpcError              502 rpc_error: the node answered with a JSON-RPC error
    └── UnavailableError
        └── ChainUnavailableError  503 chain_unavailable: no answer (refused, timeout, HTTP 5xx)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import httpx

from dul.chain.rpc_auth import bearer_headers, rpc_token
from dul.contracts.logs import aget_logs, gateway_sizer
from ledger_gateway.errors import GatewayError, UnavailableError


class RpcError(GatewayError):
    """The node answered with a JSON-RPC error (`rpc_code`, `message`, revert `data`)."""

    status = 502
    code = "rpc_error"
    title = "Chain node error"

    def __init__(self, method: str, rpc_code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{method}: {message} (JSON-RPC {rpc_code})")
        self.method = method
        self.rpc_code = rpc_code
        self.message = message
        self.data = data

    @property
    def revert_data(self) -> bytes | None:
        """The revert payload of a refused call or estimate, when the node sent one."""
        raw = self.data.get("data") if isinstance(self.data, dict) else self.data
        if isinstance(raw, str) and raw.startswith("0x"):
            try:
                return bytes.fromhex(raw[2:])
            except ValueError:
                return None
        return None


class ChainUnavailableError(UnavailableError):
    """No usable answer from the node: it is down, slow, or answered garbage."""

    code = "chain_unavailable"


def to_hex(value: bytes) -> str:
    return "0x" + value.hex()


def from_hex(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


class RpcClient:
    """Standard Ethereum JSON-RPC over one httpx.AsyncClient (injected or owned)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
        token: str | None = None,
    ) -> None:
        """`token` is presented as `Authorization: Bearer` (default: `rpc_token()`)."""
        self.url = url
        self._headers = bearer_headers(token if token is not None else rpc_token())
        self._owned = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )
        self._ids = itertools.count(1)
        self.log_pages = gateway_sizer()
        """Blocks per `eth_getLogs` page, learnt from the node's refusals (`find_logs`)."""

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()

    async def _post(self, body: Any) -> Any:
        try:
            response = await self._client.post(self.url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:  # refused, reset, timeout: all mean "not now"
            raise ChainUnavailableError(f"chain node at {self.url} unreachable: {exc!r}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise ChainUnavailableError(
                f"chain node at {self.url} answered HTTP {response.status_code}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise ChainUnavailableError(
                f"chain node at {self.url} answered HTTP {response.status_code} without JSON"
            ) from exc

    @staticmethod
    def _result(method: str, reply: Any) -> Any:
        if not isinstance(reply, dict):
            raise ChainUnavailableError(f"{method}: malformed JSON-RPC reply {reply!r:.200}")
        if "error" in reply:
            error = reply["error"] or {}
            raise RpcError(
                method, int(error.get("code", 0)), str(error.get("message", "")), error.get("data")
            )
        return reply.get("result")

    async def request(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return self._result(method, await self._post(body))

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Several calls in one HTTP request; each item is its result or its `RpcError`."""
        if not calls:
            return []
        first = next(self._ids)
        body = [
            {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)}
            for i, (m, p) in enumerate(calls)
        ]
        for _ in range(len(calls) - 1):
            next(self._ids)
        replies = await self._post(body)
        if not isinstance(replies, list) or len(replies) != len(calls):
            raise ChainUnavailableError(f"malformed JSON-RPC batch reply {replies!r:.200}")
        by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
        out: list[Any] = []
        for i, (method, _) in enumerate(calls):
            try:
                out.append(self._result(method, by_id.get(first + i)))
            except RpcError as exc:
                out.append(exc)
        return out

    # --- the methods the submitter uses ------------------------------------------------------

    async def chain_id(self) -> int:
        return int(await self.request("eth_chainId"), 16)

    async def block_number(self) -> int:
        return int(await self.request("eth_blockNumber"), 16)

    async def transaction_count(self, address: str, block: str = "latest") -> int:
        return int(await self.request("eth_getTransactionCount", address, block), 16)

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        return from_hex(await self.request("eth_sendRawTransaction", to_hex(raw)))

    async def receipt(self, tx_hash: bytes) -> dict[str, Any] | None:
        result = await self.request("eth_getTransactionReceipt", to_hex(tx_hash))
        return dict(result) if result else None

    async def receipts(self, tx_hashes: Sequence[bytes]) -> list[dict[str, Any] | None]:
        """Receipts of many transactions in one round trip (None: not mined or unknown)."""
        results = await self.batch([("eth_getTransactionReceipt", [to_hex(h)]) for h in tx_hashes])
        out: list[dict[str, Any] | None] = []
        for result in results:
            if isinstance(result, RpcError):
                raise result
            out.append(dict(result) if result else None)
        return out

    async def call(
        self, to: str, data: bytes, *, sender: str | None = None, block: str = "latest"
    ) -> bytes:
        """eth_call; a revert raises `RpcError` whose `revert_data` carries the custom error."""
        tx: dict[str, Any] = {"to": to, "data": to_hex(data)}
        if sender is not None:
            tx["from"] = sender
        return from_hex(await self.request("eth_call", tx, block))

    async def estimate_gas(self, to: str, data: bytes, *, sender: str) -> int:
        tx = {"from": sender, "to": to, "data": to_hex(data)}
        return int(await self.request("eth_estimateGas", tx), 16)

    async def get_logs(self, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        """One `eth_getLogs` call as given: for narrow ranges only (see `find_logs`)."""
        return list(await self.request("eth_getLogs", filter_))

    async def find_logs(
        self,
        filter_: dict[str, Any],
        *,
        from_block: int = 0,
        to_block: int | None = None,
        newest_first: bool = False,
        first_match: bool = False,
    ) -> list[dict[str, Any]]:
        """The logs `filter_` matches from `from_block` to `to_block` (default: the head), read
        in pages a node serves (`dul.contracts.logs`): any JSON-RPC error answer to a page is
        taken as a refusal of its range. `first_match` stops at the first page with a match."""
        last = await self.block_number() if to_block is None else to_block
        return await aget_logs(
            self.get_logs,
            filter_,
            from_block,
            last,
            sizer=self.log_pages,
            refused=lambda exc: isinstance(exc, RpcError),
            newest_first=newest_first,
            first_match=first_match,
        )
