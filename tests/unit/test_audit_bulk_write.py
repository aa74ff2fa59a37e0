"""`AuditStore.write_page`'s bulk path: a page's block rows (one insert for all of them) carry
each block's event count, the last block its parent hash, and a redone page replaces them; wide
`Uint` values anywhere in a page take the SQLite spelling (`sqlite_rows`); a page prepared by a
fetch worker is stored alike and gives its events back."""

from __future__ import annotations

import json
import time
from pathlib import Path

import sqlalchemy as sa

from audit.events import DecodedEvent
from audit.indexer import Page
from audit.pipeline import Fetched, Pipeline, Task, shrunk
from audit.store import BlockRef, events_of, prepare, store_session
from audit.uints import INT64_MAX, sqlite_rows, to_sqlite
from dul.chain.log_pages import PageSizer


def _hex(n: int, width: int = 64) -> str:
    return "0x" + format(n, f"0{width}x")


def _event(block: int, tx: int, access: int) -> DecodedEvent:
    args = {
        "accessId": _hex(access), "agreementId": _hex(5), "datasetId": _hex(6),
        "recorder": _hex(9, 40),
        "record": {
            "requester": _hex(10, 40), "decision": 0, "reason": 0, "tier": 1, "operation": 0,
            "fieldMask": "0x6", "requestHash": _hex(7), "cohortRoot": _hex(0), "cohortSize": 0,
            "authorizationRef": _hex(0), "deadline": 1_800_000_000, "sigR": _hex(1),
            "sigS": _hex(2), "sigV": 27,
        },
    }  # fmt: skip
    return DecodedEvent(
        block, tx, 0, _hex(block + 1000), _hex(access + 2000), _hex(1, 40), "AccessLog",
        "AccessRecorded", args, json.dumps(args, separators=(",", ":")), 1_700_000_000 + block,
    )  # fmt: skip


def test_a_pages_blocks_are_stored_with_their_counts_and_redone_alike(tmp_path: Path) -> None:
    with store_session(f"sqlite:///{tmp_path / 'audit.db'}") as store:
        store.initialize(1, {"AccessLog": _hex(1, 40)}, BlockRef(9, _hex(1009)))
        events = [_event(10, 0, 1), _event(10, 1, 2), _event(12, 0, 3)]
        last = BlockRef(14, _hex(1014), _hex(1013), 1_700_000_014)
        for _ in range(2):  # a page redone after a crash leaves the same rows
            store.write_page(10, last, events, previous_checkpoint=9)
            with store.engine.connect() as conn:
                rows = conn.execute(
                    sa.text("SELECT number, hash, parent_hash, timestamp, events FROM block "
                            "ORDER BY number")
                ).all()  # fmt: skip
            assert [tuple(r) for r in rows] == [
                (10, _hex(1010), None, 1_700_000_010, 2),
                (12, _hex(1012), None, 1_700_000_012, 1),
                (14, _hex(1014), _hex(1013), 1_700_000_014, 0),
            ]
        assert store.count("access_event") == 3


def test_sqlite_rows_spells_every_row_once_one_value_is_wide() -> None:
    small = [(1, 2, 3), (4, None, 6)]
    assert sqlite_rows(small, (1,)) is small
    wide = [(1, 2, 3), (4, INT64_MAX + 1, 6), (7, None, 9)]
    assert sqlite_rows(wide, (1,)) == [(1, 2, 3), (4, to_sqlite(INT64_MAX + 1), 6), (7, None, 9)]
    assert to_sqlite(INT64_MAX + 1) == f"{INT64_MAX + 1:078d}"


