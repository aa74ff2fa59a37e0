"""On the real chain: the widest record AccessLog accepts — a denial (no agreement rule
applies) with every field at its extreme: a 256-bit field mask of all ones, a cohort of
2^32 - 1 under an all-ones root, all-ones request hash and authorization reference, the last
tier, operation and deny reason, and the latest deadline the contract allows (90 days) — and a
release of 2^64 - 1 bytes is indexed, read back exactly and verified with no finding on SQLite
and PostgreSQL. (Every event type at every field's extreme, beyond what the contracts accept,
is `tests/unit/test_audit_extremes.py`.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy as sa

from audit.testing import drop_stores, index_into, make_store_url, private_world
from audit.verify import verify_store
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.typed_data import AccessRecord
from dul.contracts.world import World
from dul.domain import Decision, DenyReason, Operation, Tier

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

ONES = b"\xff" * 32


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("extremes") / "deployment.json")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    cleanup: list[tuple[str, str]] = []
    yield make_store_url(str(request.param), tmp_path, cleanup)
    drop_stores(cleanup)


@pytest.fixture(scope="module")
def recorded(world: World) -> tuple[AccessRecord, AccessRecord, int]:
    """(the widest denial, a granted export, the denial's deadline), on chain once."""
    agreement = world.activate(world.research_terms(quota=5))
    latest = int(time.time()) + 90 * 86_400 - 120  # the contract's ceiling, less clock skew
    record = world.access_record(
        agreement, Decision.DENIED, max(DenyReason), field_mask=2**256 - 1,
        tier=max(Tier), operation=max(Operation), request_hash=ONES, authorization_ref=ONES,
        deadline=latest,
    )  # fmt: skip
    record = replace(record, cohort_root=ONES, cohort_size=2**32 - 1)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [record.as_abi()])
    granted = world.access_record(agreement, operation=Operation.EXPORT_RESULT)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [granted.as_abi()])
    world.ledger.transact(
        world.gateway, "AccessLog", "releaseResult", granted.request.request_id, agreement,
        ONES, 0, 2**64 - 1,
    )  # fmt: skip
    return record, granted, latest


def test_the_widest_record_the_chain_accepts_indexes_and_verifies(
    chain: ChainHandle,
    world: World,
    store_url: str,
    recorded: tuple[AccessRecord, AccessRecord, int],
) -> None:
    record, granted, latest = recorded
    engine = index_into(world.ledger.deployment, chain.rpc_url, store_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                sa.text("SELECT field_mask, cohort_size, deadline, tier, operation, reason "
                        "FROM access_event WHERE access_id = :a"),
                {"a": "0x" + record.request.request_id.hex()},
            ).one()  # fmt: skip
            size = conn.execute(
                sa.text("SELECT size FROM result_release WHERE access_id = :a"),
                {"a": "0x" + granted.request.request_id.hex()},
            ).scalar_one()
        assert tuple(row) == (hex(2**256 - 1), 2**32 - 1, latest, max(Tier), max(Operation),
                              max(DenyReason))  # fmt: skip
        assert size == 2**64 - 1
        start = int(world.ledger.deployment.raw["block"])
        rpc = RpcClient(chain.rpc_url)
        try:
            report = verify_store(engine, rpc, start_block=start, workers=1)
        finally:
            rpc.close()
        assert report.ok is True, report.findings
        assert report.checked["accesses"] == 2
    finally:
        engine.dispose()
