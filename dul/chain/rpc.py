"""The product's one JSON-RPC client: standard Ethereum JSON-RPC to a node or its permission
guard, sync (`RpcClient`: the indexer, the audit service, the CLI, start-up probes) and async
(`AsyncRpcClient`: the gateway) over the same envelope, error mapping, batching and paged
`eth_getLogs`.

It lives in `dul.chain`, beside the node, the guard, the IPC socket and the bearer tokens,
because it is the transport: it knows nothing of the contracts (`dul.contracts` sits on top of
it and gives the bytes meaning), and `dul.chain.node` probes the node through it.

What both halves share, so a node's answer means the same to every caller:

- one request envelope (`jsonrpc`, a fresh `id`, `params` as a list) and the bearer token
  (`dul.chain.rpc_auth.rpc_token()` unless one is given);
- one mapping of answers to errors (below): HTTP 5xx, 408 and 429, a dropped connection or a
  reply that is not JSON mean "no answer now"; a JSON-RPC error object is an `RpcError`
  carrying the node's code, message and `data` (a revert's custom error); an `eth_getLogs`
  refused in any way a node words it (Besu -32005 "exceeds maximum RPC range limit", geth
  "query returned more than 10000 results", a hosted endpoint's "block range too large", an
  HTTP 413 or 5xx, a read timeout, a reply over the caller's byte budget) is a `RangeRefusedError`;
- batches (a JSON array) cut to at most `MAX_BATCH_ITEMS` requests and `MAX_BATCH_BYTES` bytes
  (Besu refuses over 1,024 items by default, the guard bodies over 2 MiB), each item its result
  or its `RpcError`; a node that answers a batch with anything but an array is asked one
  request at a time;
- `find_logs`: one filter over a block range in pages the node serves (`dul.chain.log_pages`:
  halved on refusal, down to one block, grown back after a good page), newest first and
  stopping at the first match when asked.

The hot paths pay nothing for the sharing: a request is one dict, one post and one reply check
(`tests/unit/test_rpc_client.py` holds the behaviour; the README the before/after cost).

Errors (`dul.errors.ChainError`, stable codes):

    NodeError                    node_error
    ├── NodeUnavailableError     node_unavailable  no usable answer (transport, HTTP 5xx/408/429,
    │                                              not JSON): try again later
    └── RpcError                 rpc_error         the node answered with a JSON-RPC error
        └── RangeRefusedError    range_refused     the node will not serve this eth_getLogs range
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final

import httpx
from pydantic_core import from_json

from dul.chain.http1 import Http1Error, Http1Pool, ReadTimeoutError
from dul.chain.ipc import ipc_call, is_ipc_target
from dul.chain.log_pages import PageSizer, aget_logs, gateway_sizer, get_logs
from dul.chain.rpc_auth import bearer_headers, rpc_token
from dul.errors import ChainError

GET_LOGS: Final = "eth_getLogs"
SEND_RAW: Final = "eth_sendRawTransaction"
_SEND_HEAD: Final = b'{"jsonrpc":"2.0","id":%d,"method":"eth_sendRawTransaction","params":["'
MAX_BATCH_ITEMS: Final = 256
MAX_BATCH_BYTES: Final = 1_000_000
Log = dict[str, Any]
Call = tuple[str, Sequence[Any]]


class NodeError(ChainError):
    code = "node_error"


class NodeUnavailableError(NodeError):
    """No usable answer from the node: down, slow, overloaded, or it answered garbage."""

    code = "node_unavailable"


class RpcError(NodeError):
    """The node answered with a JSON-RPC error (`method`, `rpc_code`, `message`, `data`)."""

    code = "rpc_error"

    def __init__(
        self,
        method: str,
        rpc_code: int | None,
        message: str,
        data: Any = None,
        *,
        code: str | None = None,
    ) -> None:
        text = f"{method}: {message}" + (f" (JSON-RPC {rpc_code})" if rpc_code is not None else "")
        super().__init__(text, code=code, rpc_code=rpc_code)
        self.method = method
        self.rpc_code = rpc_code
        self.reason = message
        """The node's own message."""
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


