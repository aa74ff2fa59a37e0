"""The SQLite outbox: durability settings, idempotency, conflicts, the depth bound, group
commit, waiting, and the submitter's bookkeeping (all on a real SQLite file)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from eth_abi.abi import decode, encode
from eth_hash.auto import keccak
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

from dul.domain import Decision, DenyReason
from ledger_gateway.errors import ConflictError, UnavailableError
from ledger_gateway.migrations import VERSION_TABLE, migrate
from ledger_gateway.migrations import replay as replay_to
from ledger_gateway.outbox import (
    CohortLeaves,
    NewAccess,
    NewRelease,
    OperationKind,
    OperationStatus,
    ReservationError,
)
from ledger_gateway.store import OPS, OutboxSettings, PendingOp, SqlOutbox, StoredTx, make_engine
from ledger_gateway.submitter import (
    ACCESS_RECORD_TYPE,
    RECORD_ACCESSES,
    RECORD_SIZE,
    record_accesses_calldata,
)

T = TypeVar("T")
SENDER = "0x" + "ab" * 20


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


def new_access(n: int, *, body: bytes = b"a", decision: Decision = Decision.GRANTED) -> NewAccess:
    return NewAccess(
        request_id=keccak(n.to_bytes(8, "big")),
        body_hash=keccak(body),
        org=b"hospital".ljust(32, b"\0"),
        agreement_id=keccak(b"agreement"),
        decision=decision,
        reasons=() if decision is Decision.GRANTED else (DenyReason.TIER_ABOVE_CEILING,),
        record=n.to_bytes(RECORD_SIZE, "big"),
    )


async def opened(path: Path, **settings: Any) -> SqlOutbox:
    url = f"sqlite:///{path / 'outbox.db'}"
    migrate(url)
    outbox = SqlOutbox(make_engine(url), OutboxSettings(**settings))
    await outbox.start()
    return outbox


def test_sqlite_runs_in_wal_with_full_sync(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, int]:
        outbox = await opened(tmp_path)
        with outbox.engine.connect() as conn:
            mode = str(conn.execute(text("PRAGMA journal_mode")).scalar_one())
            sync = int(conn.execute(text("PRAGMA synchronous")).scalar_one())
        await outbox.close()
        return mode, sync

    assert run(scenario) == ("wal", 2)  # 2 = FULL: every commit is fsync'd


def test_migrations_create_exactly_the_tables_and_run_twice(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    migrate(url)
    migrate(url)
    engine = make_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "include_name": lambda name, kind, _: (
                    kind != "table"
                    or name == "cohort_leaves"
                    or ((name or "").startswith("gateway_") and name != VERSION_TABLE)
                ),
            },
        )
        assert compare_metadata(context, OPS.metadata) == []


def test_an_access_is_stored_and_read_back(tmp_path: Path) -> None:
    denied = new_access(1, decision=Decision.DENIED)

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        [accepted] = await outbox.add_accesses([denied])
        assert accepted.created
        view = await outbox.get(denied.request_id)
        assert view == accepted.view
        assert view.kind is OperationKind.ACCESS
        assert view.status is OperationStatus.PENDING
        assert view.reasons == (DenyReason.TIER_ABOVE_CEILING,)
        assert view.payload == denied.record
        assert view.body_hash == denied.body_hash
        assert await outbox.get(b"\1" * 32) is None
        assert await outbox.depth() == 1
        await outbox.close()

    run(scenario)


def test_the_same_id_and_body_again_answers_the_stored_view(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = await opened(tmp_path)
        [first] = await outbox.add_accesses([new_access(1)])
        [again, fresh] = await outbox.add_accesses([new_access(1), new_access(2)])
        assert not again.created
        assert again.view == first.view
        assert fresh.created
        assert await outbox.depth() == 2
        await outbox.close()

    run(scenario)


def test_the_same_id_with_another_body_conflicts_and_stores_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = await opened(tmp_path)
        await outbox.add_accesses([new_access(1)])
        with pytest.raises(ConflictError) as caught:
            await outbox.add_accesses([new_access(2), new_access(1, body=b"other")])
        assert caught.value.code == "request_id_conflict"
        assert await outbox.get(new_access(2).request_id) is None
        assert await outbox.depth() == 1
        await outbox.close()

    run(scenario)


def test_a_key_twice_in_one_call_is_stored_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = await opened(tmp_path)
        first, second = await outbox.add_accesses([new_access(1), new_access(1)])
        assert first.created
        assert not second.created
        assert await outbox.depth() == 1
        await outbox.close()

    run(scenario)


def test_a_large_call_is_stored_by_a_few_multi_row_inserts_in_call_order(
    tmp_path: Path,
) -> None:
    accesses = [new_access(n) for n in range(300)]

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        inserts: list[int] = []

        def count(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.startswith("INSERT INTO gateway_operations"):
                inserts.append(len(params) // 11)  # 11 values a row

        event.listen(outbox.engine, "before_cursor_execute", count)
        accepted = await outbox.add_accesses([*accesses, accesses[5]])
        assert [a.created for a in accepted] == [True] * 300 + [False]
        assert inserts == [128, 128, 32, 8, 4]  # one statement per piece, not per row
        pending = await outbox.pending(1_000)
        assert [p.key for p in pending] == [a.request_id for a in accesses]
        for access, stored in list(zip(accesses, accepted, strict=False))[::29]:
            assert await outbox.get(access.request_id) == stored.view
        await outbox.close()

    run(scenario)


def test_new_keys_are_not_read_back_and_replays_still_answer_their_stored_views(
    tmp_path: Path,
) -> None:
    """A group commit takes its keys for new (the key's unique index refuses one stored
    before); a replay among them, refused by the index or by a reservation it seemed to need,
    sends the group again with its keys looked up, and the next groups look theirs up too."""
    grant = new_access(1)._replace(quota=1, chain_used=0)  # its agreement's only unit

    async def scenario() -> None:
        def reads_back(outbox: SqlOutbox) -> list[str]:
            selects: list[str] = []

            @event.listens_for(outbox.engine, "before_cursor_execute")
            def capture(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
                if sql.startswith("SELECT o.*") and "WHERE o.key IN" in sql:
                    selects.append(sql)

            return selects

        outbox = await opened(tmp_path)
        selects = reads_back(outbox)
        stored = await outbox.add_accesses([grant, new_access(2)])
        assert [a.created for a in stored] == [True, True]
        assert selects == []
        await outbox.close()
        # the grant's replay would be over quota, new_access(2)'s is refused by the index
        for replay, previous, n in ((grant, stored[0], 3), (new_access(2), stored[1], 5)):
            outbox = await opened(tmp_path)  # a restarted worker: no replay seen yet
            selects = reads_back(outbox)
            [again, fresh] = await outbox.add_accesses([replay, new_access(n)])
            assert (again.created, fresh.created) == (False, True)
            assert again.view == previous.view
            assert len(selects) == 1
            await outbox.add_accesses([new_access(n + 1)])
            assert len(selects) == 2  # replays come in runs: the next group looks up first
            await outbox.close()
        assert await outbox.quota_used(grant.agreement_id) == 1
        assert await outbox.depth() == 6

    run(scenario)


def test_releases_are_operations_of_their_own_kind(tmp_path: Path) -> None:
    release = NewRelease(
        release_key=keccak(b"release"),
        body_hash=keccak(b"body"),
        org=b"hospital".ljust(32, b"\0"),
        access_id=keccak(b"access"),
        agreement_id=keccak(b"agreement"),
        call=b"\1" * 160,
    )

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        accepted = await outbox.add_release(release)
        assert accepted.created
        assert accepted.view.kind is OperationKind.RELEASE
        assert accepted.view.decision is None
        assert not (await outbox.add_release(release)).created
        [pending] = await outbox.pending(10)
        assert pending.kind is OperationKind.RELEASE
        assert pending.payload == release.call
        await outbox.close()

    run(scenario)


def test_concurrent_callers_share_one_commit(tmp_path: Path) -> None:
    async def scenario() -> int:
        outbox = await opened(tmp_path)
        commits = 0

        def count(_conn: Any) -> None:
            nonlocal commits
            commits += 1

        event.listen(outbox.engine, "commit", count)
        results = await asyncio.gather(*(outbox.add_accesses([new_access(i)]) for i in range(64)))
        assert all(r[0].created for r in results)
        assert await outbox.depth() == 64
        await outbox.close()
        return commits

    commits = run(scenario)
    assert 1 <= commits < 16  # 64 callers, far fewer fsyncs


def test_a_full_outbox_refuses_new_work_with_retry_after(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = await opened(tmp_path, max_depth=5)
        await outbox.add_accesses([new_access(i) for i in range(5)])
        with pytest.raises(UnavailableError) as caught:
            await outbox.add_accesses([new_access(99)])
        assert caught.value.code == "outbox_full"
        assert caught.value.retry_after >= 1
        # a replay of something stored still answers
        [again] = await outbox.add_accesses([new_access(3)])
        assert not again.created
        await outbox.close()

    run(scenario)


def submitted_tx(keys: tuple[bytes, ...], nonce: int = 7) -> StoredTx:
    return StoredTx(
        sender=SENDER,
        nonce=nonce,
        kind=OperationKind.ACCESS,
        raw=b"raw" + bytes([nonce]),
        tx_hash=keccak(b"tx" + bytes([nonce])),
        keys=keys,
        attempts=1,
        created_at=time.time(),
    )


def test_a_submission_stores_tx_statuses_and_nonce_in_one_transaction(tmp_path: Path) -> None:
    keys = tuple(new_access(i).request_id for i in range(3))

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        await outbox.add_accesses([new_access(i) for i in range(3)])
        tx = submitted_tx(keys)
        await outbox.record_submission(tx)
        assert await outbox.next_nonce(SENDER) == 8
        assert await outbox.unmined(SENDER) == [tx]
        views = await outbox.get_many(keys)
        assert {v.status for v in views.values()} == {OperationStatus.SUBMITTED}
        assert await outbox.pending(10) == []
        # the same operations cannot ride a second transaction: nothing of it is kept
        with pytest.raises(RuntimeError):
            await outbox.record_submission(submitted_tx(keys, nonce=8))
        assert await outbox.next_nonce(SENDER) == 8
        assert len(await outbox.unmined(SENDER)) == 1
        await outbox.close()

    run(scenario)


def test_a_round_of_submissions_is_stored_all_or_nothing(tmp_path: Path) -> None:
    keys = tuple(new_access(i).request_id for i in range(6))

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        await outbox.add_accesses([new_access(i) for i in range(6)])
        first, second = submitted_tx(keys[:3], nonce=7), submitted_tx(keys[3:5], nonce=8)
        # one operation of the round is no longer pending: nothing of the round is kept
        stale = submitted_tx(keys[:1], nonce=9)
        with pytest.raises(RuntimeError):
            await outbox.record_submissions([first, second, stale])
        assert await outbox.next_nonce(SENDER) is None
        assert await outbox.unmined(SENDER) == []
        assert len(await outbox.pending(10)) == 6
        await outbox.record_submissions([first, second])
        assert await outbox.next_nonce(SENDER) == 9  # past the last of the round
        assert await outbox.unmined(SENDER) == [first, second]
        views = await outbox.get_many(keys)
        assert [views[k].tx_hash for k in keys] == [first.tx_hash] * 3 + [second.tx_hash] * 2 + [
            None
        ]
        assert [op.key for op in await outbox.pending(10)] == [keys[5]]
        await outbox.close()

    run(scenario)


def test_a_round_read_from_pending_is_marked_by_its_rows(tmp_path: Path) -> None:
    """The submitter's transactions carry the rows `pending` read: the operations are marked
    SUBMITTED by row, the same ones and with the same all-or-nothing rule as by key."""
    keys = tuple(new_access(i).request_id for i in range(6))
    statements: list[str] = []

    async def scenario() -> None:
        outbox = await opened(tmp_path)

        @event.listens_for(outbox.engine, "before_cursor_execute")
        def capture(_c: Any, _cur: Any, sql: str, _p: Any, _ctx: Any, _many: bool) -> None:
            statements.append(sql)

        await outbox.add_accesses([new_access(i) for i in range(6)])
        ops = await outbox.pending(10)
        assert [op.key for op in ops] == list(keys)
        assert all(op.row_id is not None for op in ops)

        def tx(part: list[PendingOp], nonce: int) -> StoredTx:
            return replace(
                submitted_tx(tuple(op.key for op in part), nonce=nonce),
                row_ids=tuple(op.row_id for op in part if op.row_id is not None),
            )

        first, second = tx(ops[:3], 7), tx(ops[3:5], 8)
        with pytest.raises(RuntimeError):  # one of them twice: nothing of the round is kept
            await outbox.record_submissions([first, second, tx(ops[:1], 9)])
        assert len(await outbox.pending(10)) == 6
        await outbox.record_submissions([first, second])
        assert [op.key for op in await outbox.pending(10)] == [keys[5]]
        views = await outbox.get_many(keys)
        assert [views[k].tx_hash for k in keys[:5]] == [first.tx_hash] * 3 + [second.tx_hash] * 2
        assert {views[k].status for k in keys[:5]} == {OperationStatus.SUBMITTED}
        await outbox.close()

    run(scenario)
    marked = [sql for sql in statements if sql.startswith("UPDATE gateway_operations SET status")]
    assert marked
    assert all("id IN" in sql and "key IN" not in sql for sql in marked)


def test_wait_wakes_when_the_operation_is_confirmed(tmp_path: Path) -> None:
    key = new_access(1).request_id

    async def scenario() -> None:
        outbox = await opened(tmp_path, wait_recheck_s=30)
        await outbox.add_accesses([new_access(1)])
        pending = await outbox.wait(key, timeout=0.05)
        assert pending is not None
        assert pending.status is OperationStatus.PENDING
        tx = submitted_tx((key,))
        await outbox.record_submission(tx)

        async def confirm_soon() -> None:
            await asyncio.sleep(0.1)
            await outbox.confirm([(tx.tx_hash, 42, tx.keys)])

        started = time.monotonic()
        view, _ = await asyncio.gather(outbox.wait(key, timeout=10), confirm_soon())
        assert time.monotonic() - started < 2  # woken, not re-polled after 30 s
        assert view is not None
        assert view.status is OperationStatus.CONFIRMED
        assert view.block_number == 42
        assert view.tx_hash == tx.tx_hash
        assert view.confirmed_at is not None
        assert await outbox.unmined(SENDER) == []
        assert await outbox.depth() == 0
        await outbox.close()

    run(scenario)


def test_after_a_revert_bad_ops_fail_and_the_rest_is_pending_again(tmp_path: Path) -> None:
    keys = tuple(new_access(i).request_id for i in range(4))

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        await outbox.add_accesses([new_access(i) for i in range(4)])
        tx = submitted_tx(keys)
        await outbox.record_submission(tx)
        await outbox.settle_reverted(
            tx.tx_hash,
            9,
            failed={keys[1]: "AccessLogQuotaExhausted"},
            found={keys[2]: (b"\2" * 32, 5)},
            requeue=[keys[0], keys[3]],
            count_attempt=False,
        )
        views = await outbox.get_many(keys)
        assert views[keys[1]].status is OperationStatus.FAILED
        assert views[keys[1]].error == "AccessLogQuotaExhausted"
        assert views[keys[2]].status is OperationStatus.CONFIRMED
        assert views[keys[2]].block_number == 5
        assert [op.key for op in await outbox.pending(10)] == [keys[0], keys[3]]
        assert all(op.attempts == 0 for op in await outbox.pending(10))
        assert views[keys[0]].tx_hash is None
        assert await outbox.unmined(SENDER) == []
        await outbox.close()

    run(scenario)


def test_a_cohort_is_stored_with_its_access_and_only_with_it(tmp_path: Path) -> None:
    refs = [bytes([i]) * 32 for i in range(3)]
    cohort = CohortLeaves(keccak(b"root"), 3, b"".join(refs))
    with_cohort = new_access(1)._replace(cohort=cohort)

    async def scenario() -> None:
        outbox = await opened(tmp_path, max_depth=2)
        [first] = await outbox.add_accesses([with_cohort])
        assert first.created
        assert await outbox.cohort(with_cohort.request_id) == cohort
        assert (await outbox.cohort(with_cohort.request_id)).refs() == refs  # type: ignore[union-attr]
        other = with_cohort._replace(body_hash=keccak(b"other"), cohort=CohortLeaves(
            keccak(b"root 2"), 1, refs[0]))  # fmt: skip
        with pytest.raises(ConflictError):
            await outbox.add_accesses([other])
        assert await outbox.cohort(with_cohort.request_id) == cohort  # the first one stays
        # a refused write (outbox full) stores no leaves either
        fill = new_access(2)._replace(cohort=cohort)
        extra = new_access(3)._replace(cohort=cohort)
        await outbox.add_accesses([fill])
        with pytest.raises(UnavailableError):
            await outbox.add_accesses([extra])
        assert await outbox.cohort(extra.request_id) is None
        with outbox.engine.connect() as conn:
            row = conn.execute(
                text("SELECT root, size, leaves FROM cohort_leaves WHERE access_id = :id"),
                {"id": with_cohort.request_id},
            ).one()
        assert (bytes(row.root), row.size, bytes(row.leaves)) == (cohort.root, 3, b"".join(refs))
        await outbox.close()

    run(scenario)


def test_grants_reserve_their_quota_unit_and_code_in_the_storing_transaction(
    tmp_path: Path,
) -> None:
    code = keccak(b"code")
    agreement = new_access(0).agreement_id

    def grant(n: int, *, redeems: bool = False) -> NewAccess:
        return new_access(n)._replace(quota=3, chain_used=1, code=code if redeems else None)

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        denied = new_access(9, decision=Decision.DENIED)
        await outbox.add_accesses([grant(1, redeems=True), denied])  # chain 1 + 1 stored
        assert await outbox.quota_used(agreement) == 2
        assert await outbox.code_holder(code) == grant(1).request_id
        with pytest.raises(ReservationError) as refused:  # the code is held: nothing stored
            await outbox.add_accesses([grant(2), grant(3, redeems=True)])
        assert (refused.value.quota, refused.value.codes) == (set(), {grant(3).request_id})
        assert await outbox.get(grant(2).request_id) is None
        await outbox.add_accesses([grant(2)])  # the last unit
        with pytest.raises(ReservationError) as refused:
            await outbox.add_accesses([grant(4)])
        assert refused.value.quota == {grant(4).request_id}
        # a replay reserves nothing again
        [again] = await outbox.add_accesses([grant(2)])
        assert not again.created
        assert await outbox.quota_used(agreement) == 3
        # the chain refuses the redemption: its unit and its code are given back, once
        tx = keccak(b"tx")
        await outbox.record_submission(
            StoredTx(SENDER, 0, OperationKind.ACCESS, b"raw", tx, (grant(1).request_id,), 1, 0.0)
        )
        for _ in range(2):
            await outbox.settle_reverted(
                tx, 5, failed={grant(1).request_id: "AccessLogQuota"}, found={}, requeue=[]
            )
        assert await outbox.quota_used(agreement) == 2
        assert await outbox.code_holder(code) is None
        await outbox.add_accesses([grant(4)])
        assert await outbox.quota_used(agreement) == 3
        await outbox.close()

    run(scenario)


def test_a_new_agreement_is_counted_from_the_chain_and_the_open_grants(tmp_path: Path) -> None:
    async def scenario() -> None:
        outbox = await opened(tmp_path)
        agreement = new_access(0).agreement_id
        await outbox.add_accesses([new_access(1), new_access(2)])  # stored before counting
        await outbox.add_accesses([new_access(3)._replace(quota=10, chain_used=5)])
        assert await outbox.quota_used(agreement) == 5 + 2 + 1
        await outbox.close()

    run(scenario)


def test_batch_calldata_is_the_abi_encoding_of_the_records() -> None:
    records = [
        encode(
            [ACCESS_RECORD_TYPE],
            [
                (
                    keccak(bytes([i])),
                    keccak(b"a"),
                    keccak(b"d"),
                    "0x" + "11" * 20,
                    1,
                    0,
                    2,
                    0,
                    6,
                    keccak(b"q"),
                    bytes(32),
                    0,
                    bytes(32),
                    2**40,
                    keccak(b"r"),
                    keccak(b"s"),
                    27,
                )
            ],
        )
        for i in range(3)
    ]
    assert all(len(r) == RECORD_SIZE for r in records)
    tuples = [decode([ACCESS_RECORD_TYPE], r)[0] for r in records]
    expected = RECORD_ACCESSES + encode([ACCESS_RECORD_TYPE + "[]"], [tuples])
    assert record_accesses_calldata(records) == expected


def test_the_wal_is_checkpointed_off_the_commit_path(tmp_path: Path) -> None:
    """Commits leave the WAL to the checkpointer (no checkpoint inside a commit, however
    large the WAL grows); the checkpointer copies all of it into the database."""

    async def scenario() -> None:
        outbox = await opened(tmp_path, checkpoint_interval_s=3_600)  # only when asked here
        leaves = CohortLeaves(bytes(32), 40_000, bytes(32 * 40_000))  # ~1.3 MB each
        for n in range(4):  # past the 1,000-page (4 MB) automatic threshold
            await outbox.add_accesses([new_access(n)._replace(cohort=leaves)])
        wal = tmp_path / "outbox.db-wal"
        assert wal.stat().st_size > 4_000_000
        busy, frames, done = await asyncio.to_thread(outbox.checkpoint)
        assert (busy, done) == (0, frames)
        assert frames > 1_000
        await outbox.close()

    run(scenario)


def test_updates_by_key_or_transaction_find_their_rows_by_that_index(tmp_path: Path) -> None:
    """No statement that names operations by key or transaction hash walks the status index:
    SQLite's planner, which has no statistics here, took it for them and visited every row of
    the status (the whole PENDING backlog for each transaction marked SUBMITTED; every
    CONFIRMED row ever stored for a re-opened confirmation). Each such statement the outbox
    runs through submission, confirmation, a revert, a vanished confirmation and an abandoned
    nonce is explained by SQLite itself."""
    keys = tuple(new_access(i).request_id for i in range(8))
    statements: list[tuple[str, Any]] = []

    async def scenario() -> None:
        outbox = await opened(tmp_path)

        @event.listens_for(outbox.engine, "before_cursor_execute")
        def capture(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
            if not many:
                statements.append((sql, params))

        await outbox.add_accesses([new_access(i) for i in range(8)])
        first, second = submitted_tx(keys[:4], nonce=7), submitted_tx(keys[4:6], nonce=8)
        await outbox.record_submissions([first, second])
        await outbox.confirm([(first.tx_hash, 40, first.keys)])
        await outbox.reopen([first.tx_hash])
        await outbox.settle_reverted(
            second.tx_hash, 41, failed={keys[4]: "X"}, found={}, requeue=[keys[5]]
        )
        await outbox.abandon(SENDER, 7)
        await outbox.close()

    run(scenario)
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    by_key_or_hash = [
        (sql, params)
        for sql, params in statements
        if "gateway_operations" in sql
        and "status" in (where := sql.split("WHERE", 1)[-1])
        and ("key IN" in where or "key =" in where or "tx_hash" in where)
    ]
    assert any(sql.startswith("UPDATE") and "key IN" in sql for sql, _ in by_key_or_hash)
    kinds = {sql.split()[0] for sql, _ in by_key_or_hash}
    assert {"UPDATE", "SELECT"} <= kinds
    with engine.connect() as conn:
        for sql, params in by_key_or_hash:
            explained = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in explained)
            assert "ix_gateway_operations_pending" not in plan, (sql, plan)
            if "tx_hash" in sql.split("WHERE", 1)[-1]:  # the partial index serves a bound hash
                assert "USING INDEX ix_gateway_operations_tx_hash" in plan, (sql, plan)
    assert any("tx_hash" in sql.split("WHERE", 1)[-1] for sql, _ in by_key_or_hash)
    engine.dispose()


def test_the_open_operations_are_read_through_the_pending_and_transaction_indexes(
    tmp_path: Path,
) -> None:
    """The pending index holds PENDING operations only (revision 0007); the statements that
    read open operations (PENDING in id order, the open count, an agreement's open grants)
    spell its condition, so SQLite takes it, and count the SUBMITTED ones through the
    transactions still sent (a confirmation marks only its transaction)."""
    statements: list[tuple[str, Any]] = []

    async def scenario() -> None:
        outbox = await opened(tmp_path)

        @event.listens_for(outbox.engine, "before_cursor_execute")
        def capture(_c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
            if not many and "gateway_operations" in sql and sql.startswith("SELECT"):
                statements.append((sql, params))

        grant = new_access(1)._replace(quota=10, chain_used=0)
        await outbox.add_accesses([grant, new_access(2), new_access(3)])
        pending = await outbox.pending(10)
        assert [op.key for op in pending][:2] == [grant.request_id, new_access(2).request_id]
        assert await outbox.depth() == 3
        tx = submitted_tx((grant.request_id,))
        sent = submitted_tx((new_access(3).request_id,), nonce=8)
        await outbox.record_submissions([tx, sent])
        assert await outbox.depth() == 3  # submitted, not confirmed: still open
        await outbox.confirm([(tx.tx_hash, 9, tx.keys)])
        assert await outbox.depth() == 2
        grant_again = new_access(4)._replace(quota=10, chain_used=0, agreement_id=keccak(b"b"))
        await outbox.add_accesses([grant_again])  # a second agreement: its open grants counted
        await outbox.close()

    run(scenario)
    engine = make_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    open_reads = [(sql, p) for sql, p in statements if "status = 'pending'" in sql]
    assert any("ORDER BY id" in sql for sql, _ in open_reads)
    assert any("count(" in sql and "kind" in sql for sql, _ in open_reads)  # open grants
    assert any("count(" in sql and "kind" not in sql for sql, _ in open_reads)  # open count
    in_flight = [(sql, p) for sql, p in statements if "JOIN gateway_operations" in sql]
    assert any("kind" in sql for sql, _ in in_flight)
    assert any("kind" not in sql for sql, _ in in_flight)
    with engine.connect() as conn:
        for sql, params in open_reads:
            explained = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in explained)
            assert "INDEX ix_gateway_operations_pending" in plan, (sql, plan)
        for sql, params in in_flight:
            explained = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
            plan = " ".join(str(row[-1]) for row in explained)
            assert "INDEX ix_gateway_transactions_status" in plan, (sql, plan)
            assert "INDEX ix_gateway_operations_tx_hash" in plan, (sql, plan)
        indexed = conn.exec_driver_sql(
            "SELECT count(*) FROM gateway_operations INDEXED BY ix_gateway_operations_pending "
            "WHERE status = 'pending'"
        ).scalar_one()
        assert indexed == 2  # the submitted ones left the index
        marked = conn.exec_driver_sql(
            "SELECT status, block_number FROM gateway_operations WHERE key = ?",
            (new_access(1).request_id,),
        ).one()
        assert tuple(marked) == ("submitted", None)  # confirmed through its transaction
    engine.dispose()


OLD_TX = (
    "INSERT INTO gateway_transactions (sender, nonce, kind, raw, tx_hash, status, keys, "
    "attempts, created_at, block_number, mined_at) VALUES (:sender, :nonce, 'access', :raw, "
    ":tx_hash, :status, :keys, 1, :created_at, :block, :at)"
)
OLD_MARK = (
    "UPDATE gateway_operations SET status = :status, tx_hash = :tx_hash, nonce = :nonce, "
    "sender = :sender, block_number = :block, confirmed_at = :at WHERE key = :key"
)


async def seed_before(url: str, revision: str) -> tuple[StoredTx, StoredTx]:
    """An outbox at `revision` (0006 or 0007) as its code left it: access 1 PENDING, 2
    SUBMITTED in a sent transaction, 3 CONFIRMED in block 40 (0006: marked on its own row
    too), each transaction's signed bytes and keys in its row."""
    replay_to(url, revision)
    outbox = SqlOutbox(make_engine(url))
    await outbox.start()
    await outbox.add_accesses([new_access(n) for n in (1, 2, 3)])
    sent, mined = (
        submitted_tx((new_access(2).request_id,), 7),
        submitted_tx((new_access(3).request_id,), 8),
    )

    def as_before(conn: Connection) -> None:
        for tx, block, at in ((sent, None, None), (mined, 40, 1234.5)):
            row = {"sender": tx.sender, "nonce": tx.nonce, "raw": tx.raw, "tx_hash": tx.tx_hash}
            row.update(status="sent" if block is None else "mined", keys=b"".join(tx.keys))
            conn.execute(
                text(OLD_TX), {**row, "created_at": tx.created_at, "block": block, "at": at}
            )
            by_row = revision == "0006" and block is not None
            row.update(status="confirmed" if by_row else "submitted", key=tx.keys[0])
            marked = (block, at) if by_row else (None, None)
            conn.execute(text(OLD_MARK), {**row, "block": marked[0], "at": marked[1]})

    await outbox.write(as_before)
    await outbox.close()
    outbox.engine.dispose()
    return sent, mined


async def check_migrated(url: str, sent: StoredTx, mined: StoredTx) -> None:
    """After `migrate`: the same views, backlog, next batch and stored transactions; the old
    confirmation can still be reopened and abandoned, and a new one is made through the
    transaction."""
    migrate(url)
    outbox = SqlOutbox(make_engine(url))
    await outbox.start()
    assert await outbox.unmined(SENDER) == [sent]
    [recent] = await outbox.recent_mined(SENDER, 0, 10)
    assert (recent.tx, recent.block_number, recent.mined_at) == (mined, 40, 1234.5)
    stored = await outbox.transactions_at(SENDER, [7, 8])
    assert {n: (row.tx, row.status) for n, row in stored.items()} == {
        7: (sent, "sent"),
        8: (mined, "mined"),
    }
    keys = [new_access(n).request_id for n in (1, 2, 3)]
    views = await outbox.get_many(keys)
    assert [views[k].status for k in keys] == [
        OperationStatus.PENDING,
        OperationStatus.SUBMITTED,
        OperationStatus.CONFIRMED,
    ]
    assert views[keys[1]].tx_hash == sent.tx_hash
    assert views[keys[1]].block_number is None
    assert (views[keys[2]].tx_hash, views[keys[2]].block_number) == (mined.tx_hash, 40)
    assert views[keys[2]].confirmed_at == 1234.5
    assert await outbox.depth() == 2
    assert [op.key for op in await outbox.pending(10)] == [keys[0]]
    assert await outbox.reopen([mined.tx_hash]) == [keys[2]]
    assert (await outbox.get(keys[2])).status is OperationStatus.SUBMITTED  # type: ignore[union-attr]
    assert await outbox.depth() == 3
    await outbox.confirm([(mined.tx_hash, 41, mined.keys), (sent.tx_hash, 41, sent.keys)])
    views = await outbox.get_many(keys)
    assert [views[k].block_number for k in keys] == [None, 41, 41]
    assert await outbox.depth() == 1
    hashes, requeued, confirmed = await outbox.abandon(SENDER, 8)
    assert (hashes, requeued, confirmed) == ([mined.tx_hash], 1, [keys[2]])
    assert [op.key for op in await outbox.pending(10)] == [keys[0], keys[2]]
    await outbox.close()
    outbox.engine.dispose()


@pytest.mark.parametrize("revision", ["0006", "0007"])
def test_an_outbox_from_an_older_revision_migrates_with_its_operations(
    tmp_path: Path, revision: str
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"

    async def scenario() -> None:
        sent, mined = await seed_before(url, revision)
        await check_migrated(url, sent, mined)

    run(scenario)


def test_a_confirmation_marks_only_its_transaction_and_reads_through_it(tmp_path: Path) -> None:
    """Confirming a transaction writes its row only; its operations read as CONFIRMED in its
    block, at its time, until the confirmation is reopened (SUBMITTED, no block) or a revert's
    settlement marks one on its own row."""
    keys = tuple(new_access(n).request_id for n in range(4))
    statements: list[str] = []

    async def scenario() -> None:
        outbox = await opened(tmp_path)
        await outbox.add_accesses([new_access(n) for n in range(4)])
        tx = submitted_tx(keys[:3])
        await outbox.record_submissions([tx])

        @event.listens_for(outbox.engine, "before_cursor_execute")
        def capture(_c: Any, _cur: Any, sql: str, *_: Any) -> None:
            statements.append(sql)

        await outbox.confirm([(tx.tx_hash, 40, tx.keys)], {tx.tx_hash: b"\x0b" * 32})
        event.remove(outbox.engine, "before_cursor_execute", capture)
        views = await outbox.get_many(keys)
        assert [views[k].status for k in keys] == [OperationStatus.CONFIRMED] * 3 + [
            OperationStatus.PENDING
        ]
        assert {(views[k].tx_hash, views[k].block_number) for k in keys[:3]} == {(tx.tx_hash, 40)}
        assert views[keys[0]].confirmed_at is not None
        [mined] = await outbox.recent_mined(SENDER, 0, 10)
        assert views[keys[0]].confirmed_at == mined.mined_at
        assert await outbox.wait(keys[1], timeout=0.01) == views[keys[1]]
        [replayed] = await outbox.add_accesses([new_access(1)])  # a replay answers CONFIRMED
        assert replayed.view == views[keys[1]]
        assert not replayed.created
        assert await outbox.depth() == 1
        assert sorted(await outbox.reopen([tx.tx_hash])) == sorted(keys[:3])
        views = await outbox.get_many(keys[:3])
        assert {(v.status, v.block_number, v.confirmed_at) for v in views.values()} == {
            (OperationStatus.SUBMITTED, None, None)
        }
        assert await outbox.depth() == 4
        await outbox.close()

    run(scenario)
    writes = [sql.split()[0:3] for sql in statements if not sql.startswith(("SELECT", "BEGIN"))]
    assert writes == [["UPDATE", "gateway_transactions", "SET"]]
