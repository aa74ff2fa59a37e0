"""Nonces allocated at source: one allocator per signing key, persisted with the signed tx.

Asking the node for `eth_getTransactionCount(pending)` before every transaction races with
pipelined submissions and forgets in-flight transactions after a node restart. Instead the
gateway owns its key's nonce sequence: the next nonce is written in the same database
transaction that stores the signed transaction using it (`SqlOutbox.record_submissions`), and
the in-memory counter only moves once that commit succeeded — a crash can neither reuse a
nonce (the signed transaction is on disk and is re-sent as is) nor skip one.

On start the stored value is reconciled with the chain: if the node has seen more
transactions from the key than we stored (another writer, or a restored database), the
chain's count wins so we never collide; if we stored more, the transactions in between are
on disk and recovery re-sends them.

While running, the chain's count can also fall below ours (its history was rewritten below
transactions it had mined). The submitter then re-sends the stored transactions of the missing
nonces; when one of them cannot be re-sent, it abandons the transactions from that nonce on
(their operations are batched again) and moves the allocator back to it (`move_back`), so the
key's sequence has no gap and the outbox drains.
"""

from __future__ import annotations

import structlog

from dul.chain.rpc import AsyncRpcClient
from ledger_gateway.store import SqlOutbox

log = structlog.get_logger(__name__)


class NonceAllocator:
    """The nonce sequence of one signing key. Single user: the key's submitter task."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self._next: int | None = None

    @property
    def ready(self) -> bool:
        return self._next is not None

    def peek(self) -> int:
        """The nonce the next transaction will use (not taken until `advance`)."""
        if self._next is None:
            raise RuntimeError("NonceAllocator.reconcile() has not run")
        return self._next

    def advance(self, used: int) -> None:
        """`used` is now stored with its signed transaction: move past it."""
        if used != self._next:
            raise RuntimeError(f"nonce {used} advanced out of order (expected {self._next})")
        self._next = used + 1

    def move_back(self, value: int) -> None:
        """The chain lost nonces from `value` on and the store was set to `value` with the
        transactions abandoned (`SqlOutbox.abandon`): the next transaction uses `value`."""
        if self._next is None or value > self._next:
            raise RuntimeError(f"nonce {value} is not behind the allocator ({self._next})")
        log.warning("nonce.moved_back", sender=self.sender, previous=self._next, next=value)
        self._next = value

    async def reconcile(self, store: SqlOutbox, rpc: AsyncRpcClient) -> int:
        """Load the stored next nonce and square it with the chain; returns the next nonce."""
        stored = await store.next_nonce(self.sender)
        on_chain = await rpc.transaction_count(self.sender, "pending")
        if stored is None:
            value = on_chain
        elif on_chain > stored:
            log.warning(
                "nonce.chain_ahead",
                sender=self.sender,
                stored=stored,
                chain=on_chain,
                hint="another process signs with this key, or the outbox was restored",
            )
            value = on_chain
        else:
            value = stored
        if value != stored:
            await store.set_next_nonce(self.sender, value)
        self._next = value
        log.info("nonce.reconciled", sender=self.sender, next=value, stored=stored, chain=on_chain)
        return value
