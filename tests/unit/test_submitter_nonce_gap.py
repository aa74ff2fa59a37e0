"""The submitter's nonce check when the chain's count falls below its own: stored transactions
of the lost nonces are sent again (their confirmations vanished), and where one is missing the
allocator moves back and what came after is batched again. A real SQLite outbox; the node is an
in-memory JSON-RPC answerer (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from eth_hash.auto import keccak
from eth_typing import HexStr
from sqlalchemy import delete

from dul.chain.rpc import AsyncRpcClient
from dul.domain import Decision
from dul.signing import LocalSigner
from ledger_gateway.migrations import migrate
from ledger_gateway.outbox import NewAccess, OperationKind, OperationStatus
from ledger_gateway.store import TXS, SqlOutbox, StoredTx, make_engine
from ledger_gateway.submitter import RECORD_SIZE, Submitter

T = TypeVar("T")
SIGNER = LocalSigner(HexStr("0x" + keccak(b"nonce gap tests").hex()))
SENDER = str(SIGNER.address)


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


def node(pending_count: int) -> AsyncRpcClient:
    """A node whose pending transaction count of every account is `pending_count`."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["method"] == "eth_getTransactionCount", body
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"],
                                         "result": hex(pending_count)})  # fmt: skip

    client = httpx.AsyncClient(transport=httpx.MockTransport(handle))
    return AsyncRpcClient("http://node.test", client=client)


def access(n: int) -> NewAccess:
    return NewAccess(
        request_id=keccak(b"gap" + n.to_bytes(8, "big")),
        body_hash=keccak(b"body"),
        org=b"hospital".ljust(32, b"\0"),
        agreement_id=keccak(b"agreement"),
        decision=Decision.GRANTED,
        reasons=(),
        record=n.to_bytes(RECORD_SIZE, "big"),
    )


async def confirmed_history(tmp_path: Path, nonces: range) -> tuple[SqlOutbox, list[StoredTx]]:
    """One confirmed access per nonce (the key's next nonce is after the last)."""
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url)
    outbox = SqlOutbox(make_engine(url))
    await outbox.start()
    txs = []
    for nonce in nonces:
        op = access(nonce)
        await outbox.add_accesses([op])
        tx = StoredTx(SENDER, nonce, OperationKind.ACCESS, b"raw%d" % nonce,
                      keccak(b"tx%d" % nonce), (op.request_id,), 1, time.time())  # fmt: skip
        await outbox.record_submission(tx)
        await outbox.confirm([(tx.tx_hash, 100 + nonce, tx.keys)], {tx.tx_hash: b"\1" * 32})
        txs.append(tx)
    return outbox, txs


async def submitter(outbox: SqlOutbox, rpc: AsyncRpcClient) -> Submitter:
    sub = Submitter(outbox, rpc, SIGNER, access_log="0x" + "11" * 20, chain_id=31337)
    await sub.nonces.reconcile(outbox, rpc)  # the stored next nonce is ahead: it is kept
    return sub


def test_lost_nonces_with_stored_transactions_are_sent_again_as_they_were(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        outbox, txs = await confirmed_history(tmp_path, range(3, 6))
        rpc = node(pending_count=4)  # the chain lost nonces 4 and 5
        sub = await submitter(outbox, rpc)
        assert sub.nonces.peek() == 6
        await sub._check_nonces()
        assert sub.nonces.peek() == 6  # filled by the stored transactions, no move
        assert sorted(e.tx.nonce for e in sub._inflight.values()) == [4, 5]
        views = await outbox.get_many([tx.keys[0] for tx in txs])
        assert [views[tx.keys[0]].status for tx in txs] == [
            OperationStatus.CONFIRMED,
            OperationStatus.SUBMITTED,
            OperationStatus.SUBMITTED,
        ]
        assert views[txs[1].keys[0]].block_number is None
        assert sub.stats.vanished_operations == 2
        assert sub.stats.nonce_resyncs == 0
        alarm = sub.confirmation_alarm()
        assert alarm is not None
        assert "2 not on chain again yet" in alarm
        await rpc.aclose()
        await outbox.close()

    run(scenario)


def test_a_lost_nonce_without_its_transaction_moves_the_allocator_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox, txs = await confirmed_history(tmp_path, range(3, 6))
        # a restored database: the transaction of nonce 4 is not there
        await outbox.write(lambda conn: conn.execute(delete(TXS).where(TXS.c.nonce == 4)))
        rpc = node(pending_count=4)
        sub = await submitter(outbox, rpc)
        await sub._check_nonces()
        assert sub.nonces.peek() == 4
        assert await outbox.next_nonce(SENDER) == 4
        assert sub._inflight == {}
        assert await outbox.transactions_at(SENDER, [3, 4, 5]) == {
            3: (await outbox.transactions_at(SENDER, [3]))[3]
        }
        views = await outbox.get_many([tx.keys[0] for tx in txs])
        # nonce 4's operation stays as stored (its transaction is unknown); nonce 5's is
        # batched again from nonce 4 on
        assert views[txs[2].keys[0]].status is OperationStatus.PENDING
        assert [op.key for op in await outbox.pending(10)] == [txs[2].keys[0]]
        assert sub.stats.nonce_resyncs == 1
        assert sub.stats.vanished_operations == 1
        await rpc.aclose()
        await outbox.close()

    run(scenario)


def test_a_chain_at_or_ahead_of_the_allocator_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox, _ = await confirmed_history(tmp_path, range(0, 2))
        rpc = node(pending_count=2)
        sub = await submitter(outbox, rpc)
        await sub._check_nonces()
        assert sub.nonces.peek() == 2
        assert sub._inflight == {}
        assert sub.confirmation_alarm() is None
        await rpc.aclose()
        await outbox.close()

    run(scenario)
