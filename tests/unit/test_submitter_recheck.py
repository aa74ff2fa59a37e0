"""The submitter's re-check of recent confirmations, incremental: one block read when nothing
was confirmed since the last round, the new blocks (linked by their parent hashes) when
something was, and every confirmation of the window again once the verified block (the
anchor) lost its hash. A confirmation whose block was rewritten, above or below the anchor,
raises the alarm and goes back in flight. A real SQLite outbox; the node is an in-memory chain
answering JSON-RPC (httpx MockTransport)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from eth_hash.auto import keccak
from eth_typing import HexStr

from dul.chain.rpc import AsyncRpcClient
from dul.domain import Decision
from dul.signing import LocalSigner
from ledger_gateway.migrations import migrate
from ledger_gateway.outbox import NewAccess, OperationKind, OperationStatus
from ledger_gateway.store import SqlOutbox, StoredTx, make_engine
from ledger_gateway.submitter import RECORD_SIZE, Submitter

T = TypeVar("T")
SIGNER = LocalSigner(HexStr("0x" + keccak(b"recheck tests").hex()))
SENDER = str(SIGNER.address)


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


class Chain:
    """Blocks 0..head, each hash derived from its parent's and a fork mark: `rewrite(n)` gives
    block n and every later one new hashes (a rewritten history of the same height)."""

    def __init__(self, head: int) -> None:
        self.marks = [0] * (head + 1)
        self.mined: dict[bytes, int] = {}
        """tx hash -> its block (while that block is the one it was mined in)."""
        self.mined_hash: dict[bytes, bytes] = {}
        self.calls: list[tuple[str, list[Any]]] = []

    @property
    def head(self) -> int:
        return len(self.marks) - 1

    def hash(self, number: int) -> bytes:
        parent = self.hash(number - 1) if number else bytes(32)
        return keccak(parent + number.to_bytes(8, "big") + self.marks[number].to_bytes(8, "big"))

    def mine(self, blocks: int = 1) -> None:
        self.marks.extend([0] * blocks)

    def include(self, tx_hash: bytes) -> tuple[int, bytes]:
        """`tx_hash` mined in a new block: (its number, its hash)."""
        self.mine()
        self.mined[tx_hash] = self.head
        self.mined_hash[tx_hash] = self.hash(self.head)
        return self.head, self.hash(self.head)

    def rewrite(self, number: int) -> None:
        for n in range(number, self.head + 1):
            self.marks[n] += 1

    def answer(self, method: str, params: list[Any]) -> Any:
        self.calls.append((method, params))
        if method == "eth_getBlockByNumber":
            number = int(params[0], 16)
            if number > self.head:
                return None
            parent = self.hash(number - 1) if number else bytes(32)
            return {
                "number": hex(number),
                "hash": "0x" + self.hash(number).hex(),
                "parentHash": "0x" + parent.hex(),
            }
        if method == "eth_getTransactionReceipt":
            tx_hash = bytes.fromhex(params[0][2:])
            at = self.mined.get(tx_hash)
            if at is None or at > self.head or self.hash(at) != self.mined_hash[tx_hash]:
                return None  # its block was rewritten and nothing mined it again
            return {"blockNumber": hex(at), "blockHash": "0x" + self.hash(at).hex(),
                    "status": "0x1", "transactionHash": params[0]}  # fmt: skip
        if method == "eth_getTransactionCount":
            return hex(0)  # behind the stored next nonce, which is kept
        if method == "eth_blockNumber":
            return hex(self.head)
        raise AssertionError(f"unexpected call {method}")

    def client(self) -> AsyncRpcClient:
        def handle(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            if isinstance(body, list):
                replies = [
                    {
                        "jsonrpc": "2.0",
                        "id": b["id"],
                        "result": self.answer(b["method"], b["params"]),
                    }
                    for b in body
                ]
                return httpx.Response(200, json=replies)
            result = self.answer(body["method"], body["params"])
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

        return AsyncRpcClient("http://node.test", client=httpx.AsyncClient(
            transport=httpx.MockTransport(handle)))  # fmt: skip

    def blocks_read(self) -> list[int]:
        read = [int(p[0], 16) for m, p in self.calls if m == "eth_getBlockByNumber"]
        self.calls.clear()
        return read


def access(n: int) -> NewAccess:
    return NewAccess(
        request_id=keccak(b"recheck" + n.to_bytes(8, "big")),
        body_hash=keccak(b"body"),
        org=b"hospital".ljust(32, b"\0"),
        agreement_id=keccak(b"agreement"),
        decision=Decision.GRANTED,
        reasons=(),
        record=n.to_bytes(RECORD_SIZE, "big"),
    )


class Setup:
    def __init__(self, outbox: SqlOutbox, chain: Chain, sub: Submitter) -> None:
        self.outbox, self.chain, self.sub = outbox, chain, sub
        self.nonce = 0

    async def confirmed(self) -> StoredTx:
        """One more access, sent and confirmed in a new block, as the receipt loop does."""
        op = access(self.nonce)
        await self.outbox.add_accesses([op])
        tx = StoredTx(SENDER, self.nonce, OperationKind.ACCESS, b"raw%d" % self.nonce,
                      keccak(b"tx%d" % self.nonce), (op.request_id,), 1, time.time())  # fmt: skip
        self.nonce += 1
        await self.outbox.record_submission(tx)
        number, block_hash = self.chain.include(tx.tx_hash)
        await self.outbox.confirm([(tx.tx_hash, number, tx.keys)], {tx.tx_hash: block_hash})
        return tx

    async def status(self, tx: StoredTx) -> OperationStatus:
        view = await self.outbox.get(tx.keys[0])
        assert view is not None
        return view.status

    async def close(self) -> None:
        await self.sub.rpc.aclose()
        await self.outbox.close()


async def setup(tmp_path: Path, head: int = 50) -> Setup:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url)
    outbox = SqlOutbox(make_engine(url))
    await outbox.start()
    chain = Chain(head)
    sub = Submitter(outbox, chain.client(), SIGNER, access_log="0x" + "11" * 20, chain_id=31337)
    return Setup(outbox, chain, sub)


async def recover(s: Setup) -> None:
    """What a (re)started submitter knows: the window's confirmations, none verified yet."""
    await s.sub._recover()
    s.chain.calls.clear()


