"""The outbox on PostgreSQL (the production store): the same guarantees as on SQLite, and the
submitter recording through it. Each test gets its own schema, dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from eth_hash.auto import keccak
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection

from dul.chain.rpc import AsyncRpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, Tier
from dul.pg_schema import schema_url
from ledger_gateway.errors import ConflictError, UnavailableError
from ledger_gateway.lease import SubmitterLease
from ledger_gateway.migrations import VERSION_TABLE, migrate, replay
from ledger_gateway.outbox import NewAccess, OperationKind, OperationStatus, ReservationError
from ledger_gateway.store import (
    OPS,
    OutboxSettings,
    SqlOutbox,
    StoredTx,
    StoredTxRow,
    make_engine,
)
from ledger_gateway.submitter import (
    ACCESS_RECORDED_TOPIC,
    RECORD_SIZE,
    Submitter,
    SubmitterSettings,
    encode_access_record,
)

pytestmark = pytest.mark.postgres

T = TypeVar("T")
SENDER = "0x" + "ef" * 20


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


@pytest.fixture
def pg_url(pg_schema_url: str) -> str:
    """A migrated, empty schema of the test database, as a URL whose search_path is it."""
    migrate(pg_schema_url)
    return pg_schema_url


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """An empty schema of the test database, not migrated, as a URL whose search_path is it."""
    base = os.environ.get("DUL_TEST_DATABASE_URL")
    if not base:
        pytest.skip("DUL_TEST_DATABASE_URL is not set (.ci/run sets it)")
    schema = f"gw_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    rendered = schema_url(base, schema)
    try:
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


def new_access(n: int, *, body: bytes = b"a") -> NewAccess:
    return NewAccess(
        request_id=keccak(n.to_bytes(8, "big")),
        body_hash=keccak(body),
        org=b"hospital".ljust(32, b"\0"),
        agreement_id=keccak(b"agreement"),
        decision=Decision.GRANTED,
        reasons=(),
        record=n.to_bytes(RECORD_SIZE, "big"),
    )


async def opened(url: str, **settings: Any) -> SqlOutbox:
    outbox = SqlOutbox(make_engine(url), OutboxSettings(**settings))
    await outbox.start()
    return outbox


def test_migrations_match_the_tables_and_run_twice(pg_url: str) -> None:
    migrate(pg_url)
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "include_name": lambda name, kind, _: (
                    kind != "table"
                    or name == "cohort_leaves"
                    or (str(name).startswith("gateway_") and name != VERSION_TABLE)
                ),
            },
        )
        assert compare_metadata(context, OPS.metadata) == []
    engine.dispose()


def test_idempotency_conflict_and_bound(pg_url: str) -> None:
    async def scenario() -> None:
        outbox = await opened(pg_url, max_depth=3)
        [first] = await outbox.add_accesses([new_access(1)])
        assert first.created
        [again] = await outbox.add_accesses([new_access(1)])
        assert not again.created
        assert again.view == first.view
        with pytest.raises(ConflictError):
            await outbox.add_accesses([new_access(2), new_access(1, body=b"other")])
        assert await outbox.get(new_access(2).request_id) is None
        await outbox.add_accesses([new_access(2), new_access(3)])
        with pytest.raises(UnavailableError) as full:
            await outbox.add_accesses([new_access(4)])
        assert full.value.code == "outbox_full"
        await outbox.close()

    run(scenario)


def test_a_large_call_is_stored_by_one_pipelined_insert_in_call_order(pg_url: str) -> None:
    accesses = [new_access(n) for n in range(300)]

    async def scenario() -> None:
        outbox = await opened(pg_url)
        inserts: list[int] = []

        def count(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.startswith("INSERT INTO gateway_operations"):
                inserts.append(len(params))  # rows of one executemany

        event.listen(outbox.engine, "before_cursor_execute", count)
        accepted = await outbox.add_accesses([*accesses, accesses[5]])
        assert [a.created for a in accepted] == [True] * 300 + [False]
        assert inserts == [300]
        pending = await outbox.pending(1_000)
        assert [p.key for p in pending] == [a.request_id for a in accesses]
        for access, stored in list(zip(accesses, accepted, strict=False))[::29]:
            assert await outbox.get(access.request_id) == stored.view
        await outbox.close()

    run(scenario)


def test_concurrent_callers_share_commits(pg_url: str) -> None:
    async def scenario() -> int:
        outbox = await opened(pg_url)
        commits = 0

        def count(_conn: Any) -> None:
            nonlocal commits
            commits += 1

        event.listen(outbox.engine, "commit", count)
        await asyncio.gather(*(outbox.add_accesses([new_access(i)]) for i in range(64)))
        assert await outbox.depth() == 64
        await outbox.close()
        return commits

    assert 1 <= run(scenario) < 16


def test_two_outboxes_reserve_quota_and_codes_without_exceeding(pg_url: str) -> None:
    """Two outboxes on one database (as two worker processes): of 40 concurrent grants on a
    quota of 7, exactly 7 are stored; of two grants redeeming one code, exactly one; and two
    outboxes counting a new agreement at once start its count once."""
    code = keccak(b"code")

    def grant(n: int, **changes: Any) -> NewAccess:
        return new_access(n)._replace(quota=7, chain_used=2, **changes)

    async def scenario() -> None:
        outboxes = [await opened(pg_url), await opened(pg_url)]

        async def add(i: int, access: NewAccess) -> bool:
            try:
                await outboxes[i % 2].add_accesses([access])
                return True
            except ReservationError:
                return False

        stored = await asyncio.gather(*(add(i, grant(i)) for i in range(40)))
        assert sum(stored) == 5  # 7 less the 2 the chain counted
        assert await outboxes[0].quota_used(new_access(0).agreement_id) == 7
        other = keccak(b"other agreement")
        raced = await asyncio.gather(
            *(add(i, grant(100 + i, agreement_id=other, code=code)) for i in range(2))
        )
        assert sorted(raced) == [False, True]
        assert await outboxes[1].quota_used(other) == 3
        for outbox in outboxes:
            await outbox.close()

    run(scenario)


def test_one_submitter_lease_per_database(pg_url: str) -> None:
    engines = [make_engine(pg_url), make_engine(pg_url)]
    first, second = (SubmitterLease(engine) for engine in engines)
    assert first.acquire()
    assert not second.acquire()
    assert first.held()
    first.release()
    assert second.acquire()
    second.release()
    for engine in engines:
        engine.dispose()


def test_submission_nonce_and_confirmation(pg_url: str) -> None:
    keys = tuple(new_access(i).request_id for i in range(3))
    tx = StoredTx(
        sender=SENDER,
        nonce=11,
        kind=OperationKind.ACCESS,
        raw=b"raw",
        tx_hash=keccak(b"tx"),
        keys=keys,
        attempts=1,
        created_at=time.time(),
    )

    async def scenario() -> None:
        outbox = await opened(pg_url)
        await outbox.add_accesses([new_access(i) for i in range(3)])
        await outbox.record_submission(tx)
        assert await outbox.next_nonce(SENDER) == 12
        assert await outbox.unmined(SENDER) == [tx]
        waiting = asyncio.create_task(outbox.wait(keys[0], timeout=10))
        await asyncio.sleep(0.05)
        await outbox.confirm([(tx.tx_hash, 7, keys)])
        view = await waiting
        assert view is not None
        assert view.status is OperationStatus.CONFIRMED
        assert view.block_number == 7
        assert await outbox.depth() == 0
        await outbox.close()

    run(scenario)


@pytest.mark.integration
@pytest.mark.every_node
def test_the_submitter_records_through_postgres_exactly_once(
    pg_url: str, chain: ChainHandle, world: World
) -> None:
    agreement = world.activate(world.research_terms())
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    accesses = []
    for i in range(120):
        request = AccessRequest(
            request_id=keccak(agreement + i.to_bytes(8, "big")),
            agreement_id=agreement,
            dataset_id=world.dataset,
            field_mask=0b0110,
            tier=Tier.DEIDENTIFIED,
            operation=Operation.QUERY,
            request_hash=keccak(b"q"),
            deadline=int(time.time()) + 3_600,
        )
        record = AccessRecord(
            request,
            world.requester.address,
            request.sign(world.requester, domain),
            Decision.GRANTED,
            DenyReason.NONE,
        )
        accesses.append(
            NewAccess(
                request_id=request.request_id,
                body_hash=keccak(request.request_id),
                org=world.hospital,
                agreement_id=agreement,
                decision=Decision.GRANTED,
                reasons=(),
                record=encode_access_record(record.as_abi()),
            )
        )

    async def scenario() -> None:
        outbox = await opened(pg_url)
        rpc = AsyncRpcClient(chain.rpc_url)
        sub = Submitter(
            outbox,
            rpc,
            world.gateway,
            access_log=world.ledger.deployment.address("AccessLog"),
            chain_id=chain.chain_id,
            settings=SubmitterSettings(max_batch=50, max_delay=0.02, poll_interval=0.05),
        )
        await sub.start()
        await asyncio.gather(*(outbox.add_accesses([a]) for a in accesses))
        deadline = time.monotonic() + 30
        while await outbox.depth() > 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        views = await outbox.get_many([a.request_id for a in accesses])
        assert {v.status for v in views.values()} == {OperationStatus.CONFIRMED}
        await sub.stop()
        await rpc.aclose()
        await outbox.close()

    run(scenario)
    logs = chain.rpc(
        "eth_getLogs",
        {
            "address": world.ledger.deployment.address("AccessLog"),
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": ["0x" + ACCESS_RECORDED_TOPIC.hex(), None, "0x" + agreement.hex()],
        },
    )
    ids = [entry["topics"][1] for entry in logs]
    assert len(ids) == len(set(ids)) == len(accesses)


@pytest.mark.parametrize("revision", ["0006", "0007"])
def test_an_outbox_from_an_older_revision_migrates_with_its_operations(
    pg_schema_url: str, revision: str
) -> None:
    """As on SQLite: PENDING, SUBMITTED and CONFIRMED operations and the signed transactions
    stored at 0006 or 0007 read the same after the migrations, and reopen, confirm and abandon
    keep their meaning."""
    keys = [new_access(n).request_id for n in (1, 2, 3)]

    def tx(n: int, nonce: int) -> StoredTx:
        return StoredTx(SENDER, nonce, OperationKind.ACCESS, b"raw%d" % nonce,
                        keccak(b"tx%d" % nonce), (keys[n],), 1, 1.5)  # fmt: skip

    sent, mined = tx(1, 7), tx(2, 8)

    def as_before(conn: Connection) -> None:  # what the code of `revision` wrote
        for t, block, at in ((sent, None, None), (mined, 40, 1234.5)):
            conn.exec_driver_sql(
                "INSERT INTO gateway_transactions (sender, nonce, kind, raw, tx_hash, status, "
                "keys, attempts, created_at, block_number, mined_at) "
                "VALUES (%s, %s, 'access', %s, %s, %s, %s, 1, 1.5, %s, %s)",
                (t.sender, t.nonce, t.raw, t.tx_hash, "sent" if block is None else "mined",
                 t.keys[0], block, at),
            )  # fmt: skip
            by_row = revision == "0006" and block is not None
            conn.exec_driver_sql(
                "UPDATE gateway_operations SET status = %s, tx_hash = %s, nonce = %s, "
                "sender = %s, block_number = %s, confirmed_at = %s WHERE key = %s",
                ("confirmed" if by_row else "submitted", t.tx_hash, t.nonce, t.sender,
                 block if by_row else None, at if by_row else None, t.keys[0]),
            )  # fmt: skip

    async def scenario() -> None:
        replay(pg_schema_url, revision)
        outbox = await opened(pg_schema_url)
        await outbox.add_accesses([new_access(n) for n in (1, 2, 3)])
        await outbox.write(as_before)
        await outbox.close()
        outbox.engine.dispose()
        migrate(pg_schema_url)
        outbox = await opened(pg_schema_url)
        assert await outbox.unmined(SENDER) == [sent]
        [recent] = await outbox.recent_mined(SENDER, 0, 10)
        assert (recent.tx, recent.block_number, recent.mined_at) == (mined, 40, 1234.5)
        views = await outbox.get_many(keys)
        assert [views[k].status for k in keys] == [
            OperationStatus.PENDING,
            OperationStatus.SUBMITTED,
            OperationStatus.CONFIRMED,
        ]
        assert (views[keys[2]].block_number, views[keys[2]].confirmed_at) == (40, 1234.5)
        assert await outbox.depth() == 2
        assert [op.key for op in await outbox.pending(10)] == [keys[0]]
        assert await outbox.reopen([mined.tx_hash]) == [keys[2]]
        assert await outbox.depth() == 3
        await outbox.confirm([(mined.tx_hash, 41, mined.keys), (sent.tx_hash, 41, sent.keys)])
        views = await outbox.get_many(keys)
        assert [views[k].block_number for k in keys] == [None, 41, 41]
        assert await outbox.depth() == 1
        assert await outbox.abandon(SENDER, 8) == ([mined.tx_hash], 1, [keys[2]])
        assert [op.key for op in await outbox.pending(10)] == [keys[0], keys[2]]
        assert await outbox.transactions_at(SENDER, [7, 8]) == {7: StoredTxRow(sent, "mined")}
        await outbox.close()

    run(scenario)
