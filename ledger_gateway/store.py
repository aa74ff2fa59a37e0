"""The durable outbox: SQLModel tables, the engine factory and `SqlOutbox`.

A decision is acknowledged only after it is on disk, so `add_accesses` commits before it
returns. Committing each caller alone would cost one fsync per request; instead concurrent
callers hand their rows to one writer task that commits everything that queued up while the
previous commit was running (group commit): one transaction and one fsync per group.

All writes of a process (the API's inserts and the submitter's status changes) go through one
writer thread, so SQLite never sees two writers of the same process fight for its lock; reads
run on other threads (WAL lets them proceed during a write). Decisions go first: the
submitter's writes (marks, confirmations) wait while decisions are queued, up to
`write_defer_s`, and a block's confirmations are written in pieces, so a decision waits for
one piece at most, not for a block's every confirmation (at 500 decisions/s, ~250 operations:
10 ms of the writer at the median, 28 ms at worst, measured on a loaded machine). Among the
submitter's writes a round of signed transactions goes first (`write(..., first=True)`): the
chain waits for it, while a confirmation only writes down what the chain holds already.

SQLite (the embedded default) runs in WAL mode with synchronous=FULL — an acknowledged decision
survives a crash or `kill -9` — and writes open with BEGIN IMMEDIATE so a writer waits for the
lock (busy timeout) instead of failing half-way. PostgreSQL is used as is (synchronous commit).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import structlog
from sqlalchemy import (
    Engine,
    Index,
    LargeBinary,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Field, SQLModel

from dul.domain import Decision, DenyReason
from dul.home import private_file
from dul.sqlite_binds import bind_bytes_directly
from dul.sqlite_wal import enable_wal
from ledger_gateway.errors import ConflictError, UnavailableError
from ledger_gateway.outbox import (
    Accepted,
    CohortLeaves,
    NewAccess,
    NewCall,
    NewRelease,
    OperationKind,
    OperationStatus,
    OperationView,
    ReservationError,
    call_payload,
)

log = structlog.get_logger(__name__)

T = TypeVar("T")

PENDING_CONDITION = "status = 'pending'"
"""Where the pending index holds an operation (revision 0007), spelled the same in the queries
that use it: SQLite takes a partial index only for a query condition it sees implies the
index's, which a bound `status = ?` never does."""
IS_PENDING = text(PENDING_CONDITION)


# --------------------------------------------------------------------------- tables