class RangeRefusedError(RpcError):
    """The node will not serve this `eth_getLogs` range: ask for a smaller one."""

    code = "range_refused"

    def __init__(
        self, message: str, rpc_code: int | None = None, *, reply_bytes: int | None = None
    ) -> None:
        super().__init__(GET_LOGS, rpc_code, message)
        self.reply_bytes = reply_bytes
        """The declared length of a reply refused for its size."""


def range_refused(exc: Exception) -> bool:
    """`dul.chain.log_pages`' `refused`: the node refused the range (not: it is down)."""
    return isinstance(exc, RangeRefusedError)


def to_hex(value: bytes) -> str:
    return "0x" + value.hex()


def from_hex(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


# --- what both halves share -----------------------------------------------------------------


def _transport_error(method: str, url: str, exc: httpx.HTTPError) -> NodeError:
    if method == GET_LOGS and isinstance(exc, httpx.ReadTimeout):
        # too heavy to serve in time: page smaller (a connection that never opened is an outage)
        return RangeRefusedError(f"timed out: {exc}")
    return NodeUnavailableError(f"{method}: the node at {url} did not answer: {exc!r}")


def _status_error(method: str, status: int, content: bytes) -> NodeError:
    """The error of an HTTP answer that is not 2xx."""
    if method == GET_LOGS and (status == 413 or status >= 500):
        return RangeRefusedError(f"HTTP {status}")
    if status < 500 and status not in (408, 429):
        try:  # the guard refuses with a JSON-RPC error object (401, 403)
            reply = json.loads(content)
        except ValueError:
            reply = None
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            # 401/403: the guard refused the credential, not the range (for every method)
            return _rpc_error(method, reply["error"], ranged=status not in (401, 403))
    return NodeUnavailableError(f"{method}: the node answered HTTP {status}")


def _rpc_error(method: str, error: Any, *, ranged: bool = True) -> RpcError:
    if not isinstance(error, dict):
        error = {"message": str(error)}
    raw_code = error.get("code")
    rpc_code = raw_code if isinstance(raw_code, int) else None
    message = str(error.get("message", error))
    if method == GET_LOGS and ranged:
        # Nodes word this differently (Besu: "exceeds maximum", geth: "query returned more
        # than 10000 results", Alchemy: "block range too large"): any refusal of a range is
        # answered by a smaller range, down to one block.
        return RangeRefusedError(message, rpc_code)
    return RpcError(method, rpc_code, message, error.get("data"))


def _result(method: str, reply: Any) -> Any:
    """The result of one reply object, or its error raised."""
    if not isinstance(reply, dict):
        raise NodeUnavailableError(f"{method}: malformed JSON-RPC reply {reply!r:.200}")
    error = reply.get("error")
    if error is not None:
        raise _rpc_error(method, error)
    return reply.get("result")


def _chunks(calls: Sequence[Call]) -> Iterator[Sequence[Call]]:
    """`calls` cut into batches within `MAX_BATCH_ITEMS` and (about) `MAX_BATCH_BYTES`."""
    start, size = 0, 0
    for i, (method, params) in enumerate(calls):
        cost = len(method) + sum(len(p) if isinstance(p, str) else 64 for p in params) + 64
        if i > start and (i - start >= MAX_BATCH_ITEMS or size + cost > MAX_BATCH_BYTES):
            yield calls[start:i]
            start, size = i, 0
        size += cost
    if start < len(calls):
        yield calls[start:]


def _batch_body(first: int, calls: Sequence[Call]) -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": first + i, "method": m, "params": list(p)}
        for i, (m, p) in enumerate(calls)
    ]


def _batch_results(first: int, calls: Sequence[Call], replies: Any) -> list[Any] | None:
    """Each call's result or `RpcError`; None when the node did not answer as a batch (or
    left some out): the caller asks those one at a time."""
    if not isinstance(replies, list):
        return None
    by_id = {r.get("id"): r for r in replies if isinstance(r, dict)}
    out: list[Any] = []
    for i, (method, _) in enumerate(calls):
        reply = by_id.get(first + i)
        if reply is None:
            return None
        try:
            out.append(_result(method, reply))
        except RpcError as exc:
            out.append(exc)
    return out


