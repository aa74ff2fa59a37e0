"""The submitter against the session's real chain (anvil behind the permissioned proxy) and a
real SQLite outbox: exactly once, batching, reverted records, crashes and restarts."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from eth_hash.auto import keccak

from dul.chain.rpc import AsyncRpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.typed_data import AccessRecord, AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, Tier
from ledger_gateway.migrations import migrate
from ledger_gateway.outbox import NewAccess, OperationStatus
from ledger_gateway.store import SqlOutbox, make_engine
from ledger_gateway.submitter import (
    ACCESS_RECORDED_TOPIC,
    Submitter,
    SubmitterSettings,
    encode_access_record,
)

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

T = TypeVar("T")

FAST = SubmitterSettings(max_delay=0.05, poll_interval=0.05, resend_after=2.0)


class SimulatedCrash(BaseException):
    """Raised by a crash hook: escapes the submitter's retry guards like a dying process."""


def access(
    world: World,
    agreement: bytes,
    n: int,
    *,
    decision: Decision = Decision.GRANTED,
    salt: bytes = b"",
) -> NewAccess:
    request = AccessRequest(
        request_id=keccak(agreement + salt + n.to_bytes(8, "big")),
        agreement_id=agreement,
        dataset_id=world.dataset,
        field_mask=0b0110,
        tier=Tier.DEIDENTIFIED if decision is Decision.GRANTED else Tier.IDENTIFIED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM person"),
        deadline=int(time.time()) + 3_600,
    )
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    reason = DenyReason.NONE if decision is Decision.GRANTED else DenyReason.TIER_ABOVE_CEILING
    record = AccessRecord(
        request, world.requester.address, request.sign(world.requester, domain), decision, reason
    )
    return NewAccess(
        request_id=request.request_id,
        body_hash=keccak(b"body" + request.request_id),
        org=world.hospital,
        agreement_id=agreement,
        decision=decision,
        reasons=(reason,) if reason else (),
        record=encode_access_record(record.as_abi()),
    )