class OperationRow(SQLModel, table=True):
    """One decided operation (access or release), keyed by its idempotency key."""

    __tablename__: ClassVar[str] = "gateway_operations"
    __table_args__ = (
        # Only PENDING operations (revision 0007): a submitted one leaves it, and the queries
        # on it (the next batch in id order, the counts) spell its condition (`IS_PENDING`).
        Index(
            "ix_gateway_operations_pending",
            "id",
            sqlite_where=text(PENDING_CONDITION),
            postgresql_where=text(PENDING_CONDITION),
        ),
        # Only operations in a transaction (revision 0005): a PENDING one has no hash, and
        # every query on the column looks one up.
        Index(
            "ix_gateway_operations_tx_hash",
            "tx_hash",
            sqlite_where=text("tx_hash IS NOT NULL"),
            postgresql_where=text("tx_hash IS NOT NULL"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: bytes = Field(unique=True, index=True)
    kind: str = Field(max_length=16)
    org: bytes
    agreement_id: bytes
    decision: int | None = None
    reasons: str = Field(default="", max_length=64)
    """DenyReason values, comma separated."""
    status: str = Field(max_length=16)
    """pending -> submitted (in `tx_hash`; CONFIRMED while that transaction is mined, see
    `view_of`) | confirmed (in a transaction found on chain) | failed"""
    payload: bytes
    body_hash: bytes
    tx_hash: bytes | None = None
    block_number: int | None = None
    nonce: int | None = None
    sender: str | None = Field(default=None, max_length=42)
    error: str | None = Field(default=None, max_length=200)
    attempts: int = 0
    """Transactions that carried this operation and reverted."""
    created_at: float
    confirmed_at: float | None = None
    authorization_fault: int | None = None
    """For authorization redemptions: the `AuthorizationFault` the decision found (0: none)."""


class CohortLeavesRow(SQLModel, table=True):
    """The cohort of one access: the hospital's own record of which subjects it admitted.

    The audit service reads it (`SELECT root, size, leaves FROM cohort_leaves WHERE access_id =
    :id`) to tell patients which accesses included them; the chain holds only (root, size).
    Written in the transaction that stores the access; nothing else maps subjects to accesses.
    """

    __tablename__: ClassVar[str] = "cohort_leaves"

    access_id: bytes = Field(sa_type=LargeBinary(32), primary_key=True)
    root: bytes = Field(sa_type=LargeBinary(32))
    size: int
    leaves: bytes
    """The sorted, distinct 32-byte subject references, back to back."""
    created_at: float


class QuotaUseRow(SQLModel, table=True):
    """The counted reservation of one agreement's quota, shared by every worker process: the
    chain's use count when this store first counted the agreement, plus each GRANTED access
    stored since, less those the chain refused. A grant is stored only with its unit
    reserved, in the same transaction."""

    __tablename__: ClassVar[str] = "gateway_quota_use"

    agreement_id: bytes = Field(sa_type=LargeBinary(32), primary_key=True)
    used: int


class CodeReservationRow(SQLModel, table=True):
    """An authorization code held by the GRANTED access that redeems it (one per code: the
    primary key). Written with the access; removed when the chain refuses the access."""

    __tablename__: ClassVar[str] = "gateway_code_reservations"

    code: bytes = Field(sa_type=LargeBinary(32), primary_key=True)
    access_id: bytes = Field(sa_type=LargeBinary(32))


class TransactionRow(SQLModel, table=True):
    """A signed transaction, stored before it is sent so a restart can re-send it as is: its
    marks here, its bytes in `TransactionBodyRow` (revision 0008)."""

    __tablename__: ClassVar[str] = "gateway_transactions"
    __table_args__ = (UniqueConstraint("sender", "nonce", name="uq_gateway_transactions_nonce"),)

    id: int | None = Field(default=None, primary_key=True)
    sender: str = Field(max_length=42)
    nonce: int
    kind: str = Field(max_length=16)
    tx_hash: bytes = Field(unique=True, index=True)
    status: str = Field(max_length=16, index=True)
    """sent -> mined | reverted; mined -> sent again when its block leaves the chain. Its
    SUBMITTED operations are CONFIRMED while it is mined (revision 0007)."""
    attempts: int = 1
    created_at: float
    block_number: int | None = None
    block_hash: bytes | None = None
    """The hash of the block it was mined in: re-checked while the confirmation is recent."""
    mined_at: float | None = Field(default=None, index=True)


class TransactionBodyRow(SQLModel, table=True):
    """What a signed transaction carries, written once with it and read only to send it
    again. Apart from its row in `gateway_transactions` (revision 0008): in it, every mark
    (mined, re-sent, reverted, reopened) rewrote ~150 kB for a 256-record transaction."""

    __tablename__: ClassVar[str] = "gateway_transaction_bodies"

    id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    """The transaction's `id`."""
    raw: bytes
    keys: bytes
    """The operation keys it carries, 32 bytes each, in call order."""


class NonceRow(SQLModel, table=True):
    """The next nonce of one signing key (see `ledger_gateway.nonces`)."""

    __tablename__: ClassVar[str] = "gateway_nonces"

    sender: str = Field(primary_key=True, max_length=42)
    next_nonce: int


class TxStatus:
    SENT = "sent"
    MINED = "mined"
    REVERTED = "reverted"


OPS = OperationRow.__table__  # type: ignore[attr-defined]
TXS = TransactionRow.__table__  # type: ignore[attr-defined]
BODIES = TransactionBodyRow.__table__  # type: ignore[attr-defined]
NONCES = NonceRow.__table__  # type: ignore[attr-defined]
LEAVES = CohortLeavesRow.__table__  # type: ignore[attr-defined]
QUOTA = QuotaUseRow.__table__  # type: ignore[attr-defined]
CODES = CodeReservationRow.__table__  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- engines


def make_engine(url: str, *, busy_timeout_s: float = 30.0, pool_size: int = 8) -> Engine:
    """An engine for the outbox: SQLite (WAL, synchronous=FULL) or PostgreSQL, by URL."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:" and Path(database).parent.is_dir():
            private_file(Path(database))  # 0600 before SQLite opens it (-wal/-shm follow)
        bind_bytes_directly()
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # the "begin" hook below opens transactions
            cursor = dbapi_conn.cursor()
            enable_wal(cursor, busy_timeout_s)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Connection) -> None:
            # Writers take the lock up front: a deferred transaction that reads and then
            # writes can fail with SQLITE_BUSY_SNAPSHOT, which the busy timeout does not retry.
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine
    # psycopg 3: no server-side prepared statements. A generic plan cached while the table
    # was small (a sequential scan) outlives the table's growth: key look-ups got 8x slower.
    psycopg = make_url(url).get_driver_name() == "psycopg"
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"prepare_threshold": None} if psycopg else {},
    )


# --------------------------------------------------------------------------- helpers


def _reasons_text(reasons: Iterable[DenyReason]) -> str:
    return ",".join(str(int(r)) for r in reasons)


def _reasons_tuple(text: str) -> tuple[DenyReason, ...]:
    return tuple(DenyReason(int(x)) for x in text.split(",") if x)


def view_of(row: Any) -> OperationView:
    """An OperationView from a row of `gateway_operations` with its transaction's `tx_status`,
    `tx_block` and `tx_mined_at` (`_VIEWS`): SUBMITTED in a mined transaction is CONFIRMED
    in that transaction's block, at the time it was confirmed."""
    if row.status == _SUBMITTED and row.tx_status == TxStatus.MINED:
        status, block, confirmed_at = OperationStatus.CONFIRMED, row.tx_block, row.tx_mined_at
    else:
        status, block, confirmed_at = (
            OperationStatus(row.status),
            row.block_number,
            row.confirmed_at,
        )
    return OperationView(
        key=bytes(row.key),
        kind=OperationKind(row.kind),
        body_hash=bytes(row.body_hash),
        org=bytes(row.org),
        agreement_id=bytes(row.agreement_id),
        decision=Decision(row.decision) if row.decision is not None else None,
        reasons=_reasons_tuple(row.reasons),
        status=status,
        payload=bytes(row.payload),
        tx_hash=bytes(row.tx_hash) if row.tx_hash is not None else None,
        block_number=block,
        error=row.error,
        created_at=row.created_at,
        confirmed_at=confirmed_at,
        authorization_fault=row.authorization_fault,
    )


_SUBMITTED = OperationStatus.SUBMITTED.value
_VIEWED = OPS.outerjoin(TXS, TXS.c.tx_hash == OPS.c.tx_hash)
_VIEWS = select(
    OPS,
    TXS.c.status.label("tx_status"),
    TXS.c.block_number.label("tx_block"),
    TXS.c.mined_at.label("tx_mined_at"),
).select_from(_VIEWED)
"""Operations as `view_of` reads them: each with the state of the transaction it is in."""


def _status_is(*statuses: OperationStatus) -> ColumnElement[bool]:
    """`status` IN `statuses` as a filter that never picks the index.

    Updates by key or transaction hash also check the status. Without table statistics,
    SQLite's planner took `ix_gateway_operations_status_id` for them (a status term looked as
    selective as 256 keys) and walked every row of that status for each statement: marking a
    256-record transaction SUBMITTED visited the whole backlog of PENDING rows (35 µs of CPU per
    record with 20,000 waiting, 11 µs by key), and re-opening a vanished confirmation would visit
    every CONFIRMED row ever stored. `status || ''` (both databases) keeps the term a filter."""
    column: ColumnElement[str] = OPS.c.status.concat("")
    values = [s.value for s in statuses]
    return column == values[0] if len(values) == 1 else column.in_(values)


_IN_FLIGHT = TXS.join(OPS, OPS.c.tx_hash == TXS.c.tx_hash)


def count_open(conn: Connection, *where: ColumnElement[bool]) -> int:
    """Operations (among those `where` picks) not yet CONFIRMED or FAILED: the PENDING ones,
    through the pending index, and the SUBMITTED ones of transactions still `sent`, through
    the transactions' status index (no index holds the open set itself: a confirmation marks
    the transaction only)."""
    pending = conn.execute(select(func.count()).select_from(OPS).where(IS_PENDING, *where))
    in_flight = conn.execute(
        select(func.count())
        .select_from(_IN_FLIGHT)
        .where(TXS.c.status == TxStatus.SENT, _status_is(OperationStatus.SUBMITTED), *where)
    )
    return int(pending.scalar_one()) + int(in_flight.scalar_one())


def _chunks(items: Sequence[T], size: int = 500) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


INSERT_ROWS = 128
"""Most operations one INSERT statement stores. An `executemany` of one row per step cost
SQLite a statement start (four cursors opened) and the driver a reset per row, and released
and re-took the interpreter lock four times a row (each a hand-off to the event loop when it
waits); one multi-row statement does that once. 128 rows of 12 values stay far below SQLite's
32,766 and PostgreSQL's 65,535 parameters."""


def _insert_sizes() -> list[int]:
    """Rows per statement of the group commit's inserts: powers of two up to `INSERT_ROWS`,
    so a handful of statement texts serve every group (each prepared once, then cached)."""
    return [1 << n for n in range(INSERT_ROWS.bit_length()) if 1 << n <= INSERT_ROWS]


def _insert_pieces(count: int) -> Iterator[int]:
    """The statement sizes that store `count` rows: full `INSERT_ROWS` pieces, then the rest
    by its binary digits (500 rows: 128, 128, 128, 64, 32, 16, 4)."""
    for _ in range(count // INSERT_ROWS):
        yield INSERT_ROWS
    rest = count % INSERT_ROWS
    for size in reversed(_insert_sizes()):
        if rest & size:
            yield size


_SELECT_BY_KEY = (  # `_VIEWS`, by the driver
    "SELECT o.*, t.status AS tx_status, t.block_number AS tx_block, t.mined_at AS tx_mined_at "
    "FROM gateway_operations AS o LEFT OUTER JOIN gateway_transactions AS t "
    "ON t.tx_hash = o.tx_hash WHERE o.key IN "
)

_INSERTED = (
    "key",
    "kind",
    "org",
    "agreement_id",
    "decision",
    "reasons",
    "status",
    "payload",
    "body_hash",
    "created_at",
    "authorization_fault",
)
"""The columns a new operation is stored with (the others start NULL, `attempts` 0)."""
_KIND_TEXT = {kind: kind.value for kind in OperationKind}
_STATUS_TEXT = {status: status.value for status in OperationStatus}


def _inserted_values(view: OperationView) -> tuple[Any, ...]:
    """A new operation's row values in `_INSERTED` order."""
    decision, reasons = view.decision, view.reasons
    return (
        view.key,
        _KIND_TEXT[view.kind],
        view.org,
        view.agreement_id,
        None if decision is None else int(decision),
        _reasons_text(reasons) if reasons else "",
        _STATUS_TEXT[view.status],
        view.payload,
        view.body_hash,
        view.created_at,
        view.authorization_fault,
    )


def _new_view(
    key: bytes, kind: OperationKind, org: bytes, agreement_id: bytes, payload: bytes, body: bytes
) -> OperationView:
    """A new operation that is not an access (no decision), as stored: PENDING."""
    return OperationView(
        key=key,
        kind=kind,
        body_hash=body,
        org=org,
        agreement_id=agreement_id,
        decision=None,
        reasons=(),
        status=OperationStatus.PENDING,
        payload=payload,
        tx_hash=None,
        block_number=None,
        error=None,
        created_at=time.time(),
        confirmed_at=None,
    )


class PendingOp(NamedTuple):
    """What the submitter needs of a PENDING operation (a named tuple: one is made per
    operation the submitter reads, ~0.4 µs where a frozen dataclass's six `object.__setattr__`
    cost ~1)."""

    key: bytes
    kind: OperationKind
    payload: bytes
    created_at: float
    attempts: int
    row_id: int | None = None
    """Its row in `gateway_operations` (None: not read from the table)."""


@dataclass(frozen=True)
class StoredTx:
    """A signed transaction not yet known to be mined (recovery re-checks and re-sends it)."""

    sender: str
    nonce: int
    kind: OperationKind
    raw: bytes
    tx_hash: bytes
    keys: tuple[bytes, ...]
    attempts: int
    created_at: float
    row_ids: tuple[int, ...] = ()
    """The rows of `keys` in `gateway_operations`, when known (not stored: `record_submissions`
    marks the operations by row instead of looking each key up in its index)."""


@dataclass(frozen=True)
class MinedTx:
    """A transaction the submitter saw mined: where, and when it confirmed it."""

    tx: StoredTx
    block_number: int
    block_hash: bytes | None
    mined_at: float


@dataclass(frozen=True)
class StoredTxRow:
    tx: StoredTx
    status: str
    """A `TxStatus` value."""


_STORED_TXS = select(TXS, BODIES.c.raw, BODIES.c["keys"]).select_from(
    TXS.join(BODIES, BODIES.c.id == TXS.c.id)
)
"""Transactions with their bytes, as `_stored_tx` reads them."""


def _stored_tx(r: Any) -> StoredTx:
    return StoredTx(
        sender=r.sender,
        nonce=r.nonce,
        kind=OperationKind(r.kind),
        raw=bytes(r.raw),
        tx_hash=bytes(r.tx_hash),
        keys=tuple(bytes(r.keys[i : i + 32]) for i in range(0, len(r.keys), 32)),
        attempts=r.attempts,
        created_at=r.created_at,
    )


class _Reserve(NamedTuple):
    """What a new GRANTED row reserves when it is stored."""

    agreement_id: bytes
    quota: int | None
    chain_used: int
    code: bytes | None


@dataclass
class _Job:
    views: list[OperationView]
    """The operations to store, as the API answers them while they are PENDING (the rows
    are made from them: `_inserted_values`)."""
    future: asyncio.Future[list[Accepted]]
    cohorts: dict[bytes, CohortLeaves] = field(default_factory=dict)
    """Cohorts to store beside the rows of these keys, if the rows are new."""
    reserves: dict[bytes, _Reserve] = field(default_factory=dict)
    """Reservations of the GRANTED rows of these keys, if the rows are new."""


@dataclass(frozen=True)
class OutboxSettings:
    """Knobs of the store (the gateway maps `DUL_GATEWAY_OUTBOX_LIMIT` onto `max_depth`)."""

    max_depth: int = 100_000
    """Operations not yet CONFIRMED or FAILED before `add_*` answers `outbox_full`."""
    max_group: int = 2_000
    """Most rows in one group commit."""
    wait_recheck_s: float = 0.5
    """How often `wait` re-reads the row (a submitter in another process does not notify)."""
    depth_recount_s: float = 1.0
    """How often the open-operation count is re-read from the database instead of tracked."""
    checkpoint_interval_s: float = 0.5
    """SQLite: how often the WAL is checkpointed into the database, off the commit path."""
    write_defer_s: float = 0.02
    """Longest the submitter's writes wait for queued decisions to be committed first (the
    submitter's batching and confirming slow down by as much when decisions never stop)."""


@dataclass
class _Later:
    """A submitter's write waiting for the writer (`SqlOutbox.write`)."""

    fn: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    since: float
    """monotonic time it was queued."""


LOOK_UP_AFTER_REPLAY_S = 10.0
"""How long group commits look their keys up first after one found a key stored before.

Looking every key up cost ~8,400 instructions per new access (a 500-key IN list sorted and
probed in the key index, callgrind), as much again as the insert's own probe of the unique
index, which refuses a stored key anyway. So a group takes its keys for new, and only when the
insert is refused (a replay, or another process's insert) or a job is refused does it roll
back and run again with the look-up; after a replay, retries tend to follow, so the look-up
stays on a while instead of every group paying twice."""


class _NotAllNewError(Exception):
    """A group commit that took its keys for new met a refusal: run it again, looking up."""


CONFIRM_PIECE = 64
"""Most transactions confirmed in one database transaction (each is one UPDATE of its row:
its operations are CONFIRMED through it, revision 0007)."""


@dataclass
class _Depth:
    value: int = 0
    counted_at: float = -math.inf
    drain_per_s: float = 0.0
    history: list[tuple[float, int]] = field(default_factory=list)


# --------------------------------------------------------------------------- the outbox


class SqlOutbox:
    """The `Outbox` of the gateway, plus the calls its submitter makes.

    Create with an engine (`make_engine(url)`, after `migrate(url)`), `await start()` before
    use and `await close()` at shutdown.
    """

    def __init__(self, engine: Engine, settings: OutboxSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or OutboxSettings()
        self._sqlite = engine.dialect.name == "sqlite"
        self._mark = mark = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        columns, marks = ", ".join(_INSERTED), ", ".join([mark] * len(_INSERTED))
        head = f"INSERT INTO {OPS.name} ({columns}, attempts) VALUES "  # noqa: S608 - constant names
        self._insert_operations = {
            size: head + ", ".join([f"({marks}, 0)"] * size) for size in _insert_sizes()
        }
        """The group commit's inserts by rows per statement (`_insert_pieces`; PostgreSQL: one
        row, in an executemany), handed to the driver as is: through SQLAlchemy's `insert()`
        each row's six byte strings went through a bind processor (~6 µs of the writer's CPU
        per access, measured; the writer's Python competes with the event loop for the
        interpreter)."""
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-writer")
        self._queue: asyncio.Queue[_Job] | None = None
        self._later: collections.deque[_Later] = collections.deque()
        self._first: collections.deque[_Later] = collections.deque()
        """Submitter writes served before `_later` (`write(..., first=True)`)."""
        self._wake = asyncio.Event()
        """Set when a decision or another write is queued for the writer."""
        self._writer_task: asyncio.Task[None] | None = None
        self._waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._depth = _Depth()
        self._checkpoint_task: asyncio.Task[None] | None = None
        self.new_pending = asyncio.Event()
        """Set after each commit that stored new PENDING rows (the submitter waits on it)."""
        self.accesses_added = 0
        """PENDING accesses this process has stored so far: a submitter waiting for a short
        batch to fill counts what arrived without reading the store again."""
        self._look_up_until = -math.inf
        """monotonic time until which group commits look their keys up first."""
        self.other_pending_added = 0
        """Times anything else became PENDING here (releases, calls, requeued operations)."""
        if self._sqlite:
            # SQLite checkpoints the WAL inside the commit that crosses 1,000 pages: with
            # cohorts (~0.3 MB of leaves a decision) every ~12th decision waited for a 4 MB
            # copy and an fsync. Checkpoints run on their own thread instead (`start`).
            event.listen(engine, "connect", _no_autocheckpoint)

    # --- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._writer_task is None:
            self._queue = asyncio.Queue()
            self._wake = asyncio.Event()
            self.new_pending = asyncio.Event()
            self._writer_task = asyncio.create_task(self._write_loop(), name="outbox-writer")
            if self._sqlite:
                self._checkpoint_task = asyncio.create_task(
                    self._checkpoint_loop(), name="outbox-checkpoint"
                )

    async def close(self) -> None:
        for task in (self._checkpoint_task, self._writer_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._checkpoint_task = self._writer_task = None
        for queued in (self._first, self._later):
            while queued:
                waiting = queued.popleft().future
                if not waiting.done():
                    waiting.set_exception(RuntimeError("the outbox was closed"))
        self._writer.shutdown(wait=True)

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE WAL checkpoint (it waits for no reader or writer): (busy, WAL frames,
        frames checkpointed)."""
        raw = self.engine.raw_connection()
        try:
            row = raw.cursor().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return int(row[0]), int(row[1]), int(row[2])
        finally:
            raw.close()

    async def _checkpoint_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.checkpoint_interval_s)
            try:
                await asyncio.to_thread(self.checkpoint)
            except Exception as exc:  # e.g. the disk is full: commits report it themselves
                log.warning("outbox.checkpoint_failed", error=repr(exc))

    # --- thread helpers ----------------------------------------------------------------------

    async def write(self, fn: Callable[[Connection], T], *, first: bool = False) -> T:
        """Run `fn` in one write transaction on the writer thread, after the decisions queued
        meanwhile (see `_write_loop`); `first`: before the other writes queued that were not."""
        loop = asyncio.get_running_loop()
        if self._writer_task is None:  # not started: nothing queues before it
            return await loop.run_in_executor(self._writer, self._in_write_tx, fn)
        future: asyncio.Future[T] = loop.create_future()
        (self._first if first else self._later).append(_Later(fn, future, time.monotonic()))
        self._wake.set()
        return await future

    def _in_write_tx(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.connect() as conn:
            if self._sqlite:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                return fn(conn)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        def run() -> T:
            with self.engine.connect() as conn, conn.begin():
                return fn(conn)

        return await asyncio.to_thread(run)

    # --- Outbox protocol ---------------------------------------------------------------------

    async def add_accesses(self, accesses: Sequence[NewAccess]) -> list[Accepted]:
        now = time.time()
        access, pending = OperationKind.ACCESS, OperationStatus.PENDING
        views = [
            OperationView(
                a.request_id,
                access,
                a.body_hash,
                a.org,
                a.agreement_id,
                a.decision,
                a.reasons,
                pending,
                a.record,
                None,
                None,
                None,
                now,
                None,
                a.authorization_fault,
            )
            for a in accesses
        ]
        cohorts = {a.request_id: a.cohort for a in accesses if a.cohort is not None}
        reserves = {
            a.request_id: _Reserve(a.agreement_id, a.quota, a.chain_used, a.code)
            for a in accesses
            if a.decision == Decision.GRANTED and (a.quota is not None or a.code is not None)
        }
        return await self._submit(views, cohorts, reserves)

    async def add_release(self, release: NewRelease) -> Accepted:
        view = _new_view(
            release.release_key,
            OperationKind.RELEASE,
            release.org,
            release.agreement_id,
            release.call,
            release.body_hash,
        )
        return (await self._submit([view]))[0]

    async def add_call(self, call: NewCall) -> Accepted:
        view = _new_view(
            call.key,
            OperationKind.CALL,
            call.org,
            call.agreement_id,
            call_payload(call.target, call.gas, call.data),
            call.body_hash,
        )
        return (await self._submit([view]))[0]

    async def get(self, key: bytes) -> OperationView | None:
        def run(conn: Connection) -> OperationView | None:
            row = conn.execute(_VIEWS.where(OPS.c.key == key)).first()
            return view_of(row) if row is not None else None

        return await self.read(run)

    async def get_many(self, keys: Sequence[bytes]) -> dict[bytes, OperationView]:
        def run(conn: Connection) -> dict[bytes, OperationView]:
            found: dict[bytes, OperationView] = {}
            for chunk in _chunks(keys):
                for row in conn.execute(_VIEWS.where(OPS.c.key.in_(chunk))):
                    found[bytes(row.key)] = view_of(row)
            return found

        return await self.read(run)

    async def wait(self, key: bytes, timeout: float) -> OperationView | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            view = await self.get(key)
            if view is None or view.status in (OperationStatus.CONFIRMED, OperationStatus.FAILED):
                return view
            remaining = deadline - loop.time()
            if remaining <= 0:
                return view
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.setdefault(key, []).append(waiter)
            try:
                await asyncio.wait_for(
                    asyncio.shield(waiter), min(remaining, self.settings.wait_recheck_s)
                )
            except TimeoutError:
                pass
            finally:
                waiting = self._waiters.get(key)
                if waiting is not None and waiter in waiting:
                    waiting.remove(waiter)
                    if not waiting:
                        del self._waiters[key]

    async def cohort(self, access_id: bytes) -> CohortLeaves | None:
        def run(conn: Connection) -> CohortLeaves | None:
            row = conn.execute(
                select(LEAVES.c.root, LEAVES.c.size, LEAVES.c.leaves).where(
                    LEAVES.c.access_id == access_id
                )
            ).first()
            if row is None:
                return None
            return CohortLeaves(bytes(row.root), int(row.size), bytes(row.leaves))

        return await self.read(run)

    async def code_holder(self, code: bytes) -> bytes | None:
        def run(conn: Connection) -> bytes | None:
            found = conn.execute(select(CODES.c.access_id).where(CODES.c.code == code)).first()
            return None if found is None else bytes(found.access_id)

        return await self.read(run)

    async def quota_used(self, agreement_id: bytes) -> int | None:
        """The agreement's counted reservation (None: not counted here yet)."""

        def run(conn: Connection) -> int | None:
            value = conn.execute(
                select(QUOTA.c.used).where(QUOTA.c.agreement_id == agreement_id)
            ).scalar_one_or_none()
            return None if value is None else int(value)

        return await self.read(run)

    async def depth(self) -> int:
        def run(conn: Connection) -> int:
            return count_open(conn)

        return await self.read(run)

    # --- group commit ------------------------------------------------------------------------

    async def _submit(
        self,
        views: list[OperationView],
        cohorts: dict[bytes, CohortLeaves] | None = None,
        reserves: dict[bytes, _Reserve] | None = None,
    ) -> list[Accepted]:
        if self._queue is None:
            raise RuntimeError("SqlOutbox.start() was not awaited")
        future: asyncio.Future[list[Accepted]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(views, future, cohorts or {}, reserves or {}))
        self._wake.set()
        return await future

    async def _write_loop(self) -> None:
        """The writer's turns: a group commit of the queued decisions while any are queued;
        the submitter's writes (`write`) in between, one a turn, or once the oldest of them
        has waited `write_defer_s` (under a load that never leaves the queue empty). A turn
        of the submitter's takes a `first` write if one waits."""
        assert self._queue is not None
        defer = self.settings.write_defer_s
        first, later = self._first, self._later
        while True:
            if self._queue.empty() and not first and not later:
                self._wake.clear()
                await self._wake.wait()
            try:
                if (first or later) and self._queue.empty():
                    await self._write_later((first or later).popleft())
                elif (first or later) and (
                    time.monotonic() - min(q[0].since for q in (first, later) if q) >= defer
                ):
                    await self._write_with_decisions((first or later).popleft())
                else:
                    await self._commit_decisions()
            except Exception:  # a fault here must not stop every write after it
                log.exception("outbox.writer_turn_failed")

    async def _write_later(self, item: _Later) -> None:
        if item.future.done():  # its caller gave up (cancelled) before it started
            return
        loop = asyncio.get_running_loop()
        written: tuple[bool, Any]
        try:
            written = (True, await loop.run_in_executor(self._writer, self._in_write_tx, item.fn))
        except Exception as exc:  # the caller gets its own error
            written = (False, exc)
        _answer_later(item, written)

    async def _write_with_decisions(self, item: _Later) -> None:
        """A submitter's write whose turn came while decisions were queued (it waited
        `write_defer_s` for them): the decisions queued are committed in its transaction,
        ahead of it, so they wait for one commit (and fsync) where they waited for its and
        then for their own. Its failure is its own (a savepoint); when theirs refuses the
        transaction (a replay, another process's key) or the commit fails, each goes again
        alone."""
        if item.future.done():  # its caller gave up (cancelled) before it started
            return
        jobs = self._queued_jobs()
        loop = asyncio.get_running_loop()
        look_up = time.monotonic() < self._look_up_until
        try:
            await loop.run_in_executor(self._writer, self._commit_along, loop, jobs, look_up, item)
            return  # both answered by the writer thread
        except (IntegrityError, _NotAllNewError):  # nothing was stored: they look keys up
            self._look_up_until = time.monotonic() + LOOK_UP_AFTER_REPLAY_S
        except Exception as exc:  # nothing was stored (e.g. the disk is full): again, alone
            log.warning("outbox.combined_commit_failed", error=repr(exc), jobs=len(jobs))
        await self._write_later(item)
        await self._commit_decisions(jobs)

    def _commit_along(
        self,
        loop: asyncio.AbstractEventLoop,
        jobs: Sequence[_Job],
        look_up: bool,
        item: _Later,
    ) -> None:
        """`_write_with_decisions` on the writer thread: one transaction, the decisions then
        the submitter's write, both answered from here once it is committed."""

        def both(conn: Connection) -> tuple[list[list[Accepted] | BaseException], tuple[bool, Any]]:
            outcomes = self._commit_jobs(conn, jobs, look_up)
            written: tuple[bool, Any]
            try:
                with conn.begin_nested():
                    written = (True, item.fn(conn))
            except Exception as exc:  # the submitter gets its own error
                written = (False, exc)
            return outcomes, written

        outcomes, written = self._in_write_tx(both)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._settle, jobs, outcomes)
            loop.call_soon_threadsafe(_answer_later, item, written)

    def _queued_jobs(self) -> list[_Job]:
        """The queued decisions of one group commit (up to `max_group` rows)."""
        assert self._queue is not None
        jobs = [self._queue.get_nowait()]
        size = len(jobs[0].views)
        while not self._queue.empty() and size < self.settings.max_group:
            job = self._queue.get_nowait()
            jobs.append(job)
            size += len(job.views)
        return jobs

    async def _commit_decisions(self, jobs: list[_Job] | None = None) -> None:
        """One group commit: the queued decisions (or `jobs`). A commit that goes through
        answers its callers from the writer thread (`_commit_and_settle`)."""
        loop = asyncio.get_running_loop()
        if jobs is None:
            jobs = self._queued_jobs()
        outcomes: list[list[Accepted] | BaseException]
        try:
            await self._commit_new_or_look_up(jobs)
            return  # settled by the writer thread
        except IntegrityError:
            # Another process inserted one of these keys meanwhile: settle each job alone.
            outcomes = []
            for job in jobs:
                try:
                    outcomes.extend(
                        await loop.run_in_executor(self._writer, self._commit_group, [job], True)
                    )
                except Exception as exc:  # the caller gets its own error
                    outcomes.append(exc)
        except Exception as exc:  # e.g. disk full: every caller of the group gets it
            log.error("outbox.commit_failed", error=repr(exc), jobs=len(jobs))
            outcomes = [exc] * len(jobs)
        self._settle(jobs, outcomes)

    def _settle(
        self, jobs: Sequence[_Job], outcomes: Sequence[list[Accepted] | BaseException]
    ) -> None:
        """Answer a group's callers and wake the submitter for what it stored."""
        accesses = others = 0
        for job, outcome in zip(jobs, outcomes, strict=True):
            if not isinstance(outcome, BaseException):  # stored, whether awaited or not
                for accepted in outcome:
                    if accepted.created and accepted.view.kind is OperationKind.ACCESS:
                        accesses += 1
                    elif accepted.created:
                        others += 1
            if job.future.done():
                continue
            if isinstance(outcome, BaseException):
                job.future.set_exception(outcome)
            else:
                job.future.set_result(outcome)
        if accesses or others:
            self.pending_changed(accesses, other=others > 0)

    def pending_changed(self, accesses: int = 0, *, other: bool = True) -> None:
        """Wake the submitter: `accesses` new PENDING accesses were stored, or (`other`)
        something else became PENDING (a release, a call, operations put back in the queue)."""
        self.accesses_added += accesses
        if other:
            self.other_pending_added += 1
        self.new_pending.set()

    def _open_count(self, conn: Connection) -> int:
        now = time.monotonic()
        d = self._depth
        if now - d.counted_at >= self.settings.depth_recount_s:
            counted = count_open(conn)
            if d.counted_at > -math.inf and now > d.counted_at:
                # drain estimate for Retry-After: what left the open set since the last count
                d.history = [*d.history[-9:], (now, counted)]
            d.value, d.counted_at = counted, now
        return d.value

    def _retry_after(self, depth: int) -> int:
        bound = self.settings.max_depth
        excess = max(1, depth - bound + 1)
        rate = 0.0
        history = self._depth.history
        if len(history) >= 2:
            (t0, c0), (t1, c1) = history[0], history[-1]
            if t1 > t0:
                rate = max(0.0, (c0 - c1) / (t1 - t0))
        if rate <= 0:
            return 5
        return max(1, min(60, math.ceil(excess / rate)))

    async def _commit_new_or_look_up(
        self, jobs: Sequence[_Job]
    ) -> list[list[Accepted] | BaseException]:
        """A group commit that first takes every key for new (the key's unique index says
        otherwise), and looks the keys up when one was stored before or a job was refused."""
        loop = asyncio.get_running_loop()
        settle = self._commit_and_settle
        if time.monotonic() >= self._look_up_until:
            try:
                return await loop.run_in_executor(self._writer, settle, loop, jobs, False)
            except (IntegrityError, _NotAllNewError):
                self._look_up_until = time.monotonic() + LOOK_UP_AFTER_REPLAY_S
        return await loop.run_in_executor(self._writer, settle, loop, jobs, True)

    def _commit_and_settle(
        self, loop: asyncio.AbstractEventLoop, jobs: Sequence[_Job], look_up: bool
    ) -> list[list[Accepted] | BaseException]:
        """`_commit_group`, whose callers the writer thread then answers itself: handed to
        the loop at once, they resume in the loop's next turn. Answered by the writer task
        once it was woken from the commit, they resumed a turn later — three turns after
        the commit where now two, and under load a turn is every request that arrived
        meanwhile parsed, checked and decided."""
        outcomes = self._commit_group(jobs, look_up)
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(self._settle, jobs, outcomes)
        return outcomes

    def _commit_group(
        self, jobs: Sequence[_Job], look_up: bool
    ) -> list[list[Accepted] | BaseException]:
        return self._in_write_tx(lambda conn: self._commit_jobs(conn, jobs, look_up))

    def _in(self, values: Sequence[Any]) -> str:
        """`(?, ?, …)` for `values`, in the driver's placeholder style."""
        return "(" + ", ".join([self._mark] * len(values)) + ")"

    def _commit_jobs(
        self, conn: Connection, jobs: Sequence[_Job], look_up: bool = True
    ) -> list[list[Accepted] | BaseException]:
        """Settle and store `jobs`; without `look_up`, every key is taken for new and any
        refusal raises `_NotAllNewError` (the caller rolls back and looks the keys up)."""
        keys = list({view.key for job in jobs for view in job.views}) if look_up else []
        known: dict[bytes, OperationView] = {}
        for chunk in _chunks(keys):
            # by the driver, as the insert: SQLAlchemy's expanding IN bound each key apart
            found = conn.exec_driver_sql(_SELECT_BY_KEY + self._in(chunk), tuple(chunk))
            for stored in found:
                known[bytes(stored.key)] = view_of(stored)
        depth = self._open_count(conn)
        reservations = _Reservations(conn, jobs, known, postgres=not self._sqlite, mark=self._mark)
        inserts: list[OperationView] = []
        leaves: list[dict[str, Any]] = []
        outcomes: list[list[Accepted] | BaseException] = []
        for job in jobs:
            accepted: list[Accepted] = []
            mine: dict[bytes, OperationView] = {}
            """The job's new operations, in call order (a key repeated in it is stored once)."""
            failure: BaseException | None = None
            for view in job.views:
                key = view.key
                existing = known.get(key) or mine.get(key)
                if existing is not None:
                    if existing.body_hash != view.body_hash:
                        failure = ConflictError(
                            f"request id 0x{key.hex()} was stored with another body",
                            key="0x" + key.hex(),
                        )
                        break
                    accepted.append(Accepted(existing, created=False))
                    continue
                mine[key] = view
                accepted.append(Accepted(view, created=True))
            if failure is None and job.reserves:
                failure = reservations.take(job, mine)
            if failure is None and mine and depth + len(mine) > self.settings.max_depth:
                failure = UnavailableError(
                    f"the outbox holds {depth} unconfirmed operations (bound "
                    f"{self.settings.max_depth}); retry later",
                    code="outbox_full",
                    retry_after=self._retry_after(depth + len(mine)),
                )
            if failure is not None:
                outcomes.append(failure)
                continue
            known.update(mine)
            depth += len(mine)
            inserts.extend(mine.values())
            for key, cohort in job.cohorts.items():
                if key in mine:
                    leaves.append(
                        {
                            "access_id": key,
                            "root": cohort.root,
                            "size": cohort.size,
                            "leaves": cohort.subjects,
                            "created_at": mine[key].created_at,
                        }
                    )
            outcomes.append(accepted)
        if not look_up and any(isinstance(outcome, BaseException) for outcome in outcomes):
            raise _NotAllNewError  # a key stored before may be why: the stored rows decide
        if inserts and not self._sqlite:
            # psycopg sends an executemany's rows in one pipeline and keeps the one-row
            # statement's conversion cached; a multi-row statement has over 50 parameters,
            # which it parses again on every execute (+60k instructions per access, callgrind)
            conn.exec_driver_sql(self._insert_operations[1], list(map(_inserted_values, inserts)))
            inserts = []
        start = 0
        for size in _insert_pieces(len(inserts)):
            values = chain.from_iterable(map(_inserted_values, inserts[start : start + size]))
            conn.exec_driver_sql(self._insert_operations[size], tuple(values))
            start += size
        if leaves:
            conn.execute(sa_insert(LEAVES), leaves)
        reservations.write()
        self._depth.value = depth
        return outcomes

    # --- submitter side ----------------------------------------------------------------------

    async def pending(self, limit: int) -> list[PendingOp]:
        """The oldest PENDING operations, in the order they were stored."""

        m = self._mark
        query = (  # by the driver: a full round is ~2,000 rows of ~0.6 kB
            f"SELECT key, kind, payload, created_at, attempts, id FROM {OPS.name} "  # noqa: S608 - constant names
            f"WHERE status = 'pending' ORDER BY id LIMIT {m}"  # the pending index's own term
        )
        kinds = {k.value: k for k in OperationKind}

        def run(conn: Connection) -> list[PendingOp]:
            rows = conn.exec_driver_sql(query, (limit,))
            return [
                PendingOp(bytes(key), kinds[kind], bytes(payload), created_at, attempts, row_id)
                for key, kind, payload, created_at, attempts, row_id in rows
            ]

        return await self.read(run)

    async def payloads(self, keys: Sequence[bytes]) -> dict[bytes, PendingOp]:
        def run(conn: Connection) -> dict[bytes, PendingOp]:
            out: dict[bytes, PendingOp] = {}
            for chunk in _chunks(keys):
                query = select(
                    OPS.c.key, OPS.c.kind, OPS.c.payload, OPS.c.created_at, OPS.c.attempts
                ).where(OPS.c.key.in_(chunk))
                for r in conn.execute(query):
                    out[bytes(r.key)] = PendingOp(
                        bytes(r.key),
                        OperationKind(r.kind),
                        bytes(r.payload),
                        r.created_at,
                        r.attempts,
                    )
            return out

        return await self.read(run)

    async def record_submission(self, tx: StoredTx) -> None:
        """`record_submissions` of one transaction."""
        await self.record_submissions([tx])

    async def record_submissions(self, txs: Sequence[StoredTx]) -> None:
        """In one transaction: the signed txs, their operations SUBMITTED, the key's next
        nonce (past the last of them; `txs` are one sender's, at consecutive nonces).

        Raises RuntimeError (and changes nothing) when an operation is no longer PENDING.
        """
        if not txs:
            return

        def run(conn: Connection) -> None:
            conn.execute(
                sa_insert(TXS),
                [
                    {
                        "sender": tx.sender,
                        "nonce": tx.nonce,
                        "kind": tx.kind.value,
                        "tx_hash": tx.tx_hash,
                        "status": TxStatus.SENT,
                        "attempts": tx.attempts,
                        "created_at": tx.created_at,
                    }
                    for tx in txs
                ],
            )
            m = self._mark
            conn.exec_driver_sql(
                f"INSERT INTO {BODIES.name} (id, raw, keys) "  # noqa: S608 - constant names
                f"SELECT id, {m}, {m} FROM {TXS.name} WHERE tx_hash = {m}",
                [(tx.raw, b"".join(tx.keys), tx.tx_hash) for tx in txs],
            )
            submitted = (  # by the driver: one statement per transaction, keys bound as is
                f"UPDATE {OPS.name} SET status = {m}, tx_hash = {m}, nonce = {m}, sender = {m} "  # noqa: S608 - constant names
                f"WHERE status || '' = {m} AND "
            )
            for tx in txs:
                changed = 0
                # By row where known: the rows are found by their primary key instead of a
                # look-up of each random key in its index (submit ~12.5 -> ~9.5 us of SQLite's
                # CPU per operation, 256-record transactions, measured on the bare schema).
                by_row = len(tx.row_ids) == len(tx.keys)
                names = tx.row_ids if by_row else tx.keys
                column = "id IN " if by_row else "key IN "
                for chunk in _chunks(names):
                    result = conn.exec_driver_sql(
                        submitted + column + self._in(chunk),
                        (
                            OperationStatus.SUBMITTED.value,
                            tx.tx_hash,
                            tx.nonce,
                            tx.sender,
                            OperationStatus.PENDING.value,
                            *chunk,
                        ),
                    )
                    changed += result.rowcount
                if changed != len(tx.keys):
                    raise RuntimeError(f"{len(tx.keys) - changed} operations were not PENDING")
            _set_next_nonce(conn, txs[-1].sender, txs[-1].nonce + 1)

        # Before the confirmations queued: they came in pieces, each a turn behind decisions,
        # and a round waited behind a block's (126-468 ms at the batch bench's end, traced).
        await self.write(run, first=True)

    async def unmined(self, sender: str) -> list[StoredTx]:
        """Signed transactions of `sender` not known to be mined, by nonce."""

        def run(conn: Connection) -> list[StoredTx]:
            query = _STORED_TXS.where(
                TXS.c.sender == sender, TXS.c.status == TxStatus.SENT
            ).order_by(TXS.c.nonce)
            return [_stored_tx(r) for r in conn.execute(query)]

        return await self.read(run)

    async def recent_mined(self, sender: str, since: float, limit: int) -> list[MinedTx]:
        """`sender`'s transactions mined at or after `since` (wall clock), newest `limit`."""

        def run(conn: Connection) -> list[MinedTx]:
            query = (
                _STORED_TXS.where(
                    TXS.c.sender == sender,
                    TXS.c.status == TxStatus.MINED,
                    TXS.c.mined_at >= since,
                )
                .order_by(TXS.c.mined_at.desc())
                .limit(limit)
            )
            return [
                MinedTx(
                    _stored_tx(r),
                    int(r.block_number or 0),
                    None if r.block_hash is None else bytes(r.block_hash),
                    float(r.mined_at),
                )
                for r in conn.execute(query)
            ]

        return await self.read(run)

    async def transactions_at(self, sender: str, nonces: Sequence[int]) -> dict[int, StoredTxRow]:
        """The stored transaction of each of `sender`'s `nonces` that has one, with its status."""

        def run(conn: Connection) -> dict[int, StoredTxRow]:
            found: dict[int, StoredTxRow] = {}
            for chunk in _chunks(list(nonces)):
                query = _STORED_TXS.where(TXS.c.sender == sender, TXS.c.nonce.in_(chunk))
                for r in conn.execute(query):
                    found[int(r.nonce)] = StoredTxRow(_stored_tx(r), str(r.status))
            return found

        return await self.read(run)

    async def reopen(self, tx_hashes: Sequence[bytes]) -> list[bytes]:
        """Transactions whose confirmation left the chain are SENT again and their CONFIRMED
        operations SUBMITTED again (no block): the gateway stops reporting them confirmed.
        Returns the operation keys reopened."""

        def run(conn: Connection) -> list[bytes]:
            keys: list[bytes] = []
            for chunk in _chunks(list(tx_hashes)):
                keys.extend(_confirmed_in(conn, chunk))
                conn.execute(
                    update(TXS)
                    .where(TXS.c.tx_hash.in_(chunk))
                    .values(status=TxStatus.SENT, block_number=None, block_hash=None, mined_at=None)
                )
                # marked CONFIRMED on their own rows: found on chain, or stored before 0007
                confirmed = (OPS.c.tx_hash.in_(chunk), _status_is(OperationStatus.CONFIRMED))
                conn.execute(
                    update(OPS)
                    .where(*confirmed)
                    .values(
                        status=OperationStatus.SUBMITTED.value,
                        block_number=None,
                        confirmed_at=None,
                    )
                )
            return keys

        return await self.write(run)

    async def abandon(self, sender: str, next_nonce: int) -> tuple[list[bytes], int, list[bytes]]:
        """Forget `sender`'s transactions from `next_nonce` on (the chain lost them and they
        cannot be sent again as they were): their submitted or confirmed operations are PENDING
        again, the rows go, and the key's next nonce is `next_nonce`, in one transaction.
        Returns the transactions' hashes, the number of operations requeued and the keys of
        those among them that were CONFIRMED (their confirmation left the chain)."""

        def run(conn: Connection) -> tuple[list[bytes], int, list[bytes]]:
            later = (TXS.c.sender == sender, TXS.c.nonce >= next_nonce)
            hashes = [bytes(r.tx_hash) for r in conn.execute(select(TXS.c.tx_hash).where(*later))]
            requeued = 0
            confirmed: list[bytes] = []
            for chunk in _chunks(hashes):
                confirmed.extend(_confirmed_in(conn, chunk))
                requeued += conn.execute(
                    update(OPS)
                    .where(
                        OPS.c.tx_hash.in_(chunk),
                        _status_is(OperationStatus.SUBMITTED, OperationStatus.CONFIRMED),
                    )
                    .values(
                        status=OperationStatus.PENDING.value,
                        tx_hash=None,
                        nonce=None,
                        sender=None,
                        block_number=None,
                        confirmed_at=None,
                    )
                ).rowcount
            conn.execute(delete(BODIES).where(BODIES.c.id.in_(select(TXS.c.id).where(*later))))
            conn.execute(delete(TXS).where(*later))
            _set_next_nonce(conn, sender, next_nonce)
            return hashes, requeued, confirmed

        hashes, requeued, confirmed = await self.write(run)
        if requeued:
            self.pending_changed()
        return hashes, requeued, confirmed

    async def mark_resent(self, tx_hash: bytes, attempts: int) -> None:
        def run(conn: Connection) -> None:
            conn.execute(update(TXS).where(TXS.c.tx_hash == tx_hash).values(attempts=attempts))

        await self.write(run)

    async def confirm(
        self,
        mined: Sequence[tuple[bytes, int, Sequence[bytes]]],
        block_hashes: Mapping[bytes, bytes] | None = None,
    ) -> None:
        """Mark each mined (tx hash, block, keys) transaction mined, which makes its SUBMITTED
        operations CONFIRMED (`view_of`), and wake whoever waits for them (`block_hashes`: tx
        hash -> the hash of the block it is in, kept so the confirmation can be re-checked).
        The transactions are marked in pieces of up to `CONFIRM_PIECE`, decisions committed
        between them; a crash between pieces leaves the rest SENT, and a restarted submitter
        asks for their receipts."""
        now = time.time()
        hashes = block_hashes or {}
        pieces = [mined[i : i + CONFIRM_PIECE] for i in range(0, len(mined), CONFIRM_PIECE)]
        m = self._mark
        # By the driver, as the insert: built and compiled by SQLAlchemy Core, the statement
        # costs more of the writer's CPU than SQLite's update.
        mined_at = (
            f"UPDATE {TXS.name} SET status = {m}, block_number = {m}, block_hash = {m}, "  # noqa: S608 - constant names
            f"mined_at = {m} WHERE tx_hash = {m}"
        )

        def run(conn: Connection, piece: Sequence[tuple[bytes, int, Sequence[bytes]]]) -> None:
            conn.exec_driver_sql(
                mined_at,
                [
                    (TxStatus.MINED, block, hashes.get(tx_hash), now, tx_hash)
                    for tx_hash, block, _ in piece
                ],
            )

        async def confirm_piece(piece: Sequence[tuple[bytes, int, Sequence[bytes]]]) -> None:
            await self.write(functools.partial(run, piece=piece))
            self._notify(key for _, _, keys in piece for key in keys)

        # queued together: under a load that keeps decisions queued they wait `write_defer_s`
        # once, not once each
        await asyncio.gather(*(confirm_piece(piece) for piece in pieces))

    async def settle_reverted(
        self,
        tx_hash: bytes,
        block: int,
        *,
        failed: dict[bytes, str],
        found: dict[bytes, tuple[bytes, int]],
        requeue: Sequence[bytes],
        count_attempt: bool = True,
    ) -> None:
        """After a reverted transaction: FAILED ops with their error, ops `found` already on
        chain CONFIRMED at (tx hash, block), the rest PENDING again for another batch
        (`count_attempt`: the revert is unexplained and counts against them)."""
        now = time.time()

        def run(conn: Connection) -> None:
            conn.execute(
                update(TXS)
                .where(TXS.c.tx_hash == tx_hash)
                .values(status=TxStatus.REVERTED, block_number=block)
            )
            _give_back(conn, list(failed))
            for key, error in failed.items():
                conn.execute(
                    update(OPS)
                    .where(OPS.c.key == key)
                    .values(
                        status=OperationStatus.FAILED.value,
                        error=error[:200],
                        confirmed_at=now,
                        attempts=OPS.c.attempts + 1,
                    )
                )
            for key, (found_tx, found_block) in found.items():
                conn.execute(
                    update(OPS)
                    .where(OPS.c.key == key)
                    .values(
                        status=OperationStatus.CONFIRMED.value,
                        tx_hash=found_tx,
                        block_number=found_block,
                        confirmed_at=now,
                    )
                )
            for chunk in _chunks(list(requeue)):
                conn.execute(
                    update(OPS)
                    .where(OPS.c.key.in_(chunk))
                    .values(
                        status=OperationStatus.PENDING.value,
                        tx_hash=None,
                        nonce=None,
                        sender=None,
                        attempts=OPS.c.attempts + (1 if count_attempt else 0),
                    )
                )

        await self.write(run)
        self._notify([*failed, *found])
        if requeue:
            self.pending_changed()

    async def next_nonce(self, sender: str) -> int | None:
        def run(conn: Connection) -> int | None:
            value = conn.execute(
                select(NONCES.c.next_nonce).where(NONCES.c.sender == sender)
            ).scalar_one_or_none()
            return int(value) if value is not None else None

        return await self.read(run)

    async def set_next_nonce(self, sender: str, value: int) -> None:
        await self.write(lambda conn: _set_next_nonce(conn, sender, value))

    # --- notification ------------------------------------------------------------------------

    def _notify(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            for waiter in self._waiters.pop(key, ()):
                if not waiter.done():
                    waiter.set_result(None)


def _confirmed_in(conn: Connection, tx_hashes: Sequence[bytes]) -> list[bytes]:
    """The keys of the operations CONFIRMED in `tx_hashes`: SUBMITTED in one that is mined,
    or marked CONFIRMED on their own row."""
    query = (
        select(OPS.c.key)
        .select_from(_VIEWED)
        .where(
            OPS.c.tx_hash.in_(tx_hashes),
            _status_is(OperationStatus.CONFIRMED)
            | (_status_is(OperationStatus.SUBMITTED) & (TXS.c.status == TxStatus.MINED)),
        )
    )
    return [bytes(r.key) for r in conn.execute(query)]


def _answer_later(item: _Later, written: tuple[bool, Any]) -> None:
    """A submitter's write answered: its result, or its error."""
    if item.future.done():
        return
    ok, value = written
    if ok:
        item.future.set_result(value)
    else:
        item.future.set_exception(value)


def _no_autocheckpoint(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")


def _give_back(conn: Connection, keys: Sequence[bytes]) -> None:
    """Accesses about to be FAILED hold their quota unit and code no longer (run before they
    are marked, so an access failed twice gives back once)."""
    counts: dict[bytes, int] = {}
    for chunk in _chunks(keys):
        query = select(OPS.c.agreement_id).where(
            OPS.c.key.in_(chunk),
            OPS.c.kind == OperationKind.ACCESS.value,
            OPS.c.decision == int(Decision.GRANTED),
            OPS.c.status != OperationStatus.FAILED.value,
        )
        for row in conn.execute(query):
            agreement = bytes(row.agreement_id)
            counts[agreement] = counts.get(agreement, 0) + 1
        conn.execute(delete(CODES).where(CODES.c.access_id.in_(chunk)))
    for agreement, count in counts.items():
        conn.execute(
            update(QUOTA).where(QUOTA.c.agreement_id == agreement).values(used=QUOTA.c.used - count)
        )


class _Reservations:
    """The quota units and codes one group commit reserves, in its own transaction.

    The counted rows of every agreement the group grants on are read first, in key order and
    locked (`FOR UPDATE` on PostgreSQL; SQLite's write lock already serializes writers), so
    workers in other processes reserve one after the other."""

    def __init__(
        self,
        conn: Connection,
        jobs: Sequence[_Job],
        known: Mapping[bytes, OperationView],
        *,
        postgres: bool,
        mark: str = "?",
    ) -> None:
        self.conn = conn
        self.postgres = postgres
        # The counted row is read and updated by the driver, as the insert: through SQLAlchemy
        # Core these two statements were ~60% of a one-decision group commit's CPU on the
        # writer thread (cache key, compile lookup, result metadata each time), and at a few
        # hundred single requests a second most commits hold one decision.
        self._select_used = (  # constant names; values go as parameters
            f"SELECT used FROM {QUOTA.name} WHERE agreement_id = {mark}"  # noqa: S608
            + (" FOR UPDATE" if postgres else "")
        )
        self._update_used = f"UPDATE {QUOTA.name} SET used = {mark} WHERE agreement_id = {mark}"  # noqa: S608
        self.used: dict[bytes, int] = {}
        self.changed: set[bytes] = set()
        self.codes: dict[bytes, bytes] = {}
        """Codes reserved by this group: code -> access id."""
        self.taken: set[bytes] = set()
        agreements: dict[bytes, int] = {}
        codes: set[bytes] = set()
        for job in jobs:
            for key, reserve in job.reserves.items():
                if key in known:
                    continue
                if reserve.quota is not None:
                    agreements.setdefault(reserve.agreement_id, reserve.chain_used)
                if reserve.code is not None:
                    codes.add(reserve.code)
        for agreement in sorted(agreements):
            self.used[agreement] = self._counted(agreement, agreements[agreement])
        for chunk in _chunks(sorted(codes)):
            query = select(CODES.c.code).where(CODES.c.code.in_(chunk))
            self.taken.update(bytes(r.code) for r in conn.execute(query))

    def _counted(self, agreement: bytes, chain_used: int) -> int:
        value = self.conn.exec_driver_sql(self._select_used, (agreement,)).scalar_one_or_none()
        if value is not None:
            return int(value)
        # First grant counted here: the chain's count plus grants stored and not yet on chain
        # (one confirmed since the chain was read counts twice, which only errs to denying).
        open_grants = count_open(
            self.conn,
            OPS.c.kind == OperationKind.ACCESS.value,
            OPS.c.agreement_id == agreement,
            OPS.c.decision == int(Decision.GRANTED),
        )
        insert = (pg_insert if self.postgres else sqlite_insert)(QUOTA)
        self.conn.execute(
            insert.values(
                agreement_id=agreement, used=chain_used + int(open_grants)
            ).on_conflict_do_nothing()
        )
        return int(self.conn.exec_driver_sql(self._select_used, (agreement,)).scalar_one())

    def take(self, job: _Job, new: Mapping[bytes, OperationView]) -> ReservationError | None:
        """Reserve what the new GRANTED rows of `job` need, all or nothing."""
        used = dict(self.used)
        codes: dict[bytes, bytes] = {}
        over: set[bytes] = set()
        held: set[bytes] = set()
        for key in new:
            reserve = job.reserves.get(key)
            if reserve is None:
                continue
            if reserve.code is not None:
                if (
                    reserve.code in self.taken
                    or reserve.code in self.codes
                    or reserve.code in codes
                ):
                    held.add(key)
                    continue
                codes[reserve.code] = key
            if reserve.quota is not None:
                agreement = reserve.agreement_id
                if used[agreement] >= reserve.quota:
                    over.add(key)
                    continue
                used[agreement] += 1
        if over or held:
            return ReservationError(over, held)
        self.changed.update(a for a, n in used.items() if n != self.used[a])
        self.used = used
        self.codes.update(codes)
        return None

    def write(self) -> None:
        if self.changed:
            self.conn.exec_driver_sql(
                self._update_used, [(self.used[a], a) for a in sorted(self.changed)]
            )
        if self.codes:
            self.conn.execute(
                sa_insert(CODES), [{"code": c, "access_id": k} for c, k in self.codes.items()]
            )


def _set_next_nonce(conn: Connection, sender: str, value: int) -> None:
    changed = conn.execute(
        update(NONCES).where(NONCES.c.sender == sender).values(next_nonce=value)
    ).rowcount
    if changed == 0:
        conn.execute(sa_insert(NONCES).values(sender=sender, next_nonce=value))
