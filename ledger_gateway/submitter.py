"""The submitter: PENDING operations of the outbox become signed transactions, exactly once.

One asyncio task per signing key, two loops:

- **batch loop** — reads PENDING operations in the order they were stored; runs of accesses go
  into one `recordAccesses` call (at most `max_batch` records, the 16.7M per-transaction gas
  cap and `max_body_bytes`, or whatever queued within `max_delay`), each release into its own
  `releaseResult`, each CALL (e.g. a relayed agreement signature) into its own transaction to
  the target it names. It takes the key's next nonce, signs, stores the signed transaction and
  marks its operations SUBMITTED in one database transaction, and only then sends. When a
  backlog waits, one round takes up to `max_round` transactions at consecutive nonces: signed
  together, stored in one database transaction (one fsync where there were eight), sent in
  as few JSON-RPC bodies as the body bound allows by a send loop, in nonce order, while the
  batch loop signs and stores the next round (the node's intake of a 140 kB transaction took
  as long as storing it). It does not wait for mining: up to `max_in_flight` transactions
  (nonces n, n+1, …) are in the pool at once; a mined one stops counting while its
  confirmation is written.
- **receipt loop** — once per new block, asks what the chain holds of every in-flight
  transaction; a mined one CONFIRMS its operations (tx hash, block); one not mined after
  `resend_after`, or after the node came back, is re-sent byte for byte (same nonce, same
  hash); a reverted batch is bisected by simulation so the good records go out again and only
  the offending ones end FAILED with the contract's custom error name. An access batch is
  confirmed without its receipt: the receipt of 256 records carries their 256 logs (~460 kB of
  JSON: ~4.5 ms of the node's CPU to build, ~1.5 ms of the event loop's to parse), while
  `recordAccesses` is all or nothing and logs `AccessRecorded` for every record, so the event
  of its first record, emitted by this transaction, proves it mined and succeeded. One
  `eth_getLogs` over the blocks since the last look (filtered on those first records) and the
  key's transaction count at the same block answer for all of them; a transaction the count
  says is mined and that left no such event (a revert, a replaced nonce), and every other
  kind, is asked for its receipt as before.

A third loop re-checks what was confirmed: every `reconfirm_interval_s` the blocks of the
transactions mined within `reconfirm_window_s` must still be the chain's (same block hash). A
confirmation that left the chain (a rewritten history) raises an alarm (`confirmation_alarm`,
a metric, an error log) and its transaction goes back in flight: the same signed bytes at the
same nonce are sent again, so it is on chain at most once (if the nonce was taken meanwhile its
operations are batched again, and the request-id rule turns a duplicate into "already
recorded", which settles as confirmed). The re-check is incremental: a block's hash covers its
whole ancestry, so the highest block it verified (its anchor) still holding its hash proves
every confirmation at or below it unchanged. A round reads that one block when nothing was
confirmed since; otherwise the blocks from the anchor (or the lowest new confirmation) up to
the highest new one, each of which must name the one before as its parent, and compares the
new confirmations with them. An anchor that lost its hash sends the round back to every
confirmation of the window, read the same way. (Every round read every block of the window
that held a confirmation: under load, a JSON-RPC batch of a hundred blocks or more parsed on
the event loop every two seconds, and as many block look-ups for the node.) The same loop
compares the key's nonce with the chain's: nonces the chain lost beyond the window are filled
by re-sending their stored transactions, and when that is impossible the allocator moves back
(`NonceAllocator.move_back`).

Recovery on start: the nonce is reconciled with the chain, every stored unmined transaction is
checked for a receipt and re-sent, and PENDING operations are simply batched. Because an
operation's transaction is on disk before it is sent, a crash at any point neither loses an
acknowledged decision nor records one twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from eth_abi.abi import encode

from dul.chain.rpc import AsyncRpcClient, NodeUnavailableError, RpcError, from_hex, to_hex
from dul.contracts.bindings import event, function
from dul.contracts.reverts import decode_revert
from dul.keccak import keccak as fast_keccak
from dul.signing import Signer, checksum_address
from ledger_gateway.nonces import NonceAllocator
from ledger_gateway.outbox import OperationKind, split_call_payload
from ledger_gateway.store import MinedTx, PendingOp, SqlOutbox, StoredTx, TxStatus

log = structlog.get_logger(__name__)

#: The per-transaction gas cap (EIP-7825, 2^24) that anvil and newer clients enforce.
TX_GAS_CAP = 16_777_216
#: The contract's `maxBatchSize`.
CONTRACT_MAX_BATCH = 256
RECORD_SIZE = 17 * 32
"""An `AccessRecord` has 17 static fields: its ABI encoding is always 544 bytes."""


ACCESS_RECORD_TYPE = function("AccessLog", "recordAccess").types[0]
"""The ABI type of one `AccessRecord` tuple, e.g. `(bytes32,bytes32,…,uint8)`."""
RECORD_ACCESSES = function("AccessLog", "recordAccesses").selector
RELEASE_RESULT = function("AccessLog", "releaseResult").selector
ACCESS_RECORDED_TOPIC = event("AccessLog", "AccessRecorded").topic
RESULT_RELEASED_TOPIC = event("AccessLog", "ResultReleased").topic
RELEASE_TYPES = list(function("AccessLog", "releaseResult").types)


def encode_access_record(record_abi: tuple[Any, ...]) -> bytes:
    """`NewAccess.record` from `AccessRecord.as_abi()`."""
    return encode([ACCESS_RECORD_TYPE], [record_abi])


def redeems(record: bytes) -> bool:
    """Whether an encoded record is GRANTED with an authorization reference: under a
    PATIENT_AUTHORIZATION agreement the chain redeems the code in the same call."""
    return record[4 * 32 : 5 * 32] == GRANTED_WORD and record[12 * 32 : 13 * 32] != bytes(32)


GRANTED_WORD = (1).to_bytes(32, "big")


def record_accesses_calldata(records: Sequence[bytes]) -> bytes:
    """`recordAccesses(records)` calldata from encoded records, without re-encoding them.

    The tuple is static, so the array is the offset, the length and the records back to back
    (a test checks this against eth_abi).
    """
    head = (32).to_bytes(32, "big") + len(records).to_bytes(32, "big")
    return RECORD_ACCESSES + head + b"".join(records)


@dataclass(frozen=True)
class SubmitterSettings:
    """Knobs of the submitter (the gateway maps `DUL_GATEWAY_BATCH_MAX` and
    `DUL_GATEWAY_BATCH_LATENCY_MS` onto `max_batch` and `max_delay`)."""

    max_batch: int = 200
    """Records per `recordAccesses` transaction (the contract takes 256 at most)."""
    max_delay: float = 0.05
    """Longest a stored decision waits for its batch to fill, in seconds, counted from when it
    was stored or from when the previous short batch went out, whichever is later: a steady
    trickle goes out as one transaction per `max_delay`, not one per group commit."""
    max_body_bytes: int = 1_500_000
    """Bound on the JSON-RPC body of one send (anvil refuses bodies over 2 MiB)."""
    max_in_flight: int = 32
    """Transactions sent and not yet seen mined (a mined one stops counting while its
    confirmation is written)."""
    max_round: int = 8
    """Most transactions signed, stored (one database transaction: one fsync) and sent (in
    JSON-RPC batches within `max_body_bytes`) together when a backlog is waiting."""
    poll_interval: float = 0.1
    """Seconds between receipt polls while transactions are in flight."""
    idle_poll: float = 0.5
    """Seconds between looks at the outbox when nothing notifies (another process writes)."""
    resend_after: float = 5.0
    """A transaction with no receipt after this many seconds is re-sent as is."""
    gas_base: int = 100_000
    gas_per_record: int = 60_000
    """Measured ~45k per granted record plus calldata (zero gas price makes headroom free);
    60k lets a full 256-record batch fit the 2^24 per-transaction cap."""
    gas_release: int = 250_000
    gas_per_redemption: int = 100_000
    """Extra for a GRANTED record that redeems a patient's authorization code (a call into the
    ConsentRegistry that writes the code's status: ~45k measured, doubled)."""
    max_revert_attempts: int = 3
    """Unexplained reverts (no record found at fault) before the operations end FAILED."""
    backoff_max: float = 5.0
    reconfirm_window_s: float = 600.0
    """Confirmations younger than this are re-checked (block hash unchanged); 0: none."""
    reconfirm_interval_s: float = 2.0
    """Seconds between re-checks of recent confirmations and of the chain's nonce."""
    reconfirm_max: int = 2_000
    """Most transactions re-checked at once (the newest)."""
    alarm_hold_s: float = 3_600.0
    """How long readiness stays degraded after a confirmation vanished (and while any of its
    operations is not on chain again), or after the chain refused to record an operation."""
    unrecorded_alarm_s: float = 60.0
    """Readiness is degraded while an operation sent to the chain is still not mined this long
    after it was answered: a node that answers but produces no blocks (a QBFT network without
    its quorum) or leaves the gateway's transactions out."""