def _hex_int(value: Any) -> int:
    return int(value, 16)


def _log_filter(filter_: Mapping[str, Any]) -> dict[str, Any]:
    return dict(filter_)


# --- sync ---------------------------------------------------------------------------------


class RpcClient:
    """Standard JSON-RPC over one keep-alive `httpx.Client` (or the node's IPC socket when
    `url` is a socket path); `transport` is the test seam."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        """`token` is presented as `Authorization: Bearer` (default: `rpc_token()`)."""
        self.url = url
        self.timeout = timeout
        self.token = token if token is not None else rpc_token()
        self.custom_transport = transport is not None
        """A test seam's transport: a worker process could not rebuild it."""
        if transport is None and is_ipc_target(url):
            transport = IpcTransport(url, timeout)
        # TLS settings (the CA bundle loaded: ~20 ms of CPU for each client, the indexer's and
        # each of its fetch workers') only for a node served over TLS; every request goes to
        # `url`, so a plain-http or IPC node's client never makes a TLS connection.
        tls = url.lower().startswith("https:")
        self.client = httpx.Client(
            timeout=timeout, transport=transport, headers=bearer_headers(self.token), verify=tls
        )
        self._target = "http://ipc" if is_ipc_target(url) else url
        self._ids = itertools.count(1)
        self.reply_bytes = 0
        """Length of the last reply read."""
        self.log_pages = gateway_sizer()
        """Blocks per `eth_getLogs` page of `find_logs`, learnt from the node's refusals."""

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _post(self, method: str, body: Any, max_bytes: int | None) -> Any:
        try:
            with self.client.stream("POST", self._target, json=body) as response:
                content = self._read(response, method, max_bytes)
        except httpx.HTTPError as exc:
            raise _transport_error(method, self.url, exc) from exc
        self.reply_bytes = len(content)
        if response.status_code >= 300:
            raise _status_error(method, response.status_code, content)
        try:
            # pydantic-core's parser: half of `json.loads`'s CPU on an eth_getLogs page
            # (measured: ~2 against ~4 us per log; the indexer's fetch workers), same values.
            # Keys only are looked up in its string cache: values (hashes, hex numbers)
            # seldom repeat within a reply (~1.7 -> ~1.4 us per log).
            return from_json(content, cache_strings="keys")
        except ValueError as exc:
            raise NodeUnavailableError(f"{method}: unreadable reply ({exc})") from exc

    @staticmethod
    def _read(response: httpx.Response, method: str, max_bytes: int | None) -> bytes:
        if max_bytes is None or response.status_code != 200:
            return response.read()
        declared = response.headers.get("content-length")
        if declared is not None and int(declared) > max_bytes:
            raise RangeRefusedError(
                f"a {declared}-byte reply is over the page budget", reply_bytes=int(declared)
            )
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise RangeRefusedError(f"the reply is over the {max_bytes}-byte budget")
            chunks.append(chunk)
        return b"".join(chunks)

    def request(self, method: str, *params: Any, max_bytes: int | None = None) -> Any:
        """The result; with `max_bytes`, a reply longer than that is dropped unread past the
        limit and raised as `RangeRefusedError` (how a page's memory stays bounded)."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return _result(method, self._post(method, body, max_bytes))

    def request_prefix(
        self, method: str, *params: Any, max_bytes: int, keep_bytes: int
    ) -> tuple[Any, bool]:
        """`(result, True)`; or, for a reply longer than `max_bytes`, `(what its first
        `keep_bytes` bytes hold, False)` with the rest dropped unread: a result array's
        complete elements and maybe an incomplete last one (the caller keeps what it can use
        of the work the node has done; `reply_bytes` is then the reply's declared length)."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        declared: str | None = None
        complete = True
        try:
            with self.client.stream("POST", self._target, json=body) as response:
                if response.status_code != 200:
                    content = response.read()
                else:
                    declared = response.headers.get("content-length")
                    over = declared is not None and declared.isdigit() and int(declared) > max_bytes
                    limit = keep_bytes if over else max_bytes  # read no more than is kept
                    chunks: list[bytes] = []
                    size = 0
                    for chunk in response.iter_bytes():
                        if size + len(chunk) > limit:
                            chunks.append(chunk[: limit - size])
                            complete = False
                            break
                        chunks.append(chunk)
                        size += len(chunk)
                    content = b"".join(chunks)
        except httpx.HTTPError as exc:
            raise _transport_error(method, self.url, exc) from exc
        if response.status_code >= 300:
            raise _status_error(method, response.status_code, content)
        if complete:
            self.reply_bytes = len(content)
            try:
                return _result(method, from_json(content, cache_strings="keys")), True
            except ValueError as exc:
                raise NodeUnavailableError(f"{method}: unreadable reply ({exc})") from exc
        self.reply_bytes = int(declared) if declared is not None and declared.isdigit() else 0
        try:
            partial = from_json(content[:keep_bytes], allow_partial=True, cache_strings="keys")
        except ValueError:
            partial = None
        result = partial.get("result") if isinstance(partial, dict) else None
        if not isinstance(result, list):
            raise RangeRefusedError(
                f"the reply is over the {max_bytes}-byte budget",
                reply_bytes=self.reply_bytes or None,
            )
        return result, False

    def reply(self, method: str, *params: Any) -> dict[str, Any]:
        """The node's reply object as it is, a JSON-RPC error included rather than raised (what
        a web3 provider hands web3); no usable answer raises as `request` does."""
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        answer = self._post(method, body, None)
        if not isinstance(answer, dict):
            raise NodeUnavailableError(f"{method}: malformed JSON-RPC reply {answer!r:.200}")
        return answer

    def batch(self, calls: Sequence[Call]) -> list[Any]:
        """Each call's result or its `RpcError`, in order, in as few HTTP requests as the
        batch limits allow (one request at a time where the node answers no batch)."""
        out: list[Any] = []
        for chunk in _chunks(calls):
            first = next(self._ids)
            self._ids = itertools.count(first + len(chunk))
            method = f"batch of {len(chunk)} {chunk[0][0]}"
            try:
                replies = self._post(method, _batch_body(first, chunk), None)
            except NodeUnavailableError:
                raise
            except NodeError:  # a 413 or a JSON-RPC error for the whole batch
                replies = None
            results = _batch_results(first, chunk, replies)
            out.extend(results if results is not None else [self._single(c) for c in chunk])
        return out

    def _single(self, call: Call) -> Any:
        try:
            return self.request(call[0], *call[1])
        except RpcError as exc:
            return exc

    # --- standard methods --------------------------------------------------------------------

    def chain_id(self) -> int:
        return _hex_int(self.request("eth_chainId"))

    def block_number(self) -> int:
        return _hex_int(self.request("eth_blockNumber"))

    def block(self, number: int | str, full: bool = False) -> dict[str, Any] | None:
        tag = hex(number) if isinstance(number, int) else number
        result = self.request("eth_getBlockByNumber", tag, full)
        return dict(result) if result else None

    def call(
        self, to: str, data: bytes, *, sender: str | None = None, block: int | str = "latest"
    ) -> bytes:
        """eth_call; a revert raises `RpcError` whose `revert_data` carries the custom error."""
        tx: dict[str, Any] = {"to": to, "data": to_hex(data)}
        if sender is not None:
            tx["from"] = sender
        return from_hex(
            self.request("eth_call", tx, hex(block) if isinstance(block, int) else block)
        )

    def get_logs(self, filter_: Mapping[str, Any], *, max_bytes: int | None = None) -> list[Log]:
        """One `eth_getLogs` call as given: for narrow ranges only (see `find_logs`)."""
        return list(self.request(GET_LOGS, _log_filter(filter_), max_bytes=max_bytes))

    def find_logs(
        self,
        filter_: Mapping[str, Any],
        *,
        from_block: int = 0,
        to_block: int | None = None,
        newest_first: bool = False,
        first_match: bool = False,
        sizer: PageSizer | None = None,
    ) -> list[Log]:
        """The logs `filter_` matches from `from_block` to `to_block` (default: the head), in
        pages the node serves; `first_match` stops at the first page with a match."""
        last = self.block_number() if to_block is None else to_block
        return get_logs(
            self.get_logs,
            filter_,
            from_block,
            last,
            sizer=self.log_pages if sizer is None else sizer,
            refused=range_refused,
            newest_first=newest_first,
            first_match=first_match,
        )


def request_once(
    url: str, method: str, *params: Any, timeout: float = 10.0, token: str | None = None
) -> Any:
    """One call on a fresh connection (start-up probes, `dul chain status`): `url` an http URL
    or the node's IPC socket path; `token` presented when given (no default token: a probe
    names the one it means)."""
    with RpcClient(url, timeout=timeout, token=token or "") as rpc:
        return rpc.request(method, *params)


class IpcTransport(httpx.BaseTransport):
    """JSON-RPC over the node's IPC socket behind httpx's interface: each request one blocking
    exchange on a fresh connection (`dul.chain.ipc.ipc_call`); for probes and set-up only."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            reply = ipc_call(self.target, json.loads(request.read()), timeout=self.timeout)
        except (OSError, ValueError) as exc:
            raise httpx.ConnectError(f"{self.target}: {exc}", request=request) from exc
        return httpx.Response(200, content=json.dumps(reply).encode(), request=request)


# --- async --------------------------------------------------------------------------------


class AsyncRpcClient:
    """Standard JSON-RPC over one `httpx.AsyncClient` (injected or owned): the gateway's."""

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
        self._json_headers = {**self._headers, "content-type": "application/json"}
        self._owned = client is None
        self._lean: Http1Pool | None = None
        """A plain `http://` node (the gateway's guard) is asked through `dul.chain.http1`:
        ~0.1 ms of the event loop's CPU per call where httpx took ~1.2 ms."""
        if client is None and url.startswith("http://"):
            self._lean = Http1Pool(
                url, self._headers, timeout=timeout, connect_timeout=min(timeout, 2.0)
            )
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 2.0)),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )
        self._ids = itertools.count(1)
        self.log_pages = gateway_sizer()
        """Blocks per `eth_getLogs` page of `find_logs`, learnt from the node's refusals."""

    async def aclose(self) -> None:
        if self._owned:
            await self._client.aclose()
        if self._lean is not None:
            await self._lean.aclose()

    async def _post(self, method: str, body: Any) -> Any:
        return await self._post_json(method, json.dumps(body, separators=(",", ":")).encode())

    async def _post_json(self, method: str, payload: bytes) -> Any:
        """The parsed reply to POSTing `payload` (a JSON-RPC request or batch, as bytes)."""
        if self._lean is not None:
            status, content = await self._lean_post(method, payload)
        else:
            try:
                response = await self._client.post(
                    self.url, content=payload, headers=self._json_headers
                )
            except httpx.HTTPError as exc:
                raise _transport_error(method, self.url, exc) from exc
            status, content = response.status_code, response.content
        if status >= 300:
            raise _status_error(method, status, content)
        try:
            return from_json(content)
        except ValueError as exc:
            raise NodeUnavailableError(f"{method}: unreadable reply ({exc})") from exc

    async def _lean_post(self, method: str, payload: bytes) -> tuple[int, bytes]:
        """`_post`'s exchange through `Http1Pool`, its failures mapped as httpx's are."""
        assert self._lean is not None
        try:
            return await self._lean.post(payload)
        except ReadTimeoutError as exc:
            if method == GET_LOGS:  # too heavy to serve in time: page smaller
                raise RangeRefusedError(f"timed out: {exc}") from exc
            raise NodeUnavailableError(
                f"{method}: the node at {self.url} did not answer: {exc!r}"
            ) from exc
        except (Http1Error, TimeoutError) as exc:
            raise NodeUnavailableError(
                f"{method}: the node at {self.url} did not answer: {exc!r}"
            ) from exc

    async def request(self, method: str, *params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
        return _result(method, await self._post(method, body))

    async def batch(self, calls: Sequence[Call]) -> list[Any]:
        """`RpcClient.batch`, awaited."""
        out: list[Any] = []
        for chunk in _chunks(calls):
            first = next(self._ids)
            self._ids = itertools.count(first + len(chunk))
            out.extend(await self._batch_chunk(first, chunk, None))
        return out

    async def _batch_chunk(
        self, first: int, chunk: Sequence[Call], payload: bytes | None
    ) -> list[Any]:
        """One batch of `chunk` (ids from `first`; `payload`: its body, already written)."""
        method = f"batch of {len(chunk)} {chunk[0][0]}"
        try:
            if payload is None:
                replies = await self._post(method, _batch_body(first, chunk))
            else:
                replies = await self._post_json(method, payload)
        except NodeUnavailableError:
            raise
        except NodeError:
            replies = None
        results = _batch_results(first, chunk, replies)
        if results is None:
            results = [await self._single(c) for c in chunk]
        return results

    async def send_raw_transactions(self, raws: Sequence[bytes]) -> list[Any]:
        """`eth_sendRawTransaction` of each of `raws` in order, in the batches `batch` would
        make: each item the node's answer (the hash, as hex) or its `RpcError`.

        The body is joined as bytes around each transaction's hex: `json.dumps` scanned the
        hex of a 256-record transaction (~280 kB) character by character for something to
        escape, which hex never holds (3 such transactions: ~31 ms -> ~6 ms, in process)."""
        calls = [(SEND_RAW, (to_hex(raw),)) for raw in raws]
        out: list[Any] = []
        for chunk in _chunks(calls):
            first = next(self._ids)
            self._ids = itertools.count(first + len(chunk))
            pieces = [b"["]
            for i, (_, (hex_raw,)) in enumerate(chunk):
                pieces += (b"," if i else b"", _SEND_HEAD % (first + i), hex_raw.encode(), b'"]}')
            pieces.append(b"]")
            payload = b"".join(pieces)
            out.extend(await self._batch_chunk(first, chunk, payload))
        return out

    async def _single(self, call: Call) -> Any:
        try:
            return await self.request(call[0], *call[1])
        except RpcError as exc:
            return exc

    # --- standard methods --------------------------------------------------------------------

    async def chain_id(self) -> int:
        return _hex_int(await self.request("eth_chainId"))

    async def block_number(self) -> int:
        return _hex_int(await self.request("eth_blockNumber"))

    async def transaction_count(self, address: str, block: str = "latest") -> int:
        return _hex_int(await self.request("eth_getTransactionCount", address, block))

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        """(Its body written as `send_raw_transactions` writes each of its items.)"""
        payload = _SEND_HEAD % next(self._ids) + to_hex(raw).encode() + b'"]}'
        return from_hex(_result(SEND_RAW, await self._post_json(SEND_RAW, payload)))

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
        return _hex_int(await self.request("eth_estimateGas", tx))

    async def get_logs(self, filter_: Mapping[str, Any]) -> list[Log]:
        """One `eth_getLogs` call as given: for narrow ranges only (see `find_logs`)."""
        return list(await self.request(GET_LOGS, _log_filter(filter_)))

    async def find_logs(
        self,
        filter_: Mapping[str, Any],
        *,
        from_block: int = 0,
        to_block: int | None = None,
        newest_first: bool = False,
        first_match: bool = False,
        sizer: PageSizer | None = None,
    ) -> list[Log]:
        """`RpcClient.find_logs`, awaited."""
        last = await self.block_number() if to_block is None else to_block
        return await aget_logs(
            self.get_logs,
            filter_,
            from_block,
            last,
            sizer=self.log_pages if sizer is None else sizer,
            refused=range_refused,
            newest_first=newest_first,
            first_match=first_match,
        )
