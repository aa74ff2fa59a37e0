"""The product's one JSON-RPC client (`dul.chain.rpc`), sync and async against the same
scripted nodes: the same answer is the same result or the same error in both, batches are cut
and fall back to single requests, and `find_logs` pages shrink on a refusal and grow back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from dul.chain import rpc as rpc_module
from dul.chain.rpc import (
    AsyncRpcClient,
    NodeUnavailableError,
    RangeRefusedError,
    RpcClient,
    RpcError,
)

Handler = Callable[[httpx.Request], httpx.Response]


class Both:
    """One scripted node behind a sync and an async client: `run(method, *params)` gives the
    two outcomes (result or exception)."""

    def __init__(self, handle: Handler) -> None:
        self.sync = RpcClient("http://node.test", transport=httpx.MockTransport(handle), token="")
        self.aio = AsyncRpcClient(
            "http://node.test",
            client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
            token="",
        )

    def run(self, name: str, *args: Any) -> tuple[Any, Any]:
        def outcome(call: Callable[[], Any]) -> Any:
            try:
                return call()
            except Exception as exc:
                return exc

        sync = outcome(lambda: getattr(self.sync, name)(*args))
        aio = outcome(lambda: asyncio.run(getattr(self.aio, name)(*args)))
        return sync, aio


def answering(reply: Callable[[dict[str, Any]], Any], status: int = 200) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if isinstance(body, list):
            return httpx.Response(status, json=[{"id": b["id"], **reply(b)} for b in body])
        return httpx.Response(status, json={"jsonrpc": "2.0", "id": body["id"], **reply(body)})

    return handle


def test_results_and_json_rpc_errors_are_the_same_sync_and_async() -> None:
    node = Both(answering(lambda b: {"result": "0x2a"}))
    assert node.run("block_number") == (42, 42)
    revert = {"code": 3, "message": "execution reverted", "data": "0xdeadbeef"}
    node = Both(answering(lambda b: {"error": revert}))
    for exc in node.run("call", "0x" + "11" * 20, b"\1"):
        assert type(exc) is RpcError
        assert (exc.code, exc.rpc_code, exc.reason) == ("rpc_error", 3, "execution reverted")
        assert exc.revert_data == bytes.fromhex("deadbeef")


@pytest.mark.parametrize(
    ("status", "body", "method", "expected", "code"),
    [
        (503, b"busy", "eth_blockNumber", NodeUnavailableError, "node_unavailable"),
        (429, b"slow down", "eth_blockNumber", NodeUnavailableError, "node_unavailable"),
        (200, b"<html>", "eth_blockNumber", NodeUnavailableError, "node_unavailable"),
        (403, b'{"jsonrpc":"2.0","id":1,"error":{"code":-32003,"message":"not a member"}}',
         "eth_blockNumber", RpcError, "rpc_error"),
        (401, b"no", "eth_blockNumber", NodeUnavailableError, "node_unavailable"),
        (413, b"too big", "eth_getLogs", RangeRefusedError, "range_refused"),
        (502, b"", "eth_getLogs", RangeRefusedError, "range_refused"),
        (200, b'{"jsonrpc":"2.0","id":1,"error":{"code":-32005,'
              b'"message":"Requested range exceeds maximum RPC range limit"}}',
         "eth_getLogs", RangeRefusedError, "range_refused"),
    ],
)  # fmt: skip
def test_every_answer_maps_to_the_same_error_sync_and_async(
    status: int, body: bytes, method: str, expected: type[Exception], code: str
) -> None:
    node = Both(lambda request: httpx.Response(status, content=body))
    for exc in node.run("request", method, {"fromBlock": "0x0"}):
        assert type(exc) is expected, exc
        assert getattr(exc, "code", None) == code


def test_a_dropped_connection_is_unavailable_and_a_slow_log_range_refused() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert all(type(e) is NodeUnavailableError for e in Both(down).run("block_number"))
    for exc in Both(slow).run("get_logs", {"fromBlock": "0x0"}):
        assert type(exc) is RangeRefusedError
    assert all(type(e) is NodeUnavailableError for e in Both(slow).run("block_number"))


def test_a_batch_is_cut_and_a_node_without_batches_asked_one_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpc_module, "MAX_BATCH_ITEMS", 3)
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if isinstance(body, list) and len(body) == 1:  # this node refuses a batch of one
            return httpx.Response(200, json={"id": None, "error": {"code": -32600}})
        return answering(
            lambda b: (
                {"error": {"code": -32000, "message": "no"}}
                if b["params"] == ["bad"]
                else {"result": b["params"][0]}
            )
        )(request)

    calls = [("eth_chainId", [str(n)]) for n in range(6)] + [("eth_chainId", ["bad"])]
    for results in Both(handle).run("batch", calls):
        assert results[:6] == [str(n) for n in range(6)]
        assert isinstance(results[6], RpcError)
        assert results[6].reason == "no"
    sizes = [len(b) if isinstance(b, list) else "single" for b in seen]
    assert sizes == [3, 3, 1, "single"] * 2


def test_find_logs_shrinks_on_a_refusal_and_grows_back_sync_and_async() -> None:
    spans: list[int] = []
    limit = 1_000

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        if body["method"] == "eth_blockNumber":
            return {"result": hex(12_000)}
        span = body["params"][0]
        first, last = int(span["fromBlock"], 16), int(span["toBlock"], 16)
        spans.append(last - first + 1)
        if last - first >= limit:  # Besu's wording and code
            message = "Requested range exceeds maximum RPC range limit"
            return {"error": {"code": -32005, "message": message}}
        marks = range(-(-first // 4_000) * 4_000, last + 1, 4_000)
        return {"result": [{"blockNumber": hex(n)} for n in marks]}

    sync, aio = Both(answering(reply)).run("find_logs", {"address": "0x" + "11" * 20})
    assert sync == aio
    assert [int(e["blockNumber"], 16) for e in sync] == [0, 4_000, 8_000, 12_000]
    assert max(spans) > limit  # refused at first, then held at what the node serves
    served = [s for s in spans if s <= limit]
    assert sum(served) == 2 * 12_001
    assert max(served) == limit


def test_request_once_reaches_an_ipc_socket_path(tmp_path: Any) -> None:
    import socket
    import threading

    path = str(tmp_path / "node.ipc")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            request = json.loads(conn.recv(65536))
            reply = {"jsonrpc": "2.0", "id": request["id"], "result": "0x539"}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert int(rpc_module.request_once(path, "eth_chainId", timeout=5.0), 16) == 1337
    finally:
        thread.join(5)
        server.close()


def test_web3_rides_on_the_client_and_keeps_its_own_revert_errors() -> None:
    from web3 import Web3
    from web3.exceptions import ContractLogicError

    from dul.contracts.ledger import RpcProvider, connect
    from dul.errors import ChainError

    seen: list[str] = []

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        seen.append(body["method"])
        if body["method"] == "eth_call":
            return {"error": {"code": 3, "message": "execution reverted", "data": "0x"}}
        return {"result": "0x539"}

    sync = RpcClient("http://node.test", transport=httpx.MockTransport(answering(reply)))
    w3 = Web3(RpcProvider(sync))
    assert w3.eth.chain_id == 1337
    with pytest.raises(ContractLogicError):
        w3.eth.call({"to": Web3.to_checksum_address("0x" + "11" * 20), "data": b"\x01"})
    assert seen[0] == "eth_chainId"
    assert "eth_call" in seen
    with pytest.raises(ChainError) as caught:
        connect("http://127.0.0.1:9", timeout=1.0)
    assert caught.value.code == "node_unreachable"


def test_a_refused_credential_or_an_unreachable_node_is_no_log_range_refusal() -> None:
    """The guard's 401/403 (a JSON-RPC error object) and a connection that never opens are
    what they are for eth_getLogs too: a smaller range would not help, so none is tried."""
    calls: list[int] = []

    def guard(status: int, message: str) -> Handler:
        def handle(request: httpx.Request) -> httpx.Response:
            calls.append(1)
            body = {"jsonrpc": "2.0", "id": None, "error": {"code": -40100, "message": message}}
            return httpx.Response(status, json=body)

        return handle

    for status, message in ((401, "token expired"), (403, "eth_getLogs not permitted")):
        node = Both(guard(status, message))
        for exc in node.run("get_logs", {"fromBlock": "0x0"}):
            assert type(exc) is RpcError, exc
            assert message in str(exc)
        calls.clear()
        wide = {"address": "0x" + "11" * 20}
        with pytest.raises(RpcError) as sync:
            node.sync.find_logs(wide, from_block=0, to_block=100_000)
        with pytest.raises(RpcError) as aio:
            asyncio.run(node.aio.find_logs(wide, from_block=0, to_block=100_000))
        assert type(sync.value) is type(aio.value) is RpcError
        assert len(calls) == 2  # one page each, sync and async: no halving

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("no route", request=request)

    for exc in Both(unreachable).run("get_logs", {"fromBlock": "0x0"}):
        assert type(exc) is NodeUnavailableError, exc


def test_a_reply_over_the_budget_gives_the_start_it_keeps_and_its_declared_length() -> None:
    """`request_prefix`: a reply within `max_bytes` is the result, whole; one over it gives
    what its first `keep_bytes` hold (complete elements, maybe an incomplete last one) and its
    declared length; one whose kept start holds no result array is refused as before."""
    logs = [{"blockNumber": hex(n), "data": "0x" + "ab" * 40} for n in range(40)]

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        return {"result": logs} if body["method"] == "eth_getLogs" else {"error": {
            "code": -32000, "message": "x" * 5_000}}  # fmt: skip

    client = RpcClient("http://node.test", transport=httpx.MockTransport(answering(reply)))
    whole, complete = client.request_prefix("eth_getLogs", {}, max_bytes=1 << 20, keep_bytes=1)
    assert (whole, complete) == (logs, True)
    length = client.reply_bytes
    start, complete = client.request_prefix("eth_getLogs", {}, max_bytes=length - 1,
                                            keep_bytes=length // 4)  # fmt: skip
    assert not complete
    assert client.reply_bytes == length
    assert 1 < len(start) < len(logs)
    assert start[:-1] == logs[: len(start) - 1]  # whole elements, then maybe a part of one
    with pytest.raises(RangeRefusedError) as refused:
        client.request_prefix("eth_getLogs", {}, max_bytes=length - 1, keep_bytes=10)
    assert refused.value.reply_bytes == length
    with pytest.raises(RpcError):  # an error answer within the budget is raised as it is
        client.request_prefix("eth_other", {}, max_bytes=1 << 20, keep_bytes=1)
    client.close()


def test_a_tls_node_is_verified_and_a_plain_http_one_loads_no_certificates() -> None:
    import ssl

    def context(url: str) -> ssl.SSLContext:
        client = RpcClient(url, token="t")
        transport: Any = client.client._transport
        client.close()
        found: ssl.SSLContext = transport._pool._ssl_context
        return found

    verified = context("https://node.example:8545")
    assert verified.verify_mode == ssl.CERT_REQUIRED
    assert verified.check_hostname
    assert context("http://127.0.0.1:8545").verify_mode == ssl.CERT_NONE  # never used


def test_raw_transactions_are_sent_as_the_batch_of_their_hex_would_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`send_raw_transactions` writes its body itself (no `json.dumps` over the hex): the same
    JSON, cut into the same batches, each answer in order (a refusal as its `RpcError`, a node
    without batches asked one at a time), and `send_raw_transaction` a valid single request."""
    monkeypatch.setattr(rpc_module, "MAX_BATCH_BYTES", 4_500)  # 1 kB transactions: 2 a batch
    raws = [bytes([n]) * 1_000 for n in range(5)]
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["content-type"] == "application/json"
        body = json.loads(request.content)
        seen.append(body)
        if isinstance(body, list) and len(body) == 1:  # this node refuses a batch of one
            return httpx.Response(200, json={"id": None, "error": {"code": -32600}})
        return answering(
            lambda b: (
                {"error": {"code": -32000, "message": "nonce too low"}}
                if b["params"] == [rpc_module.to_hex(raws[1])]
                else {"result": "0x" + b["params"][0][2:6]}
            )
        )(request)

    client = AsyncRpcClient(
        "http://node.test",
        client=httpx.AsyncClient(transport=httpx.MockTransport(handle)),
        token="",
    )
    results = asyncio.run(client.send_raw_transactions(raws))
    assert [r if isinstance(r, str) else r.reason for r in results] == [
        "0x0000", "nonce too low", "0x0202", "0x0303", "0x0404"
    ]  # fmt: skip
    sent = [b for b in seen if isinstance(b, list)]
    assert [len(b) for b in sent] == [2, 2, 1]  # as `batch` cuts them
    items = [item for b in sent for item in b] + [seen[-1]]  # the last: asked alone
    assert [i["params"] for i in items[:4]] == [[rpc_module.to_hex(r)] for r in raws[:4]]
    assert all(i["jsonrpc"] == "2.0" and i["method"] == "eth_sendRawTransaction" for i in items)
    ids = [i["id"] for i in items[:4]]
    assert ids == list(range(ids[0], ids[0] + 4))  # fresh, consecutive ids as `batch` gives
    assert items[-1]["params"] == [rpc_module.to_hex(raws[4])]

    seen.clear()
    assert asyncio.run(client.send_raw_transaction(raws[2])) == bytes.fromhex("0202")
    [single] = seen
    assert single["params"] == [rpc_module.to_hex(raws[2])]
    assert (single["method"], single["jsonrpc"]) == ("eth_sendRawTransaction", "2.0")
