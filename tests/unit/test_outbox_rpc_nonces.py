"""The JSON-RPC client's error mapping and the nonce allocator's reconciliation, against an
in-memory node (httpx MockTransport) and a real SQLite outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from dul.chain.rpc import AsyncRpcClient, NodeUnavailableError, RpcError
from dul.chain.testing import free_port
from ledger_gateway.migrations import migrate
from ledger_gateway.nonces import NonceAllocator
from ledger_gateway.store import SqlOutbox, make_engine

T = TypeVar("T")
SENDER = "0x" + "cd" * 20


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


def node(answers: dict[str, Any]) -> AsyncRpcClient:
    """An AsyncRpcClient whose node answers each method from `answers` ({"error": …} is one)."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        items = body if isinstance(body, list) else [body]
        replies = []
        for item in items:
            answer = answers[item["method"]]
            if isinstance(answer, dict) and "error" in answer:
                replies.append({"jsonrpc": "2.0", "id": item["id"], "error": answer["error"]})
            else:
                replies.append({"jsonrpc": "2.0", "id": item["id"], "result": answer})
        return httpx.Response(200, json=replies if isinstance(body, list) else replies[0])

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return AsyncRpcClient("http://node.test", client=client)


def test_a_node_that_is_not_there_is_node_unavailable() -> None:
    async def scenario() -> None:
        rpc = AsyncRpcClient(f"http://127.0.0.1:{free_port()}", timeout=1.0)
        with pytest.raises(NodeUnavailableError) as caught:
            await rpc.block_number()
        assert caught.value.code == "node_unavailable"
        await rpc.aclose()

    run(scenario)


def test_a_json_rpc_error_keeps_code_message_and_revert_data() -> None:
    async def scenario() -> None:
        error = {"code": 3, "message": "execution reverted", "data": "0xdeadbeef"}
        rpc = node({"eth_call": {"error": error}})
        with pytest.raises(RpcError) as caught:
            await rpc.call("0x" + "00" * 20, b"\1")
        assert caught.value.rpc_code == 3
        assert caught.value.revert_data == bytes.fromhex("deadbeef")
        await rpc.aclose()

    run(scenario)


def test_receipts_of_many_transactions_come_in_one_batch() -> None:
    async def scenario() -> None:
        rpc = node({"eth_getTransactionReceipt": {"status": "0x1", "blockNumber": "0x5"}})
        receipts = await rpc.receipts([b"\1" * 32, b"\2" * 32])
        assert receipts == [{"status": "0x1", "blockNumber": "0x5"}] * 2
        await rpc.aclose()

    run(scenario)


async def outbox_in(tmp_path: Path) -> SqlOutbox:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url)
    outbox = SqlOutbox(make_engine(url))
    await outbox.start()
    return outbox


@pytest.mark.parametrize(
    ("stored", "chain", "expected"),
    [
        (None, 4, 4),  # first start: the chain's count
        (9, 7, 9),  # stored transactions the node lost: keep ours, recovery re-sends them
        (5, 8, 8),  # someone else used the key: never collide with what the chain has
        (6, 6, 6),
    ],
)
def test_reconcile_squares_the_stored_nonce_with_the_chain(
    tmp_path: Path, stored: int | None, chain: int, expected: int
) -> None:
    async def scenario() -> tuple[int, int | None]:
        outbox = await outbox_in(tmp_path)
        if stored is not None:
            await outbox.set_next_nonce(SENDER, stored)
        rpc = node({"eth_getTransactionCount": hex(chain)})
        allocator = NonceAllocator(SENDER)
        value = await allocator.reconcile(outbox, rpc)
        persisted = await outbox.next_nonce(SENDER)
        await rpc.aclose()
        await outbox.close()
        return value, persisted

    assert run(scenario) == (expected, expected)


def test_a_nonce_advances_only_in_order() -> None:
    allocator = NonceAllocator(SENDER)
    with pytest.raises(RuntimeError):
        allocator.peek()
    allocator._next = 3
    allocator.advance(3)
    assert allocator.peek() == 4
    with pytest.raises(RuntimeError):
        allocator.advance(6)