def run(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(factory())


async def open_outbox(url: str) -> SqlOutbox:
    migrate(url)
    outbox = SqlOutbox(make_engine(url))
    await outbox.start()
    return outbox


def submitter(
    world: World, chain: ChainHandle, outbox: SqlOutbox, **kwargs: Any
) -> tuple[Submitter, AsyncRpcClient]:
    rpc = AsyncRpcClient(chain.rpc_url)
    settings = kwargs.pop("settings", FAST)
    return (
        Submitter(
            outbox,
            rpc,
            world.gateway,
            access_log=world.ledger.deployment.address("AccessLog"),
            chain_id=chain.chain_id,
            settings=settings,
            **kwargs,
        ),
        rpc,
    )


async def drain(outbox: SqlOutbox, sub: Submitter, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while await outbox.depth() > 0:
        task = sub.task
        if task is not None and task.done():
            task.result()  # surface the submitter's own failure
        assert time.monotonic() < deadline, f"outbox not drained: {await outbox.depth()} open"
        await asyncio.sleep(0.05)


def recorded_ids(chain: ChainHandle, world: World, agreement: bytes) -> Counter[bytes]:
    logs = chain.rpc(
        "eth_getLogs",
        {
            "address": world.ledger.deployment.address("AccessLog"),
            "fromBlock": "0x0",
            "toBlock": "latest",
            "topics": ["0x" + ACCESS_RECORDED_TOPIC.hex(), None, "0x" + agreement.hex()],
        },
    )
    return Counter(bytes.fromhex(entry["topics"][1][2:]) for entry in logs)


def url_in(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'outbox.db'}"


def test_a_burst_is_recorded_exactly_once_in_few_transactions(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    agreement = world.activate(world.research_terms())
    accesses = [access(world, agreement, i) for i in range(450)]
    accesses += [access(world, agreement, i, decision=Decision.DENIED) for i in range(450, 500)]

    async def scenario() -> tuple[list[Any], int]:
        outbox = await open_outbox(url_in(tmp_path))
        sub, rpc = submitter(world, chain, outbox)
        await sub.start()
        # 50 concurrent callers of 10 decisions each, as the API would send them
        groups = [accesses[i : i + 10] for i in range(0, 500, 10)]
        await asyncio.gather(*(outbox.add_accesses(g) for g in groups))
        await drain(outbox, sub)
        views = list((await outbox.get_many([a.request_id for a in accesses])).values())
        sent = sub.stats.transactions_sent
        await sub.stop()
        await rpc.aclose()
        await outbox.close()
        return views, sent

    views, sent = run(scenario)
    assert {v.status for v in views} == {OperationStatus.CONFIRMED}
    assert all(v.tx_hash is not None and v.block_number is not None for v in views)
    assert len({v.tx_hash for v in views}) == sent
    assert sent <= 6  # 500 records at 200 a batch (or whatever queued within 50 ms)
    ids = recorded_ids(chain, world, agreement)
    assert set(ids) == {a.request_id for a in accesses}
    assert set(ids.values()) == {1}
    assert world.ledger.call("AccessLog", "accessesUsed", agreement) == 450


def test_a_record_over_quota_fails_alone_and_the_batch_lands(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    agreement = world.activate(world.research_terms(quota=3))
    granted = [access(world, agreement, i) for i in range(5)]
    denied = [access(world, agreement, i, decision=Decision.DENIED) for i in range(5, 8)]
    mixed = [granted[0], denied[0], granted[1], granted[2], granted[3], denied[1], granted[4]]
    mixed.append(denied[2])

    async def scenario() -> dict[bytes, Any]:
        outbox = await open_outbox(url_in(tmp_path))
        await outbox.add_accesses(mixed)  # stored before the submitter starts: one batch
        sub, rpc = submitter(world, chain, outbox)
        await sub.start()
        await drain(outbox, sub)
        assert sub.stats.reverted_transactions == 1
        views = await outbox.get_many([a.request_id for a in mixed])
        await sub.stop()
        await rpc.aclose()
        await outbox.close()
        return views

    views = run(scenario)
    over = {granted[3].request_id, granted[4].request_id}
    for a in mixed:
        view = views[a.request_id]
        if a.request_id in over:
            assert view.status is OperationStatus.FAILED
            assert view.error == "AccessLogQuotaExhausted"
        else:
            assert view.status is OperationStatus.CONFIRMED, view
    ids = recorded_ids(chain, world, agreement)
    assert set(ids) == {a.request_id for a in mixed} - over
    assert set(ids.values()) == {1}


def test_access_batches_confirm_from_their_events_and_a_revert_from_its_receipt(
    chain: ChainHandle, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A successful batch's receipt (every record's log) is never downloaded: its first
    record's event, emitted by that transaction, confirms it at the receipt's block. A
    reverted batch left no event and is settled from its receipt."""
    agreement = world.activate(world.research_terms(quota=50))
    good = [access(world, agreement, i) for i in range(40)]
    over = [access(world, agreement, i) for i in range(40, 60)]  # quota 50: 10 of these fail
    asked: list[bytes] = []

    async def scenario() -> tuple[dict[bytes, Any], dict[bytes, dict[str, Any] | None]]:
        outbox = await open_outbox(url_in(tmp_path))
        settings = SubmitterSettings(max_batch=10, max_delay=0.01, poll_interval=0.05)
        sub, rpc = submitter(world, chain, outbox, settings=settings)
        receipts = rpc.receipts

        async def counted(hashes: Any) -> list[dict[str, Any] | None]:
            asked.extend(hashes)
            return await receipts(hashes)

        monkeypatch.setattr(rpc, "receipts", counted)
        await sub.start()
        await sub.recovered()
        await outbox.add_accesses(good[:20])
        await outbox.add_accesses(good[20:])
        await drain(outbox, sub)
        assert asked == []
        assert sub.stats.transactions_sent == 4
        await outbox.add_accesses(over)  # two batches of 10, room for one: the other reverts
        await drain(outbox, sub)
        assert sub.stats.reverted_transactions == 1
        views = await outbox.get_many([a.request_id for a in good + over])
        hashes = {v.tx_hash for v in views.values() if v.tx_hash is not None}
        on_chain = dict(zip(hashes, await receipts(list(hashes)), strict=True))
        await sub.stop()
        await rpc.aclose()
        await outbox.close()
        return views, on_chain

    views, on_chain = run(scenario)
    assert len(asked) >= 1  # the reverted transaction's receipt
    for a in good:
        view = views[a.request_id]
        assert view.status is OperationStatus.CONFIRMED
        assert view.tx_hash is not None
        receipt = on_chain[view.tx_hash]
        assert receipt is not None
        assert receipt["status"] == "0x1"
        assert view.block_number == int(receipt["blockNumber"], 16)
    failed = [a for a in over if views[a.request_id].status is OperationStatus.FAILED]
    assert len(failed) == 10
    assert {views[a.request_id].error for a in failed} == {"AccessLogQuotaExhausted"}
    ids = recorded_ids(chain, world, agreement)
    assert set(ids) == {a.request_id for a in good + over} - {a.request_id for a in failed}
    assert set(ids.values()) == {1}


@pytest.mark.parametrize("point", ["persisted", "sent"])
def test_a_crash_around_sending_neither_loses_nor_repeats(
    chain: ChainHandle, world: World, tmp_path: Path, point: str
) -> None:
    agreement = world.activate(world.research_terms())
    accesses = [access(world, agreement, i) for i in range(120)]
    settings = SubmitterSettings(max_batch=20, max_delay=0.01, poll_interval=0.05)
    calls = Counter[str]()

    def crash_on_third(at: str) -> None:
        calls[at] += 1
        if at == point and calls[at] == 3:
            raise SimulatedCrash(at)

    async def scenario() -> list[Any]:
        url = url_in(tmp_path)
        outbox = await open_outbox(url)
        await outbox.add_accesses(accesses)
        first, rpc = submitter(world, chain, outbox, settings=settings, crash_hook=crash_on_third)
        await first.start()
        assert first.task is not None
        with pytest.raises(BaseExceptionGroup) as crashed:
            await first.task
        assert crashed.value.subgroup(SimulatedCrash) is not None
        await rpc.aclose()
        await outbox.close()
        # a new process: a fresh outbox over the same file, a fresh submitter
        outbox = await open_outbox(url)
        statuses = Counter(
            v.status for v in (await outbox.get_many([a.request_id for a in accesses])).values()
        )
        assert statuses[OperationStatus.SUBMITTED] >= 20  # the crashed batch is on disk
        second, rpc = submitter(world, chain, outbox, settings=settings)
        await second.start()
        await drain(outbox, second)
        views = list((await outbox.get_many([a.request_id for a in accesses])).values())
        await second.stop()
        await rpc.aclose()
        await outbox.close()
        return views

    views = run(scenario)
    assert {v.status for v in views} == {OperationStatus.CONFIRMED}
    ids = recorded_ids(chain, world, agreement)
    assert set(ids) == {a.request_id for a in accesses}
    assert set(ids.values()) == {1}


def test_the_nonce_survives_a_restart_and_matches_the_chain(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    agreement = world.activate(world.research_terms())

    async def scenario() -> tuple[int | None, int, int]:
        url = url_in(tmp_path)
        outbox = await open_outbox(url)
        sub, rpc = submitter(world, chain, outbox)
        await sub.start()
        await outbox.add_accesses([access(world, agreement, i) for i in range(30)])
        await drain(outbox, sub)
        await sub.stop()
        stored = await outbox.next_nonce(sub.sender)
        on_chain = await rpc.transaction_count(sub.sender, "pending")
        await outbox.close()
        outbox = await open_outbox(url)
        again, rpc2 = submitter(world, chain, outbox)
        await again.start()
        await again.recovered()
        reconciled = again.nonces.peek()
        await again.stop()
        await rpc.aclose()
        await rpc2.aclose()
        await outbox.close()
        return stored, on_chain, reconciled

    stored, on_chain, reconciled = run(scenario)
    assert stored == on_chain == reconciled


def test_wait_returns_when_the_submitter_confirms(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    agreement = world.activate(world.research_terms())
    one = access(world, agreement, 0)

    async def scenario() -> tuple[Any, float]:
        outbox = await open_outbox(url_in(tmp_path))
        sub, rpc = submitter(world, chain, outbox)
        await sub.start()
        await outbox.add_accesses([one])
        started = time.monotonic()
        view = await outbox.wait(one.request_id, timeout=20)
        waited = time.monotonic() - started
        await sub.stop()
        await rpc.aclose()
        await outbox.close()
        return view, waited

    view, waited = run(scenario)
    assert view is not None
    assert view.status is OperationStatus.CONFIRMED
    assert view.block_number is not None
    assert waited < 5


SUBMITTER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from dul.contracts.deployment import Deployment
    from dul.contracts.world import derived_signer
    from dul.chain.rpc import AsyncRpcClient
    from ledger_gateway.store import SqlOutbox, make_engine
    from ledger_gateway.submitter import Submitter, SubmitterSettings

    async def main(url: str, rpc_url: str, deployment: str) -> None:
        outbox = SqlOutbox(make_engine(url))
        await outbox.start()
        d = Deployment.load(__import__("pathlib").Path(deployment))
        sub = Submitter(
            outbox, AsyncRpcClient(rpc_url), derived_signer("gateway"),
            access_log=d.address("AccessLog"), chain_id=d.chain_id,
            settings=SubmitterSettings(
                max_batch=10, max_delay=0.0, poll_interval=0.05, max_in_flight=4
            ),
        )
        await sub.start()
        print("started", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_kill_9_at_a_random_moment_then_restart_records_exactly_once(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    agreement = world.activate(world.research_terms())
    accesses = [access(world, agreement, i) for i in range(300)]
    url = url_in(tmp_path)
    script = tmp_path / "run_submitter.py"
    script.write_text(SUBMITTER_SCRIPT)

    async def seed() -> None:
        outbox = await open_outbox(url)
        await outbox.add_accesses(accesses)
        await outbox.close()

    run(seed)
    child = subprocess.Popen(
        [sys.executable, str(script), url, chain.rpc_url, str(chain.home.deployment)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    threshold = random.randint(40, 200)  # operations past PENDING when the kill lands
    db = sqlite3.connect(tmp_path / "outbox.db")
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"started"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            (moved,) = db.execute(
                "SELECT count(*) FROM gateway_operations WHERE status != 'pending'"
            ).fetchone()
            if moved >= threshold:
                break
            time.sleep(0.002)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    (still_open,) = db.execute(  # PENDING, or SUBMITTED in a transaction not mined
        "SELECT count(*) FROM gateway_operations AS o LEFT JOIN gateway_transactions AS t "
        "ON t.tx_hash = o.tx_hash WHERE o.status = 'pending' "
        "OR (o.status = 'submitted' AND t.status IS NOT 'mined')"
    ).fetchone()
    db.close()
    assert still_open > 0, "the kill should land mid-stream"

    async def restart() -> list[Any]:
        outbox = await open_outbox(url)
        sub, rpc = submitter(world, chain, outbox)
        await sub.start()
        await drain(outbox, sub)
        views = list((await outbox.get_many([a.request_id for a in accesses])).values())
        await sub.stop()
        await rpc.aclose()
        await outbox.close()
        return views

    views = run(restart)
    assert {v.status for v in views} == {OperationStatus.CONFIRMED}
    ids = recorded_ids(chain, world, agreement)
    assert set(ids) == {a.request_id for a in accesses}
    assert set(ids.values()) == {1}