def test_a_prepared_page_gives_back_its_events_and_is_stored_alike(tmp_path: Path) -> None:
    """What a fetch worker hands the writer (rows, block counts) rebuilds the events exactly,
    and storing it equals storing the events."""
    events = [_event(10, 0, 1), _event(10, 1, 2), _event(12, 0, 3)]
    prepared = prepare(events)
    assert events_of(prepared) == events
    assert [(ref.number, count) for ref, count in prepared.blocks] == [(10, 2), (12, 1)]
    last = BlockRef(14, _hex(1014), _hex(1013), 1_700_000_014)
    dumps: list[dict[str, list[tuple[object, ...]]]] = []
    for page in (events, prepared):
        with store_session(f"sqlite:///{tmp_path / f'{len(dumps)}.db'}") as store:
            store.initialize(1, {"AccessLog": _hex(1, 40)}, BlockRef(9, _hex(1009)))
            store.write_page(10, last, page, previous_checkpoint=9)
            dumps.append(store.dump())
    assert dumps[0] == dumps[1]


def test_a_refused_range_shrinks_to_what_its_declared_size_says_fits() -> None:
    assert shrunk(100, None, 1_000) == 50  # no size known: half
    assert shrunk(100, 4_000, 1_000) == 12  # half of the budget's share: blocks differ
    assert shrunk(100, 1_500, 1_000) == 33
    assert shrunk(2, 10**9, 1_000) == 1