async def confirmed_by_receipt_loop(s: Setup, tx: StoredTx) -> None:
    """`tx` known to the running submitter as confirmed, as its receipt loop leaves it."""
    mined = await s.outbox.recent_mined(SENDER, 0, 100)
    s.sub._mined[tx.tx_hash] = next(m for m in mined if m.tx.tx_hash == tx.tx_hash)
    s.sub._unchecked.add(tx.tx_hash)


def test_nothing_confirmed_since_is_one_block_read(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = await setup(tmp_path)
        txs = [await s.confirmed() for _ in range(3)]
        s.chain.mine(5)
        await recover(s)
        await s.sub._recheck_confirmations()  # the window's blocks, linked, once
        assert s.chain.blocks_read() == [51, 52, 53]
        for _ in range(3):
            s.chain.mine(4)
            await s.sub._recheck_confirmations()
            assert s.chain.blocks_read() == [53]  # the anchor still holds: all below do
        assert s.sub.confirmation_alarm() is None
        assert [await s.status(tx) for tx in txs] == [OperationStatus.CONFIRMED] * 3
        await s.close()

    run(scenario)


def test_new_confirmations_read_the_blocks_from_the_anchor_up(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = await setup(tmp_path)
        await s.confirmed()
        await recover(s)
        await s.sub._recheck_confirmations()
        assert s.chain.blocks_read() == [51]
        s.chain.mine(3)
        tx = await s.confirmed()  # block 55, confirmed as the receipt loop would
        await confirmed_by_receipt_loop(s, tx)
        await s.sub._recheck_confirmations()
        assert s.chain.blocks_read() == [51, 52, 53, 54, 55]
        await s.sub._recheck_confirmations()
        assert s.chain.blocks_read() == [55]
        assert s.sub.confirmation_alarm() is None
        await s.close()

    run(scenario)


def test_a_rewritten_block_below_the_anchor_raises_the_alarm(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = await setup(tmp_path)
        txs = [await s.confirmed() for _ in range(4)]  # blocks 51..54
        s.chain.mine(2)
        await recover(s)
        await s.sub._recheck_confirmations()
        await s.sub._recheck_confirmations()
        assert s.chain.blocks_read() == [51, 52, 53, 54, 54]
        s.chain.rewrite(53)  # blocks 53 on change: the anchor (54) with them
        await s.sub._recheck_confirmations()
        alarm = s.sub.confirmation_alarm()
        assert alarm is not None
        assert "2 confirmed operation(s) in 2 transaction(s) left the chain" in alarm
        assert [await s.status(tx) for tx in txs] == [OperationStatus.CONFIRMED] * 2 + [
            OperationStatus.SUBMITTED
        ] * 2
        assert sorted(e.tx.nonce for e in s.sub._inflight.values()) == [2, 3]
        # the survivors are verified again; the next round reads the new anchor only
        s.chain.calls.clear()
        await s.sub._recheck_confirmations()
        assert s.chain.blocks_read() == [54]
        assert s.sub.stats.vanished_transactions == 2
        await s.close()

    run(scenario)


def test_a_rewritten_block_above_the_anchor_raises_the_alarm(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = await setup(tmp_path)
        first = await s.confirmed()  # block 51
        await recover(s)
        await s.sub._recheck_confirmations()
        s.chain.mine(2)
        tx = await s.confirmed()  # block 54, confirmed on a history rewritten since
        await confirmed_by_receipt_loop(s, tx)
        s.chain.rewrite(53)
        await s.sub._recheck_confirmations()
        assert s.sub.stats.vanished_transactions == 1
        assert [await s.status(t) for t in (first, tx)] == [
            OperationStatus.CONFIRMED,
            OperationStatus.SUBMITTED,
        ]
        await s.close()

    run(scenario)


def test_a_shorter_chain_sends_the_confirmations_it_lost_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = await setup(tmp_path)
        txs = [await s.confirmed() for _ in range(3)]  # blocks 51..53
        await recover(s)
        await s.sub._recheck_confirmations()
        del s.chain.marks[52:]  # the chain went back to block 51
        await s.sub._recheck_confirmations()
        assert s.sub.stats.vanished_transactions == 2
        assert [await s.status(tx) for tx in txs] == [OperationStatus.CONFIRMED] + [
            OperationStatus.SUBMITTED
        ] * 2
        await s.close()

    run(scenario)


def test_a_chain_that_moves_while_it_is_read_is_read_again_next_round(tmp_path: Path) -> None:
    async def scenario() -> None:
        s = await setup(tmp_path)
        await s.confirmed()
        await s.confirmed()
        await recover(s)
        answer = s.chain.answer

        def moving(method: str, params: list[Any]) -> Any:
            reply = answer(method, params)
            if method == "eth_getBlockByNumber" and int(params[0], 16) == 51:
                s.chain.rewrite(50)  # between the reads of blocks 51 and 52
                s.chain.mined_hash = {h: s.chain.hash(n) for h, n in s.chain.mined.items()}
            return reply

        s.chain.answer = moving  # type: ignore[method-assign]
        await s.sub._recheck_confirmations()
        assert s.sub._anchor is None
        assert len(s.sub._unchecked) == 2
        s.chain.answer = answer  # type: ignore[method-assign]
        await s.sub._recheck_confirmations()
        assert s.sub._anchor is not None
        assert not s.sub._unchecked
        assert s.sub.confirmation_alarm() is None
        await s.close()

    run(scenario)


def test_operations_long_unmined_raise_the_unrecorded_alarm_naming_the_head(
    tmp_path: Path,
) -> None:
    """The alarm's words, from what the receipt loop saw: a head that stopped (no blocks) or
    one that moves while the gateway's transactions stay out; none while all are recent."""

    async def scenario() -> None:
        s = await setup(tmp_path)
        try:
            op = access(0)
            await s.outbox.add_accesses([op])
            tx = StoredTx(SENDER, 0, OperationKind.ACCESS, b"raw0", keccak(b"tx0"),
                          (op.request_id,), 1, time.time() - 120)  # fmt: skip
            await s.outbox.record_submission(tx)
            await recover(s)  # the stored, unmined transaction is in flight again
            assert s.sub.oldest_unrecorded_s() >= 120
            alarm = s.sub.unrecorded_alarm()
            assert alarm is not None
            assert alarm.startswith("1 answered operation(s) in 1 transaction(s) are not on")
            assert alarm.endswith("its head was not read yet")
            s.sub._head_seen = (50, time.monotonic() - 100)
            assert str(s.sub.unrecorded_alarm()).endswith("head has stayed at block 50 for 100 s")
            s.sub._head_seen = (57, time.monotonic())
            assert str(s.sub.unrecorded_alarm()).endswith("head moves (block 57) without them")
            s.sub.settings = dataclasses.replace(s.sub.settings, unrecorded_alarm_s=600)  # recent
            assert s.sub.unrecorded_alarm() is None
            s.sub._inflight.clear()
            assert (s.sub.oldest_unrecorded_s(), s.sub.unrecorded_alarm()) == (0.0, None)
        finally:
            await s.close()

    run(scenario)
