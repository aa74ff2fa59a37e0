"""The outbox writer's turns: queued decisions are committed before the submitter's writes,
which wait no longer than `write_defer_s` under a stream of decisions; a round of signed
transactions goes before the confirmations queued; a block's confirmations are written in
pieces of whole transactions (all on a real SQLite file)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from eth_hash.auto import keccak
from sqlalchemy import event, func, select
from sqlalchemy.engine import Connection

from dul.domain import Decision
from ledger_gateway.migrations import migrate
from ledger_gateway.outbox import NewAccess, OperationKind, OperationStatus
from ledger_gateway.store import (
    CONFIRM_PIECE,
    OPS,
    OutboxSettings,
    SqlOutbox,
    StoredTx,
    make_engine,
)
from ledger_gateway.submitter import RECORD_SIZE

T = TypeVar("T")
SENDER = "0x" + "cd" * 20


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


def access(n: int) -> NewAccess:
    return NewAccess(
        request_id=keccak(b"turns" + n.to_bytes(8, "big")),
        body_hash=keccak(b"body"),
        org=b"hospital".ljust(32, b"\0"),
        agreement_id=keccak(b"agreement"),
        decision=Decision.DENIED,
        reasons=(),
        record=n.to_bytes(RECORD_SIZE, "big"),
    )


async def opened(path: Path, **settings: Any) -> SqlOutbox:
    url = f"sqlite:///{path / 'outbox.db'}"
    migrate(url)
    outbox = SqlOutbox(make_engine(url), OutboxSettings(**settings))
    await outbox.start()
    return outbox


def test_decisions_queued_behind_a_write_are_committed_before_the_next(tmp_path: Path) -> None:
    async def scenario() -> list[str]:
        outbox = await opened(tmp_path, write_defer_s=5.0)
        order: list[str] = []
        running = asyncio.Event()
        loop = asyncio.get_running_loop()

        def busy(_: Connection) -> None:
            loop.call_soon_threadsafe(running.set)
            time.sleep(0.2)  # the writer is taken while the others queue up
            order.append("busy")

        def mark(conn: Connection) -> None:
            stored = conn.execute(select(func.count()).select_from(OPS)).scalar_one()
            order.append(f"submitter write after {stored} decision(s)")

        first = asyncio.ensure_future(outbox.write(busy))
        await running.wait()
        later = asyncio.ensure_future(outbox.write(mark))
        await asyncio.sleep(0.01)
        await outbox.add_accesses([access(1)])  # queued after the submitter's write
        await asyncio.gather(first, later)
        await outbox.close()
        return order

    assert run(scenario) == ["busy", "submitter write after 1 decision(s)"]


def test_a_submitter_write_waits_for_decisions_no_longer_than_the_bound(tmp_path: Path) -> None:
    async def scenario() -> tuple[float, int]:
        outbox = await opened(tmp_path, write_defer_s=0.02)
        stop = asyncio.Event()
        counter = iter(range(10**9))

        async def decide() -> None:  # a stream that keeps the decision queue full
            while not stop.is_set():
                await outbox.add_accesses([access(next(counter))])

        streams = [asyncio.ensure_future(decide()) for _ in range(16)]
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await outbox.write(lambda _: None)
        waited = time.monotonic() - started
        stop.set()
        await asyncio.gather(*streams)
        stored = await outbox.depth()
        await outbox.close()
        return waited, stored

    waited, stored = run(scenario)
    assert waited < 2.0  # ~0.02 s and a commit or two; never starved by the stream
    assert stored > 16


def test_a_round_of_signed_transactions_is_stored_before_queued_confirmations(
    tmp_path: Path,
) -> None:
    per_tx = 64

    async def scenario() -> list[str]:
        outbox = await opened(tmp_path)
        accesses = [access(n) for n in range(4 * per_tx)]
        await outbox.add_accesses(accesses)
        txs = []
        for nonce in range(4):
            keys = tuple(a.request_id for a in accesses[nonce * per_tx : (nonce + 1) * per_tx])
            txs.append(StoredTx(SENDER, nonce, OperationKind.ACCESS, b"raw%d" % nonce,
                                keccak(b"tx%d" % nonce), keys, 1, time.time()))  # fmt: skip
        await outbox.record_submissions(txs[:3])
        order: list[str] = []
        running = asyncio.Event()
        loop = asyncio.get_running_loop()
        write = outbox.write

        async def traced(fn: Callable[[Connection], Any], *, first: bool = False) -> Any:
            def run(conn: Connection) -> Any:
                order.append("round" if first else "confirmation")
                return fn(conn)

            return await write(run, first=first)

        def busy(_: Connection) -> None:
            loop.call_soon_threadsafe(running.set)
            time.sleep(0.1)  # the writer is taken while the others queue up

        held = asyncio.ensure_future(write(busy))
        await running.wait()
        outbox.write = traced  # type: ignore[method-assign]
        confirming = asyncio.ensure_future(
            outbox.confirm([(tx.tx_hash, 7, tx.keys) for tx in txs[:3]])
        )
        await asyncio.sleep(0.01)
        await outbox.record_submissions(txs[3:])  # queued after the block's confirmation
        await asyncio.gather(held, confirming)
        views = await outbox.get_many([a.request_id for a in accesses])
        await outbox.close()
        assert [views[a.request_id].status for a in accesses] == (
            [OperationStatus.CONFIRMED] * (3 * per_tx) + [OperationStatus.SUBMITTED] * per_tx
        )
        return order

    assert run(scenario) == ["round", "confirmation"]  # three transactions: one piece


def test_a_blocks_confirmations_are_written_in_pieces_of_whole_transactions(
    tmp_path: Path,
) -> None:
    count = CONFIRM_PIECE + 1
    per_tx = 3

    async def scenario() -> tuple[int, list[OperationStatus]]:
        outbox = await opened(tmp_path)
        accesses = [access(n) for n in range(count * per_tx)]
        await outbox.add_accesses(accesses)
        txs = []
        for nonce in range(count):
            keys = tuple(a.request_id for a in accesses[nonce * per_tx : (nonce + 1) * per_tx])
            tx = StoredTx(SENDER, nonce, OperationKind.ACCESS, b"raw%d" % nonce,
                          keccak(b"tx%d" % nonce), keys, 1, time.time())  # fmt: skip
            txs.append(tx)
        await outbox.record_submissions(txs)
        writes = 0
        write = outbox.write

        async def counted(fn: Callable[[Connection], Any], *, first: bool = False) -> Any:
            nonlocal writes
            writes += 1
            return await write(fn, first=first)

        outbox.write = counted  # type: ignore[method-assign]
        await outbox.confirm([(tx.tx_hash, 7, tx.keys) for tx in txs])
        views = await outbox.get_many([a.request_id for a in accesses])
        await outbox.close()
        return writes, [v.status for v in views.values()]

    writes, statuses = run(scenario)
    assert writes == 2  # `CONFIRM_PIECE` transactions, then the last alone
    assert statuses == [OperationStatus.CONFIRMED] * (count * per_tx)


def test_a_group_commits_callers_resume_in_the_loops_next_turns(tmp_path: Path) -> None:
    """The writer thread hands the group's answers to the loop as the commit ends: its callers
    resume two turns later (the hand-over's, then their own), not three (the writer task's
    wake-up first); under load each turn is every request that arrived meanwhile."""

    async def scenario() -> list[int]:
        outbox = await opened(tmp_path)
        turns = 0

        async def ticker() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        ended: list[int] = []
        commit = outbox._commit_group

        def timed(jobs: Any, look_up: bool) -> Any:
            try:
                return commit(jobs, look_up)
            finally:
                ended.append(turns)  # on the writer thread, as the commit ends

        outbox._commit_group = timed  # type: ignore[method-assign]
        ticking = asyncio.create_task(ticker())
        waited = []
        for n in range(20):
            await outbox.add_accesses([access(n)])
            waited.append(turns - ended[-1])
        ticking.cancel()
        await outbox.close()
        return waited

    assert max(run(scenario)) <= 2


def _held_writer(outbox: SqlOutbox) -> tuple[asyncio.Event, Callable[[Connection], None]]:
    """A submitter write that holds the writer 0.2 s (and says when it started)."""
    running = asyncio.Event()
    loop = asyncio.get_running_loop()

    def busy(_: Connection) -> None:
        loop.call_soon_threadsafe(running.set)
        time.sleep(0.2)

    return running, busy


def test_decisions_queued_when_a_write_has_waited_its_bound_are_committed_with_it(
    tmp_path: Path,
) -> None:
    """The write goes in the same transaction after them: one commit (one fsync) for both,
    where the decisions waited for its commit and then for their own."""

    async def scenario() -> tuple[int, list[str]]:
        outbox = await opened(tmp_path, write_defer_s=0.0)
        running, busy = _held_writer(outbox)
        seen: list[str] = []

        def mark(conn: Connection) -> None:
            stored = conn.execute(select(func.count()).select_from(OPS)).scalar_one()
            seen.append(f"submitter write after {stored} decision(s)")

        commits = 0

        def count(_conn: Any) -> None:
            nonlocal commits
            commits += 1

        event.listen(outbox.engine, "commit", count)
        held = asyncio.ensure_future(outbox.write(busy))
        await running.wait()
        write = asyncio.ensure_future(outbox.write(mark))  # its bound is over at once
        decided = [asyncio.ensure_future(outbox.add_accesses([access(n)])) for n in range(3)]
        await asyncio.gather(held, write, *decided)
        assert all(d.result()[0].created for d in decided)
        await outbox.close()
        return commits, seen

    commits, seen = run(scenario)
    assert commits == 2  # the write that held the writer, then the three decisions and this
    assert seen == ["submitter write after 3 decision(s)"]


def test_a_write_that_fails_beside_decisions_fails_alone(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, str, int]:
        outbox = await opened(tmp_path, write_defer_s=0.0)
        running, busy = _held_writer(outbox)

        def failing(conn: Connection) -> None:
            conn.exec_driver_sql("DELETE FROM gateway_operations")  # undone with it
            raise RuntimeError("2 operations were not PENDING")

        held = asyncio.ensure_future(outbox.write(busy))
        await running.wait()
        write = asyncio.ensure_future(outbox.write(failing))
        decided = [asyncio.ensure_future(outbox.add_accesses([access(n)])) for n in range(2)]
        await held
        await asyncio.gather(*decided)
        try:
            await write
            error = ""
        except RuntimeError as exc:
            error = str(exc)
        stored = await outbox.depth()
        later = await outbox.write(lambda conn: 7)  # the writer goes on
        await outbox.close()
        return stored, error, later

    stored, error, later = run(scenario)
    assert stored == 2
    assert error == "2 operations were not PENDING"
    assert later == 7


def test_a_replay_among_decisions_beside_a_write_is_answered_as_stored(tmp_path: Path) -> None:
    """The shared transaction took every key for new and was refused: nothing of it stayed,
    and the write and the decisions each went again alone."""

    async def scenario() -> tuple[list[bool], int, int]:
        outbox = await opened(tmp_path, write_defer_s=0.0)
        await outbox.add_accesses([access(0)])
        running, busy = _held_writer(outbox)
        held = asyncio.ensure_future(outbox.write(busy))
        await running.wait()
        write = asyncio.ensure_future(outbox.write(lambda conn: 7))
        decided = [asyncio.ensure_future(outbox.add_accesses([access(n)])) for n in range(2)]
        await held
        results = await asyncio.gather(*decided)
        written = await write
        stored = await outbox.depth()
        await outbox.close()
        return [r[0].created for r in results], written, stored

    created, written, stored = run(scenario)
    assert created == [False, True]  # access(0) was stored before: its stored view
    assert written == 7
    assert stored == 2