class _Workers:
    """Records the ranges handed out; answers are fed to the pipeline by the test."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []

    def submit(self, task: Task) -> None:
        self.tasks.append(task)

    def get(self, timeout: float) -> Fetched:
        raise AssertionError("not used")

    def check(self) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


def _page(first: int, last: int, reply_bytes: int, over_budget: int = 0, logs: int = 0) -> Page:
    events = [_event(first, tx, 10_000 * first + tx) for tx in range(logs)]
    return Page(first, BlockRef(last, _hex(last)), _hex(first - 1), prepare(events),
                reply_bytes=reply_bytes, over_budget=over_budget)  # fmt: skip


def test_ranges_go_out_side_by_side_only_once_the_density_is_known() -> None:
    """A sparse first page (the deployment's blocks) says nothing about the blocks after it:
    ranges still go out one at a time; a cut reply tells the density of the blocks it did not
    keep, and the ranges then go out side by side, fitted to it."""
    workers = _Workers()
    budget = 16_000_000
    pipeline = Pipeline(workers, PageSizer(10, 50_000, 5_000), 1, 1_000, depth=3, epoch=1,
                        max_bytes=budget)  # fmt: skip
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks] == [(1, 10)]
    pipeline._receive(Fetched(workers.tasks[0], _page(1, 10, 5_000)))
    pipeline.done.pop(1)  # the writer takes it
    pipeline.out -= 1
    pipeline.next = 11
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks[1:]] == [(11, 30)]  # still one at a time
    # its reply was 28 MB: blocks 11..15 came whole in the first quarter of the budget
    pipeline._receive(Fetched(workers.tasks[1], _page(11, 15, budget // 4, 28_000_000)))
    assert pipeline.sizer.refused == 1
    pipeline._dispatch()
    side_by_side = [(t.first, t.last) for t in workers.tasks[2:]]
    assert len(side_by_side) == 2
    assert side_by_side[0][0] == 16  # the rest of the cut range goes out again first
    # (28 MB - 4 MB) over the 15 blocks not kept: ~1.6 MB a block, a quarter budget is 2
    assert all(last - first + 1 <= 2 for first, last in side_by_side)


def test_until_the_density_is_known_a_range_ends_where_its_blocks_gas_passes_the_budget() -> None:
    """Deployments, then blocks far denser than a page: the node is never asked for a range it
    would read whole for most of it to be cut (at a byte of reply per gas, a budget of 16 MB
    is 16 M gas). A page of much gas and few logs (deployments) leaves the density
    unknown; a gas-filled page with a reply of some size tells it."""
    workers = _Workers()
    budget = 16_000_000
    gas = {n: 4_000_000 if n <= 4 else 200_000_000 for n in range(1, 1_001)}
    asked: list[tuple[int, int]] = []

    def gas_of(first: int, last: int) -> list[int]:
        asked.append((first, last))
        return [gas[n] for n in range(first, last + 1)]

    pipeline = Pipeline(workers, PageSizer(10, 50_000, 5_000), 1, 1_000, depth=3, epoch=1,
                        max_bytes=budget, gas_of=gas_of)  # fmt: skip
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks] == [(1, 4)]  # block 5 would pass 16 M
    pipeline._receive(Fetched(workers.tasks[0], _page(1, 4, 5_000)))
    assert not pipeline.learned  # 16 M gas of deployments, 5 kB of logs
    pipeline.done.pop(1)
    pipeline.out -= 1
    pipeline.next = 5
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks[1:]] == [(5, 5)]  # alone over the budget
    pipeline._receive(Fetched(workers.tasks[1], _page(5, 5, 500_000)))
    assert pipeline.learned
    pipeline.done.pop(5)
    pipeline.out -= 1
    pipeline.next = 6
    pipeline._dispatch()
    assert len(workers.tasks[2:]) == 3  # side by side
    assert workers.tasks[2].first == 6
    assert len(asked) == 2  # only while the density was unknown


def test_fitted_ranges_go_out_beside_the_first_while_the_density_is_unknown() -> None:
    """With the gas readable while ranges are out (worker processes), the ranges after the
    first go out beside it fitted to a quarter of the budget (a page of them is never cut):
    the first dense blocks are read by every worker at once, not by one while the others
    wait. Sparse ranges beside it are fitted the same way."""
    workers = _Workers()
    budget = 16_000_000
    gas = {n: 1_000_000 if n <= 6 else 200_000_000 for n in range(1, 1_001)}

    def gas_of(first: int, last: int) -> list[int]:
        return [gas[n] for n in range(first, last + 1)]

    pipeline = Pipeline(workers, PageSizer(4, 50_000, 5_000), 1, 1_000, depth=3, epoch=1,
                        max_bytes=budget, gas_of=gas_of, gas_beside=True)  # fmt: skip
    pipeline._dispatch()
    # a page of 4 blocks; beside it at most 4 M of gas a range, then a dense block alone
    assert [(t.first, t.last) for t in workers.tasks] == [(1, 4), (5, 6), (7, 7)]
    pipeline._receive(Fetched(workers.tasks[0], _page(1, 4, 5_000)))
    assert not pipeline.learned
    pipeline.done.pop(1)
    pipeline.out -= 1
    pipeline.next = 5
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks[3:]] == [(8, 8)]


def test_after_an_empty_page_a_range_stretches_over_blocks_without_gas() -> None:
    """Dense blocks keep pages at one block (the fading density); once a page comes back
    empty, the next range takes every following block whose gas fits the page budgets (empty
    blocks: none), instead of one page a block for as long as the density fades."""
    workers = _Workers()
    budget = 16_000_000
    gas = {n: 200_000_000 if n <= 10 else 0 for n in range(1, 101)}
    gas[60] = 50_000_000  # busy again: the stretch stops before it

    def gas_of(first: int, last: int) -> list[int]:
        return [gas[n] for n in range(first, last + 1)]

    pipeline = Pipeline(workers, PageSizer(1, 50_000, 5_000), 1, 100, depth=3, epoch=1,
                        max_bytes=budget, gas_of=gas_of, gas_beside=True)  # fmt: skip
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks] == [(1, 1), (2, 2), (3, 3)]
    for task in workers.tasks:  # dense pages: the density is known, pages stay one block
        pipeline._receive(Fetched(task, _page(task.first, task.last, 6_000_000, 0, 3_000)))
        pipeline.done.pop(task.first)
        pipeline.out -= 1
        pipeline.next = task.last + 1
    assert pipeline.learned
    pipeline._dispatch()
    assert [(t.first, t.last) for t in workers.tasks[3:]] == [(4, 4), (5, 5), (6, 6)]
    empty = Fetched(Task(1, 11, 11), _page(11, 11, 40))
    pipeline.uncovered = [(12, 100)]  # blocks 7..11 handed out meanwhile; 11 came back empty
    pipeline._receive(empty)
    pipeline.done.pop(11)
    pipeline.out = 0
    pipeline.next = 12
    pipeline._dispatch()
    assert (workers.tasks[6].first, workers.tasks[6].last) == (12, 59)


def test_a_background_checkpointer_keeps_the_wal_from_the_writer_and_bounded(
    tmp_path: Path,
) -> None:
    """With `checkpoint_in_background`, the writer's connection checkpoints nothing itself
    (`wal_autocheckpoint=0`); the thread copies every committed page into the database file
    and starts the WAL over once it holds `restart_bytes`. If the thread is gone, the writer
    checkpoints again as the engine set it up."""
    database = tmp_path / "audit.db"
    with store_session(f"sqlite:///{database}") as store:
        store.initialize(1, {"AccessLog": _hex(1, 40)}, BlockRef(9, _hex(1009)))
        assert store.checkpoint_in_background()
        assert store.checkpointer is not None
        store.checkpointer.restart_bytes = 64 * 1024  # a few pages' worth
        previous = 9
        for page in range(20):
            first = 10 + 10 * page
            events = [_event(first, tx, 100 * page + tx) for tx in range(50)]
            last = BlockRef(first + 9, _hex(first + 1009), _hex(first + 1008), 1_700_000_000)
            store.write_page(first, last, events, previous_checkpoint=previous)
            previous = last.number
            with store.engine.connect() as conn:
                setting = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            assert setting == 0
        checkpointer = store.checkpointer
        for _ in range(100):  # the writer idle: the WAL is copied whole and started over
            if checkpointer.restarts:
                break
            checkpointer.poke()
            time.sleep(0.05)
        store.stop_checkpointing()
        assert checkpointer.checkpoints > 0
        assert checkpointer.error is None
        assert checkpointer.restarts > 0  # the WAL started over: it never held every page
        assert store.checkpointer is None
        assert store.count("access_event") == 20 * 50

        assert store.checkpoint_in_background()
        assert store.checkpointer is not None
        store.checkpointer.close()  # the thread is gone: the writer checkpoints again
        first = 10 + 10 * 20
        last = BlockRef(first + 9, _hex(first + 1009), _hex(first + 1008), 1_700_000_000)
        store.write_page(first, last, [_event(first, 0, 9_999)], previous_checkpoint=previous)
        with store.engine.connect() as conn:
            setting = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
            page_size = conn.exec_driver_sql("PRAGMA page_size").scalar()
        assert setting == 64 * 1024 * 1024 // page_size


def test_the_last_checkpoint_copies_every_page_and_empties_the_wal(tmp_path: Path) -> None:
    """`finish_checkpointing` (the indexer is closing) has the thread copy what the WAL holds
    into the database file and truncate the WAL, so closing the engine finds nothing left:
    a second connection reads every row from the database file alone."""
    import sqlite3

    database = tmp_path / "audit.db"
    wal = tmp_path / "audit.db-wal"
    with store_session(f"sqlite:///{database}") as store:
        store.initialize(1, {"AccessLog": _hex(1, 40)}, BlockRef(9, _hex(1009)))
        assert store.checkpoint_in_background()
        previous = 9
        for page in range(5):
            first = 10 + 10 * page
            events = [_event(first, tx, 100 * page + tx) for tx in range(50)]
            last = BlockRef(first + 9, _hex(first + 1009), _hex(first + 1008), 1_700_000_000)
            store.write_page(first, last, events, previous_checkpoint=previous)
            previous = last.number
        assert wal.stat().st_size > 0
        checkpointer = store.checkpointer
        assert checkpointer is not None
        store.finish_checkpointing()
        store.stop_checkpointing()
        assert checkpointer.error is None
        assert wal.stat().st_size == 0  # every frame in the database file, and fsynced
        copy = tmp_path / "copy.db"  # the database file alone, without its WAL
        copy.write_bytes(database.read_bytes())
        with sqlite3.connect(copy) as conn:
            assert conn.execute("SELECT count(*) FROM access_event").fetchone() == (5 * 50,)
            assert conn.execute("SELECT block_number FROM checkpoint").fetchone() == (previous,)


def test_a_memory_store_has_no_background_checkpointer() -> None:
    with store_session("sqlite://") as store:
        assert not store.checkpoint_in_background()
        assert store.checkpointer is None