def batch_capacity(s: SubmitterSettings) -> int:
    """Records per `recordAccesses` transaction: `max_batch` within the contract's, the gas
    cap's and the JSON-RPC body's bounds."""
    by_gas = (TX_GAS_CAP - s.gas_base) // s.gas_per_record
    by_body = (s.max_body_bytes // 2 - 1_000) // RECORD_SIZE  # hex doubles the raw size
    return max(1, min(s.max_batch, CONTRACT_MAX_BATCH, by_gas, by_body))


@dataclass
class SubmitterStats:
    transactions_sent: int = 0
    resends: int = 0
    confirmed: int = 0
    failed: int = 0
    reverted_transactions: int = 0
    replaced: int = 0
    """Transactions given up because another transaction of the key took their nonce."""
    vanished_transactions: int = 0
    vanished_operations: int = 0
    """Confirmed operations whose transaction left the chain (and were sent again)."""
    last_vanished_at: float | None = None
    """Wall-clock time of the last vanished confirmation."""
    last_failed_at: float | None = None
    """Wall-clock time an operation last ended failed (the chain refused to record it)."""
    nonce_resyncs: int = 0
    """Times the allocator moved back to a nonce the chain lost."""
    chain_reachable: bool = False
    last_error: str | None = None
    submit_latency_s: list[float] = field(default_factory=list)
    """Stored-to-confirmed seconds of recent confirmations (bounded)."""


@dataclass
class _InFlight:
    tx: StoredTx
    sent_at: float
    """monotonic time of the last send (-inf: unknown, check and re-send now)."""
    created_wall: float
    floor: int | None = None
    """The first block that may hold it (it was not mined in an earlier one); None: unknown
    (recovered or sent again after its confirmation vanished), its receipt is asked for."""


class Submitter:
    """Records the outbox's operations on chain with `signer`'s key, at `access_log`."""

    def __init__(
        self,
        outbox: SqlOutbox,
        rpc: AsyncRpcClient,
        signer: Signer,
        *,
        access_log: str,
        chain_id: int,
        settings: SubmitterSettings | None = None,
        crash_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.rpc = rpc
        self.signer = signer
        self.sender = str(signer.address)
        self.access_log = access_log
        self.chain_id = chain_id
        self.settings = s = settings or SubmitterSettings()
        self.nonces = NonceAllocator(self.sender)
        self.stats = SubmitterStats()
        self._hook = crash_hook or (lambda _point: None)
        self._inflight: dict[bytes, _InFlight] = {}
        self._room = asyncio.Event()
        self._settling = 0
        """Transactions of `_inflight` the chain has mined whose confirmation is being written:
        they no longer hold a place of `max_in_flight`."""
        self._short_sent_at = -math.inf
        """Wall-clock time the last short batch (one not full, nothing behind it) was stored."""
        self._gas_per_record = s.gas_per_record
        self.max_records = batch_capacity(s)
        self._task: asyncio.Task[None] | None = None
        self._recovered = asyncio.Event()
        self._mined: dict[bytes, MinedTx] = {}
        """Recently confirmed transactions, re-checked while inside the window."""
        self._unchecked: set[bytes] = set()
        """Those of `_mined` not yet verified below `_anchor`."""
        self._anchor: tuple[int, bytes] | None = None
        """(number, hash) of the highest block the re-check verified: every confirmation of
        `_mined` not `_unchecked` is in its ancestry."""
        self._reopened: set[bytes] = set()
        """Operations whose confirmation vanished and that are not settled again yet."""
        self._nonce_lock = asyncio.Lock()
        """Held from taking a nonce to tracking its transaction, and while moving back."""
        self._outgoing: asyncio.Queue[list[_InFlight]] = asyncio.Queue(maxsize=2)
        """Rounds stored and not sent yet, in nonce order: the send loop sends one while the
        batch loop signs and stores the next."""
        self._unsent = 0
        """Rounds stored and not yet handed to the node (queued or being sent)."""
        self._all_sent = asyncio.Event()
        self._all_sent.set()
        self._head: int | None = None
        """The chain's latest block at the receipt loop's last complete look."""
        self._head_seen: tuple[int, float] | None = None
        """The latest block the receipt loop saw, and when (monotonic) it first saw it."""

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start in the background; recovery waits for the node if it is down."""
        if self._task is None:
            self._task = asyncio.create_task(self._main(), name=f"submitter-{self.sender}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    async def recovered(self) -> None:
        """Returns once start-up recovery (nonce reconciled, stored txs loaded) is done."""
        await self._recovered.wait()

    async def _main(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._recover()
                break
            except NodeUnavailableError as exc:
                self._unreachable(exc)
                await asyncio.sleep(delay)
                delay = min(self.settings.backoff_max, delay * 2)
        self._recovered.set()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._guarded(self._batch_once, "batch"))
            group.create_task(self._guarded(self._send_once, "send"))
            group.create_task(self._guarded(self._receipts_once, "receipts"))
            group.create_task(self._guarded(self._reconfirm_once, "reconfirm"))

    async def _guarded(self, step: Callable[[], Any], name: str) -> None:
        """Run one loop step forever; a failing step backs off and retries, never dies."""
        delay = 0.1
        while True:
            try:
                await step()
                delay = 0.1
            except NodeUnavailableError as exc:
                self._unreachable(exc)
                await asyncio.sleep(delay)
                delay = min(self.settings.backoff_max, delay * 2)
            except Exception as exc:  # a database or node hiccup must not stop recording
                self.stats.last_error = repr(exc)
                log.exception("submitter.step_failed", loop=name)
                await asyncio.sleep(delay)
                delay = min(self.settings.backoff_max, delay * 2)

    def _unreachable(self, exc: Exception) -> None:
        if self.stats.chain_reachable or self.stats.last_error is None:
            log.warning("submitter.chain_unreachable", error=str(exc))
        self.stats.chain_reachable = False
        self.stats.last_error = str(exc)

    async def _recover(self) -> None:
        await self.nonces.reconcile(self.outbox, self.rpc)
        stored = await self.outbox.unmined(self.sender)
        for tx in stored:
            self._inflight[tx.tx_hash] = _InFlight(tx, -math.inf, tx.created_at)
        s = self.settings
        if s.reconfirm_window_s > 0:
            since = time.time() - s.reconfirm_window_s
            for mined in await self.outbox.recent_mined(self.sender, since, s.reconfirm_max):
                self._mined[mined.tx.tx_hash] = mined
                self._unchecked.add(mined.tx.tx_hash)
        self._head = await self.rpc.block_number()  # what is sent from now on is mined later
        self.stats.chain_reachable = True
        log.info(
            "submitter.recovered",
            sender=self.sender,
            next_nonce=self.nonces.peek(),
            unmined=len(stored),
        )

    # --- batching ----------------------------------------------------------------------------

    async def _batch_once(self) -> None:
        s = self.settings
        room = s.max_in_flight - len(self._inflight) + self._settling
        if room <= 0:
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), s.poll_interval)
            return
        self.outbox.new_pending.clear()
        added = self.outbox.accesses_added  # before the read: what it may miss counts as new
        rounds = max(1, min(room, s.max_round))
        ops = await self.outbox.pending(self.max_records * rounds)
        if not ops:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.new_pending.wait(), s.idle_poll)
            return
        if ops[0].kind is not OperationKind.ACCESS:
            await self._submit([([ops[0]], ops[0].kind)])
            return
        groups: list[list[PendingOp]] = []
        start = 0
        while start < len(ops) and len(groups) < rounds:
            run: list[PendingOp] = []
            for op in ops[start : start + self.max_records]:
                if op.kind is not OperationKind.ACCESS:
                    break
                run.append(op)
            if not run:
                break  # a release or call comes next: it goes alone in the next round
            run = self._fit_gas(run)
            groups.append(run)
            start += len(run)
        last = groups[-1]
        # A short last group waits up to `max_delay` for more records, unless something is
        # queued behind it (another kind of operation, or what this round had no room for).
        # The wait counts from its oldest record or from the previous short batch, whichever
        # is later: under a steady trickle of single decisions each group commit would
        # otherwise find its records already `max_delay` old (the commit's own latency) and
        # send them as a transaction of their own, a signature, a stored round, a send and
        # the node's intake for every ~60 records instead of every ~rate x max_delay.
        full = len(last) >= self.max_records or start < len(ops)
        opened = max(last[0].created_at, self._short_sent_at)
        wait = s.max_delay - (time.time() - opened)
        if not full and wait > 0:
            if len(groups) == 1:
                await self._fill(added + self.max_records - len(last), wait)
                return
            groups.pop()  # the full ones go now; the short one is read again next round
        if not full and len(groups) == 1 and self._unsent:
            # The node is still taking the previous round: a short batch waits for it and
            # gains what arrives meanwhile (a full round never waits: a backlog's signing and
            # storing still overlap the node's intake). Without this wait a trickle of single
            # decisions went out as a transaction per group commit (on a loaded machine, 3,000
            # requests as 44-47 transactions of ~66 records where the serial loop before the
            # send loop made 23-33 of ~90-130), each costing the gateway a signature, a stored
            # round on the writer thread, a send and receipt polls.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_sent.wait(), s.idle_poll)
            return
        if not full and len(groups) == 1:
            self._short_sent_at = time.time()
        await self._submit([(g, OperationKind.ACCESS) for g in groups])

    async def _fill(self, full_at: int, timeout: float) -> None:
        """Wait up to `timeout` for a short batch to fill: until this process has stored
        accesses up to `full_at` (the store's count) or something else became PENDING.

        Each group commit wakes this wait, but the store is read again only once the batch
        may be full: under a steady trickle of single decisions (a few hundred a second, a
        commit each) a read per commit was one more thread hop, connection and query per
        decision, ~150 µs of the gateway's CPU each. Another worker process's commits do not
        count here; the batch then goes at `timeout`, as it always could."""
        outbox = self.outbox
        others = outbox.other_pending_added
        deadline = time.monotonic() + timeout
        while outbox.accesses_added < full_at and outbox.other_pending_added == others:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            outbox.new_pending.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(outbox.new_pending.wait(), remaining)

    def _target(self, ops: Sequence[PendingOp], kind: OperationKind) -> str:
        if kind is OperationKind.CALL:
            return checksum_address(split_call_payload(ops[0].payload)[0])
        return self.access_log

    def _record_gas(self, op: PendingOp) -> int:
        gas = self._gas_per_record
        if redeems(op.payload):
            gas += self.settings.gas_per_redemption
        return gas

    def _fit_gas(self, batch: list[PendingOp]) -> list[PendingOp]:
        """The longest prefix of `batch` whose gas fits one transaction (redemptions cost more)."""
        total = self.settings.gas_base
        for index, op in enumerate(batch):
            total += self._record_gas(op)
            if total > TX_GAS_CAP:
                return batch[: max(1, index)]
        return batch

    def _calldata(self, ops: Sequence[PendingOp], kind: OperationKind) -> tuple[bytes, int]:
        if kind is OperationKind.CALL:
            _, gas, data = split_call_payload(ops[0].payload)
            return data, gas
        if kind is OperationKind.RELEASE:
            return RELEASE_RESULT + ops[0].payload, self.settings.gas_release
        gas = self.settings.gas_base + sum(self._record_gas(op) for op in ops)
        return record_accesses_calldata([op.payload for op in ops]), min(TX_GAS_CAP, gas)

    async def _submit(self, groups: Sequence[tuple[Sequence[PendingOp], OperationKind]]) -> None:
        """Sign one transaction per group at consecutive nonces, store them all with their
        operations SUBMITTED in one database transaction (one fsync), then send them in
        order: nothing is sent before it is on disk."""
        async with self._nonce_lock:
            first = self.nonces.peek()
            unsigned = []
            for index, (ops, kind) in enumerate(groups):
                data, gas = self._calldata(ops, kind)
                unsigned.append(
                    {
                        "to": self._target(ops, kind),
                        "data": data,
                        "gas": gas,
                        "gasPrice": 0,
                        "nonce": first + index,
                        "chainId": self.chain_id,
                        "value": 0,
                    }
                )
            # Off the event loop: a full batch (~140 kB) takes eth-account milliseconds to
            # encode and sign, which decisions waiting on the loop would otherwise wait out.
            signed = await asyncio.to_thread(lambda: [self._sign(tx) for tx in unsigned])
            now = time.time()
            txs = [
                StoredTx(
                    sender=self.sender,
                    nonce=first + index,
                    kind=kind,
                    raw=raw,
                    tx_hash=tx_hash,
                    keys=tuple(op.key for op in ops),
                    attempts=1,
                    created_at=now,
                    row_ids=tuple(op.row_id for op in ops if op.row_id is not None),
                )
                for index, ((ops, kind), (raw, tx_hash)) in enumerate(
                    zip(groups, signed, strict=True)
                )
            ]
            await self.outbox.record_submissions(txs)
            entries: list[_InFlight] = []
            for tx, (ops, _) in zip(txs, groups, strict=True):
                self.nonces.advance(tx.nonce)
                self._hook("persisted")
                entry = _InFlight(
                    tx,
                    time.monotonic(),
                    min(op.created_at for op in ops),
                    None if self._head is None else self._head + 1,  # sent after that look
                )
                self._inflight[tx.tx_hash] = entry
                entries.append(entry)
            self._unsent += 1
            self._all_sent.clear()
        await self._outgoing.put(entries)

    async def _send_once(self) -> None:
        """Send the next stored round (what left the in-flight set meanwhile stays unsent:
        a nonce resynchronisation abandoned it)."""
        entries = await self._outgoing.get()
        live = [e for e in entries if self._inflight.get(e.tx.tx_hash) is e]
        try:
            await self._send_many(live)
        finally:
            self._unsent -= 1
            if not self._unsent:
                self._all_sent.set()
        for entry in live:
            self.stats.transactions_sent += 1
            log.debug(
                "submitter.sent",
                nonce=entry.tx.nonce,
                kind=entry.tx.kind.value,
                records=len(entry.tx.keys),
            )
            self._hook("sent")

    def _sign(self, tx: dict[str, Any]) -> tuple[bytes, bytes]:
        raw = self.signer.sign_transaction(tx)
        return raw, fast_keccak(raw)

    async def _send(self, entry: _InFlight) -> None:
        await self._send_many([entry])

    async def _send_many(self, entries: Sequence[_InFlight]) -> None:
        """Send in nonce order, as few JSON-RPC bodies as `max_body_bytes` allows."""
        bodies: list[list[_InFlight]] = []
        size = 0
        for entry in entries:
            length = 2 * len(entry.tx.raw) + 100
            if not bodies or size + length > self.settings.max_body_bytes:
                bodies.append([])
                size = 0
            bodies[-1].append(entry)
            size += length
        for body in bodies:
            now = time.monotonic()
            for entry in body:
                entry.sent_at = now
            if len(body) == 1:
                try:
                    await self.rpc.send_raw_transaction(body[0].tx.raw)
                    answers: list[Any] = [None]
                except RpcError as exc:
                    answers = [exc]
            else:
                answers = await self.rpc.send_raw_transactions([e.tx.raw for e in body])
            for entry, answer in zip(body, answers, strict=True):
                if isinstance(answer, RpcError):
                    self._refused(entry, answer)

    def _refused(self, entry: _InFlight, exc: RpcError) -> None:
        text = exc.message.lower()
        if "already" in text or "known" in text or "nonce too low" in text:
            return  # the node has it, or mined it: the receipt will tell
        self.stats.last_error = str(exc)
        log.error("submitter.send_refused", nonce=entry.tx.nonce, error=str(exc))

    # --- receipts ----------------------------------------------------------------------------

    async def _receipts_once(self) -> None:
        await asyncio.sleep(self.settings.poll_interval)
        if not self._inflight:
            return
        entries = sorted(self._inflight.values(), key=lambda e: e.tx.nonce)
        head = await self.rpc.block_number()
        now = time.monotonic()
        if self._head_seen is None or self._head_seen[0] != head:
            self._head_seen = (head, now)
        due = not self.stats.chain_reachable or any(
            now - e.sent_at >= self.settings.resend_after for e in entries
        )
        if head == self._head and not due:
            return  # no block since the last look: nothing was mined meanwhile
        receipts = await self._receipts(entries, head)
        came_back = not self.stats.chain_reachable
        if came_back:
            log.info("submitter.chain_reachable", in_flight=len(entries))
        self.stats.chain_reachable = True
        mined: list[tuple[_InFlight, int, bytes]] = []
        now = time.monotonic()
        chain_nonce: int | None = None
        for entry, receipt in zip(entries, receipts, strict=True):
            if receipt is None:
                if came_back or now - entry.sent_at >= self.settings.resend_after:
                    if chain_nonce is None:
                        chain_nonce = await self.rpc.transaction_count(self.sender, "latest")
                    if entry.tx.nonce < chain_nonce and await self._replaced(entry):
                        continue
                    await self._resend(entry)
                continue
            block = int(receipt["blockNumber"], 16)
            if int(receipt.get("status", "0x1"), 16) == 1:
                mined.append((entry, block, from_hex(str(receipt.get("blockHash") or "0x"))))
            else:
                await self._settle_revert(entry, block, receipt)
        if mined:
            # The mined make room at once: a block's confirmations are written in pieces, each
            # a writer turn behind the decisions queued, and the batch loop waited them out at
            # the in-flight bound (16 transactions: 356 ms of 640 ms waiting for room, traced
            # in the batch bench on a loaded machine).
            self._settling = len(mined)
            self._room.set()
            try:
                await self.outbox.confirm(
                    [(e.tx.tx_hash, b, e.tx.keys) for e, b, _ in mined],
                    {e.tx.tx_hash: h for e, _, h in mined if h},
                )
            finally:
                self._settling = 0
            wall = time.time()
            for entry, block, block_hash in mined:
                del self._inflight[entry.tx.tx_hash]
                if self.settings.reconfirm_window_s > 0:
                    self._mined[entry.tx.tx_hash] = MinedTx(
                        entry.tx, block, block_hash or None, wall
                    )
                    self._unchecked.add(entry.tx.tx_hash)
                self._reopened.difference_update(entry.tx.keys)
                self.stats.confirmed += len(entry.tx.keys)
                latencies = self.stats.submit_latency_s
                latencies.append(wall - entry.created_wall)
                del latencies[:-1000]
            self._room.set()
        self._head = head

    async def _receipts(
        self, entries: Sequence[_InFlight], head: int
    ) -> list[dict[str, Any] | None]:
        """What the chain holds of each of `entries` as of block `head`: a receipt's
        `blockNumber`, `blockHash` and `status`, or None when not mined (see the module
        docstring: access batches are answered by their first record's event)."""
        scan = {e.tx.tx_hash: e for e in entries
                if e.tx.kind is OperationKind.ACCESS and e.floor is not None}  # fmt: skip
        found: dict[bytes, dict[str, Any]] = {}
        count: int | None = None
        if scan:
            start = min(head, *(e.floor for e in scan.values() if e.floor is not None))
            logs_filter = {
                "address": self.access_log,
                "fromBlock": hex(start),
                "toBlock": hex(head),
                "topics": [
                    to_hex(ACCESS_RECORDED_TOPIC),
                    [to_hex(e.tx.keys[0]) for e in scan.values()],
                ],
            }
            counted, logs = await self.rpc.batch(
                [
                    ("eth_getTransactionCount", [self.sender, hex(head)]),
                    ("eth_getLogs", [logs_filter]),
                ]
            )
            if not isinstance(counted, RpcError):
                count = int(counted, 16)
            if not isinstance(logs, RpcError):  # (e.g. a range refused: the mined are asked)
                for event_log in logs:
                    entry = scan.get(from_hex(event_log["transactionHash"]))
                    if entry is not None and from_hex(event_log["topics"][1]) == entry.tx.keys[0]:
                        found[entry.tx.tx_hash] = {
                            "blockNumber": event_log["blockNumber"],
                            "blockHash": event_log["blockHash"],
                            "status": "0x1",  # an all-or-nothing call that logged: it succeeded
                        }
        out: list[dict[str, Any] | None] = [None] * len(entries)
        ask: list[int] = []
        for index, entry in enumerate(entries):
            if entry.tx.tx_hash in found:
                out[index] = found[entry.tx.tx_hash]
            elif count is not None and entry.tx.tx_hash in scan and entry.tx.nonce >= count:
                entry.floor = head + 1  # its nonce is unused at `head`: a later block holds it
            else:
                ask.append(index)
        for start in range(0, len(ask), 200):
            chunk = ask[start : start + 200]
            receipts = await self.rpc.receipts([entries[i].tx.tx_hash for i in chunk])
            for index, receipt in zip(chunk, receipts, strict=True):
                out[index] = receipt
        return out

    async def _replaced(self, entry: _InFlight) -> bool:
        """Our nonce was spent by another transaction of this key (something else signs with
        it): ours can never be mined, so its operations go back to PENDING for a new nonce."""
        if await self.rpc.receipt(entry.tx.tx_hash) is not None:
            return False  # mined just now: the next poll confirms it
        log.error(
            "submitter.nonce_taken",
            nonce=entry.tx.nonce,
            operations=len(entry.tx.keys),
            hint="another process signs with the gateway's key",
        )
        await self.outbox.settle_reverted(
            entry.tx.tx_hash, 0, failed={}, found={}, requeue=entry.tx.keys, count_attempt=False
        )
        del self._inflight[entry.tx.tx_hash]
        self.stats.replaced += 1
        async with self._nonce_lock:
            await self.nonces.reconcile(self.outbox, self.rpc)
        self._room.set()
        self.outbox.pending_changed()
        return True

    async def _resend(self, entry: _InFlight) -> None:
        attempts = entry.tx.attempts + 1
        entry.tx = dataclasses.replace(entry.tx, attempts=attempts)
        log.info("submitter.resend", nonce=entry.tx.nonce, attempts=attempts)
        await self._send(entry)
        self.stats.resends += 1
        await self.outbox.mark_resent(entry.tx.tx_hash, attempts)

    # --- reverts -----------------------------------------------------------------------------

    async def _simulate(self, data: bytes, to: str | None = None) -> str | None:
        """None when `data` would succeed now (sent to `to`, default AccessLog); else the
        custom error's name."""
        try:
            await self.rpc.call(to or self.access_log, data, sender=self.sender)
        except RpcError as exc:
            raw = exc.revert_data
            decoded = decode_revert(raw) if raw else None
            return decoded.name if decoded is not None else "reverted"
        return None

    async def _bisect(self, records: Sequence[bytes]) -> dict[int, str]:
        """The records at fault, by index, with their errors: the first record whose prefix
        fails is at fault; drop it and go on, so records that only fail together (quota) are
        found in order as the chain would apply them."""
        bad: dict[int, str] = {}
        accepted: list[int] = []
        remaining = list(range(len(records)))

        def data(indices: Sequence[int]) -> bytes:
            return record_accesses_calldata([records[i] for i in indices])

        while remaining:
            error = await self._simulate(data(accepted + remaining))
            if error is None:
                break
            lo, hi = 1, len(remaining)
            while lo < hi:
                mid = (lo + hi) // 2
                found = await self._simulate(data(accepted + remaining[:mid]))
                if found is None:
                    lo = mid + 1
                else:
                    hi, error = mid, found
            bad[remaining[hi - 1]] = error
            accepted += remaining[: hi - 1]
            remaining = remaining[hi:]
        return bad

    async def _settle_revert(self, entry: _InFlight, block: int, receipt: dict[str, Any]) -> None:
        tx = entry.tx
        self.stats.reverted_transactions += 1
        ops = await self.outbox.payloads(tx.keys)
        records = [ops[k].payload for k in tx.keys]
        if tx.kind is OperationKind.RELEASE:
            error = await self._simulate(RELEASE_RESULT + records[0])
            bad = {0: error} if error is not None else {}
        elif tx.kind is OperationKind.CALL:
            target, _, data = split_call_payload(records[0])
            error = await self._simulate(data, to_hex(target))
            bad = {0: error} if error is not None else {}
        else:
            bad = await self._bisect(records)
        failed: dict[bytes, str] = {}
        found: dict[bytes, tuple[bytes, int]] = {}
        for index, error in bad.items():
            key = tx.keys[index]
            # Already on chain (e.g. sent again after its confirmation vanished, while the
            # first transaction came back too): that is its confirmation, not a failure.
            on_chain = None
            if error == "AccessLogDuplicateRequest":
                on_chain = await self._find_recorded(key, records[index])
            elif error == "AccessLogDuplicateRelease":
                on_chain = await self._find_released(records[index])
            if on_chain is not None:
                found[key] = on_chain
                continue
            failed[key] = error
        rest = [k for i, k in enumerate(tx.keys) if i not in bad]
        if not bad:
            gas_used = int(receipt.get("gasUsed", "0x0"), 16)
            gas_limit = self._calldata([ops[k] for k in tx.keys], tx.kind)[1]
            if gas_used >= gas_limit * 0.98 and tx.kind is OperationKind.ACCESS:
                self._gas_per_record = self._gas_per_record * 5 // 4
                log.warning("submitter.out_of_gas", gas_per_record=self._gas_per_record)
            for key in list(rest):
                if ops[key].attempts + 1 >= self.settings.max_revert_attempts:
                    failed[key] = "reverted"
                    rest.remove(key)
        log.warning(
            "submitter.reverted",
            nonce=tx.nonce,
            block=block,
            records=len(tx.keys),
            failed={"0x" + k.hex(): e for k, e in failed.items()},
            already_recorded=len(found),
            requeued=len(rest),
        )
        await self.outbox.settle_reverted(
            tx.tx_hash,
            block,
            failed=failed,
            found=found,
            requeue=rest,
            count_attempt=not bad,
        )
        self.stats.failed += len(failed)
        if failed:
            self.stats.last_failed_at = time.time()
        self.stats.confirmed += len(found)
        self._reopened.difference_update([*failed, *found])
        del self._inflight[tx.tx_hash]
        self._room.set()

    async def _find_recorded(self, key: bytes, record: bytes) -> tuple[bytes, int] | None:
        """Where this operation's AccessRecorded event is, if the chain has it already: the
        event of `key` under the record's agreement whose data is this gateway's account and
        exactly `record` (the encoded record). The chain names an access by agreement and
        request id, and only the agreement holder's gateways record under an agreement, so
        the same id under another agreement (a requester reusing it at another hospital) is
        another access and never this one. Under this agreement, a record another gateway
        account of the holder made is not this operation's confirmation: the operation fails."""
        agreement_id = record[32:64]
        # Newest first: the duplicate is almost always a recent transaction of this gateway.
        logs = await self.rpc.find_logs(
            {
                "address": self.access_log,
                "topics": [to_hex(ACCESS_RECORDED_TOPIC), to_hex(key), to_hex(agreement_id)],
            },
            newest_first=True,
            first_match=True,
        )
        if not logs:
            return None
        first = logs[0]
        ours = bytes(12) + bytes.fromhex(self.sender[2:]) + record
        if str(first.get("data", "")).lower() != to_hex(ours).lower():
            log.warning("submitter.request_id_taken", request_id=to_hex(key),
                        agreement_id=to_hex(agreement_id),
                        tx_hash=first.get("transactionHash"))  # fmt: skip
            return None
        return bytes.fromhex(first["transactionHash"][2:]), int(first["blockNumber"], 16)

    async def _find_released(self, call: bytes) -> tuple[bytes, int] | None:
        """Where a release's ResultReleased event is (`call`: its encoded arguments): the access
        is named by its id and agreement, the release by that and its result."""
        access_id, agreement_id, result_hash = call[:32], call[32:64], call[64:96]
        logs = await self.rpc.get_logs(
            {
                "address": self.access_log,
                "fromBlock": "0x0",
                "toBlock": "latest",
                "topics": [to_hex(RESULT_RELEASED_TOPIC), to_hex(access_id),
                           to_hex(agreement_id), to_hex(result_hash)],
            }
        )  # fmt: skip
        if not logs:
            return None
        first = logs[0]
        return bytes.fromhex(first["transactionHash"][2:]), int(first["blockNumber"], 16)

    # --- re-checking confirmations -----------------------------------------------------------

    def confirmation_alarm(self) -> str | None:
        """Why readiness is degraded: confirmations left the chain lately (None: all well)."""
        s = self.stats
        if s.last_vanished_at is None:
            return None
        age = time.time() - s.last_vanished_at
        if not self._reopened and age > self.settings.alarm_hold_s:
            return None
        return (
            f"{s.vanished_operations} confirmed operation(s) in {s.vanished_transactions} "
            f"transaction(s) left the chain (last {age:.0f} s ago: its history was rewritten); "
            f"sent again, {len(self._reopened)} not on chain again yet"
        )

    def oldest_unrecorded_s(self) -> float:
        """Seconds since the oldest operation sent to the chain and not mined yet was answered
        (0: none in flight)."""
        if not self._inflight:
            return 0.0
        oldest = min(entry.created_wall for entry in self._inflight.values())
        return max(0.0, time.time() - oldest)

    def unrecorded_alarm(self) -> str | None:
        """Why readiness is degraded: answered operations sent to the chain are not on it
        after `unrecorded_alarm_s` (None: all well)."""
        age = self.oldest_unrecorded_s()
        if age < self.settings.unrecorded_alarm_s:
            return None
        operations = sum(len(entry.tx.keys) for entry in self._inflight.values())
        head = "its head was not read yet"
        if self._head_seen is not None:
            number, since = self._head_seen
            still = time.monotonic() - since
            head = (
                f"its head has stayed at block {number} for {still:.0f} s"
                if still >= self.settings.unrecorded_alarm_s / 2
                else f"its head moves (block {number}) without them"
            )
        return (
            f"{operations} answered operation(s) in {len(self._inflight)} transaction(s) are "
            f"not on chain, the oldest answered {age:.0f} s ago; {head}"
        )

    async def _reconfirm_once(self) -> None:
        await asyncio.sleep(self.settings.reconfirm_interval_s)
        await self._recheck_confirmations()
        await self._check_nonces()

    def refusal_alarm(self) -> str | None:
        """Why readiness is degraded: the chain refused to record decided operations lately.
        Each was answered before it was recorded, so a grant the requester holds may be on no
        chain (None: none in the last `alarm_hold_s`)."""
        s = self.stats
        if s.last_failed_at is None:
            return None
        age = time.time() - s.last_failed_at
        if age > self.settings.alarm_hold_s:
            return None
        return (
            f"the chain refused to record {s.failed} answered operation(s) since start (last "
            f"{age:.0f} s ago): each is stored with status failed and its error"
        )

    async def _recheck_confirmations(self) -> None:
        """Every recent confirmation's block must still be the chain's; those that are not go
        back in flight (see the module docstring: what a round reads)."""
        s = self.settings
        now = time.time()
        for tx_hash, mined in list(self._mined.items()):
            if now - mined.mined_at > s.reconfirm_window_s:
                del self._mined[tx_hash]
        if len(self._mined) > s.reconfirm_max:
            newest = sorted(self._mined.values(), key=lambda m: m.mined_at)[-s.reconfirm_max :]
            self._mined = {m.tx.tx_hash: m for m in newest}
        self._unchecked.intersection_update(self._mined)
        if not self._mined:
            self._anchor = None
            return
        while True:
            anchor = self._anchor
            unchecked = [m for h, m in self._mined.items() if h in self._unchecked]
            ends = [m.block_number for m in unchecked]
            if anchor is not None:
                ends.append(anchor[0])
            chain = await self._chain(min(ends), max(ends))
            if chain is None:
                return  # the chain moved while it was read: the next round reads it again
            if anchor is None or chain.get(anchor[0]) == anchor[1]:
                break
            # a block at or below the anchor was rewritten: every confirmation is in doubt
            self._anchor = None
            self._unchecked = set(self._mined)
        if not unchecked:
            return  # nothing confirmed since the anchor, which still holds
        suspect = [
            m
            for m in unchecked
            if m.block_hash is None or chain.get(m.block_number) != m.block_hash
        ]
        if suspect:
            await self._settle_suspects(suspect, chain, range(min(ends), max(ends) + 1))
        self._unchecked.difference_update(m.tx.tx_hash for m in unchecked)
        top = max(chain, default=None)
        if top is not None:
            self._anchor = (top, chain[top])

    async def _chain(self, low: int, high: int) -> dict[int, bytes] | None:
        """The chain's block hashes from `low` to `high` (blocks it does not have are left
        out), or None when they do not link up (each block names the previous as its parent,
        and none follows a missing one): the chain changed while they were read."""
        calls = [("eth_getBlockByNumber", [hex(n), False]) for n in range(low, high + 1)]
        hashes: dict[int, bytes] = {}
        parent: bytes | None = None
        missing = False
        for number, block in zip(range(low, high + 1), await self.rpc.batch(calls), strict=True):
            if isinstance(block, RpcError):
                raise block
            if not isinstance(block, dict) or not block.get("hash"):
                missing = True
                continue
            if missing or (parent is not None and from_hex(str(block["parentHash"])) != parent):
                return None
            hashes[number] = parent = from_hex(str(block["hash"]))
        return hashes

    async def _settle_suspects(
        self, suspect: Sequence[MinedTx], hashes: dict[int, bytes], read: range
    ) -> None:
        """Confirmations whose block is not the chain's (or was never kept; `hashes`: the
        chain's blocks of the range `read`): asked for their receipt; one still where it was
        keeps its confirmation, the others go back in flight."""
        receipts = await self.rpc.receipts([m.tx.tx_hash for m in suspect])
        gone: list[MinedTx] = []
        moved: dict[str, int | None] = {}
        for mined, receipt in zip(suspect, receipts, strict=True):
            if receipt is not None:
                number = int(receipt["blockNumber"], 16)
                block_hash = from_hex(str(receipt.get("blockHash") or "0x"))
                current = hashes.get(number) if number in read else block_hash
                ok = int(receipt.get("status", "0x1"), 16) == 1
                if ok and number == mined.block_number and block_hash == current:
                    # confirmed before the block hash was kept: keep it now
                    self._mined[mined.tx.tx_hash] = dataclasses.replace(
                        mined, block_hash=block_hash
                    )
                    continue
                moved["0x" + mined.tx.tx_hash.hex()] = number
            gone.append(mined)
        if gone:
            await self._reopen([m.tx for m in gone], blocks=[m.block_number for m in gone],
                               moved=moved)  # fmt: skip

    async def _reopen(
        self,
        txs: Sequence[StoredTx],
        *,
        blocks: Sequence[int | None] = (),
        moved: dict[str, int | None] | None = None,
    ) -> None:
        """Confirmed transactions no longer on chain: alarm, un-confirm, send again."""
        keys = await self.outbox.reopen([tx.tx_hash for tx in txs])
        for tx in txs:
            self._mined.pop(tx.tx_hash, None)
            self._inflight[tx.tx_hash] = _InFlight(tx, -math.inf, tx.created_at)
        self._reopened.update(keys)
        s = self.stats
        s.vanished_transactions += len(txs)
        s.vanished_operations += len(keys)
        s.last_vanished_at = time.time()
        log.error(
            "submitter.confirmation_vanished",
            transactions=["0x" + tx.tx_hash.hex() for tx in txs],
            nonces=[tx.nonce for tx in txs],
            blocks=list(blocks),
            mined_again_in=moved or {},
            operations=len(keys),
            hint="the chain no longer holds blocks it had confirmed (its history was "
            "rewritten); the same transactions are sent again",
        )
        self._room.set()

    async def _check_nonces(self) -> None:
        """The chain's count of the key's transactions must not fall below ours with nonces
        nobody will fill; fill them with their stored transactions, or move back."""
        if not self.nonces.ready or not await self._nonce_gap():
            return
        async with self._nonce_lock:  # nothing is signed meanwhile
            missing = await self._nonce_gap()
            if not missing:
                return
            stored = await self.outbox.transactions_at(self.sender, missing)
            again: list[StoredTx] = []
            back: int | None = None
            for nonce in missing:
                row = stored.get(nonce)
                if row is None or row.status == TxStatus.REVERTED:
                    back = nonce  # nothing to re-send that keeps the operations' outcome
                    break
                if row.status == TxStatus.MINED:
                    again.append(row.tx)
                else:  # stored SENT and somehow not tracked: track it again
                    self._inflight[row.tx.tx_hash] = _InFlight(row.tx, -math.inf, row.tx.created_at)
            if again:
                await self._reopen(again)
            if back is not None:
                await self._move_back(back)

    async def _nonce_gap(self) -> list[int]:
        """Nonces below ours that the chain does not have and no transaction in flight holds
        (the first `reconfirm_max` of them)."""
        ours = self.nonces.peek()
        flying = {entry.tx.nonce for entry in self._inflight.values()}
        # read after the snapshot: a transaction that left the in-flight set was mined first
        chain = await self.rpc.transaction_count(self.sender, "pending")
        if chain >= ours:
            return []
        missing: list[int] = []
        for nonce in range(chain, ours):
            if nonce not in flying:
                missing.append(nonce)
                if len(missing) >= self.settings.reconfirm_max:
                    break
        return missing

    async def _move_back(self, nonce: int) -> None:
        """Abandon every transaction from `nonce` on (their operations are batched again) and
        take `nonce` next. Called with the nonce lock held."""
        previous = self.nonces.peek()
        abandoned, requeued, unconfirmed = await self.outbox.abandon(self.sender, nonce)
        for tx_hash in abandoned:
            self._inflight.pop(tx_hash, None)
            self._mined.pop(tx_hash, None)
        self.nonces.move_back(nonce)
        s = self.stats
        s.nonce_resyncs += 1
        if unconfirmed:  # confirmations among them: the same alarm as `_reopen`
            self._reopened.update(unconfirmed)
            s.vanished_operations += len(unconfirmed)
            s.last_vanished_at = time.time()
        log.error(
            "submitter.nonce_resynchronised",
            sender=self.sender,
            previous=previous,
            next=nonce,
            abandoned=len(abandoned),
            requeued=requeued,
            confirmed_before=len(unconfirmed),
            hint="the chain lost transactions of this key that cannot be sent again as they "
            "were; their operations are batched again",
        )
        self._room.set()
