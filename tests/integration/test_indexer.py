"""The indexer against the session's real chain: decoded events equal what happened, pages
shrink on a refused range, crashes and restarts give an identical store, a forked history is
rolled back with an alarm; on SQLite and on PostgreSQL (DUL_TEST_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import structlog
from eth_hash.auto import keccak
from eth_typing import HexStr
from sqlalchemy.engine import make_url

from audit.indexer import Indexer, IndexerMetrics
from audit.migrations import downgrade, migrate
from audit.pipeline import ProcessWorkers
from audit.store import AuditStore, create_store_engine, metadata
from dul.chain.node import ChainNode
from dul.chain.rpc import RpcClient
from dul.chain.testing import TEST_OPERATOR_KEY, ChainHandle, throwaway_chain_settings
from dul.contracts.deploy import deploy
from dul.contracts.ledger import Ledger, connect
from dul.contracts.typed_data import AccessRecord
from dul.contracts.world import World
from dul.domain import (
    AgreementStatus,
    Decision,
    DenyReason,
    Operation,
    OrgStatus,
    ReleaseKind,
    Role,
    Tier,
)
from dul.home import Home
from dul.pg_schema import schema_url
from dul.signing import LocalSigner

# Every test of the session's chain runs on each node but the kill -9 mid catch-up (a process
# killed and restarted over a one-block-per-page catch-up: 173 s on Hardhat's node at load 15,
# about the indexer's process, not the node; the crash tests below cover the restart on both).
pytestmark = pytest.mark.integration

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

StoreFactory = Callable[[], str]


@pytest.fixture
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of empty store URLs of the test's backend: a fresh SQLite file, or on
    PostgreSQL a fresh database `dul_audit_<random>` (a fresh schema of that name when the
    role may not create databases), dropped afterwards: other engineers' tests never share
    our tables."""
    backend = getattr(request, "param", "sqlite")
    admin_url = os.environ.get("DUL_TEST_DATABASE_URL")
    if backend == "postgres" and not admin_url:
        pytest.skip("DUL_TEST_DATABASE_URL is not set (PostgreSQL runs under .ci/run)")
    databases: list[str] = []
    schemas: list[str] = []

    def make() -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'audit-{uuid.uuid4().hex[:8]}.db'}"
        assert admin_url is not None
        name = f"dul_audit_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                try:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                    databases.append(name)
                    return make_url(admin_url).set(database=name).render_as_string(False)
                except sa.exc.ProgrammingError:  # no CREATEDB: a schema of our own instead
                    conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
                    schemas.append(name)
                    return schema_url(admin_url, name)
        finally:
            admin.dispose()

    yield make
    if databases or schemas:
        assert admin_url is not None
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in databases:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for name in schemas:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def make_indexer(
    world: World,
    url: str,
    rpc_url: str,
    *,
    transport: httpx.BaseTransport | None = None,
    **options: Any,
) -> Indexer:
    deployment = world.ledger.deployment
    engine = create_store_engine(url)
    migrate(engine)
    return Indexer(
        AuditStore(engine),
        RpcClient(rpc_url, transport=transport),
        chain_id=deployment.chain_id,
        contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
        poll_interval=0.05,
        **options,
    )


def head(chain: ChainHandle) -> int:
    return int(chain.rpc("eth_blockNumber"), 16)


def record_accesses(world: World, agreement: bytes, count: int) -> list[AccessRecord]:
    records = [world.access_record(agreement) for _ in range(count)]
    world.ledger.transact(
        world.gateway, "AccessLog", "recordAccesses", [r.as_abi() for r in records]
    )
    return records


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


def rows(store: AuditStore, sql: str, **params: Any) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).mappings())


# --- decoding what happened -----------------------------------------------------------------------


@pytest.mark.every_node
@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_the_store_holds_exactly_what_happened(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    terms = world.research_terms(quota=10)
    agreement = world.activate(terms)
    granted = world.access_record(agreement, operation=Operation.EXPORT_RESULT)
    denied = world.access_record(
        agreement, Decision.DENIED, DenyReason.TIER_ABOVE_CEILING, tier=Tier.PSEUDONYMIZED
    )
    ledger = world.ledger
    ledger.transact(
        world.gateway, "AccessLog", "recordAccesses", [granted.as_abi(), denied.as_abi()]
    )
    result = keccak(b"aggregate result")
    ledger.transact(
        world.gateway, "AccessLog", "releaseResult", granted.request.request_id, agreement,
        result, ReleaseKind.AGGREGATE_RESULT, 1234,
    )  # fmt: skip
    ledger.transact(world.regulator, "AgreementRegistry", "suspend", agreement, keccak(b"audit"))

    indexer = make_indexer(world, new_store(), chain.rpc_url)
    summary = indexer.run(to_block=head(chain))
    store = indexer.store
    # every block holding events has its time, from the logs (anvil) or the headers (Hardhat)
    assert rows(store, "SELECT number FROM block WHERE events > 0 AND timestamp IS NULL") == []
    a = hexed(agreement)

    # organizations, members and the dataset of the world
    orgs = {r["org_id"]: r for r in rows(store, "SELECT * FROM organization")}
    assert orgs[hexed(world.hospital)]["name"] == "Hospital A"
    assert orgs[hexed(world.hospital)]["status"] == OrgStatus.ACTIVE
    assert {r["name"] for r in orgs.values()} >= {"Hospital A", "Institute", "Regulator"}
    members = rows(store, "SELECT * FROM member_role WHERE account = :a",
                   a=world.gateway.address.lower())  # fmt: skip
    assert [(m["org_id"], m["role"], m["granted"]) for m in members] == [
        (hexed(world.hospital), Role.GATEWAY, True)
    ]
    (dataset,) = rows(store, "SELECT * FROM dataset WHERE dataset_id = :d", d=hexed(world.dataset))
    fields = dataset["fields"]
    assert (json.loads(fields) if isinstance(fields, str) else fields)[0] == "person.person_id"
    assert dataset["holder_org"] == hexed(world.hospital)
    assert dataset["max_tier"] == Tier.PSEUDONYMIZED

    # the agreement: proposed, signed twice, activated, suspended
    (row,) = rows(store, "SELECT * FROM agreement WHERE agreement_id = :a", a=a)
    assert row["status"] == AgreementStatus.SUSPENDED
    assert (row["holder_org"], row["requester_org"]) == (
        hexed(world.hospital),
        hexed(world.institute),
    )
    assert (row["version"], row["previous_id"], row["quota"]) == (1, None, 10)
    assert row["terms_hash"] == hexed(terms.terms_hash)
    assert row["nonce"] == hex(terms.nonce)
    scope = rows(store, "SELECT * FROM agreement_dataset WHERE agreement_id = :a", a=a)
    assert [(s["dataset_id"], s["field_mask"]) for s in scope] == [(hexed(world.dataset), "0x1e")]
    signatures = rows(
        store, "SELECT * FROM agreement_signature WHERE agreement_id = :a ORDER BY party", a=a
    )
    assert [s["signer"] for s in signatures] == [
        world.steward.address.lower(),
        world.partner_steward.address.lower(),
    ]
    changes = rows(
        store,
        "SELECT * FROM agreement_status_change WHERE agreement_id = :a "
        "ORDER BY block_number, log_index",
        a=a,
    )
    assert [(c["event"], c["by_account"]) for c in changes] == [
        ("AgreementActivated", None),
        ("AgreementSuspended", world.regulator.address.lower()),
    ]
    assert changes[1]["reason"] == hexed(keccak(b"audit"))

    # the accesses: one granted with its signature, one denied with its reason
    accesses = {
        r["access_id"]: r
        for r in rows(store, "SELECT * FROM access_event WHERE agreement_id = :a", a=a)
    }
    g = accesses[hexed(granted.request.request_id)]
    assert (g["decision"], g["reason"], g["tier"], g["operation"]) == (
        Decision.GRANTED, DenyReason.NONE, Tier.DEIDENTIFIED, Operation.EXPORT_RESULT,
    )  # fmt: skip
    assert g["requester"] == world.requester.address.lower()
    assert g["recorder"] == world.gateway.address.lower()
    assert (g["cohort_root"], g["cohort_size"]) == (hexed(keccak(b"cohort")), 42)
    assert g["field_mask"] == "0x6"
    assert g["request_hash"] == hexed(granted.request.request_hash)
    assert (g["sig_r"], g["sig_s"], g["sig_v"]) == (
        hexed(granted.signature[:32]), hexed(granted.signature[32:64]), granted.signature[64],
    )  # fmt: skip
    d = accesses[hexed(denied.request.request_id)]
    assert (d["decision"], d["reason"], d["tier"]) == (
        Decision.DENIED, DenyReason.TIER_ABOVE_CEILING, Tier.PSEUDONYMIZED,
    )  # fmt: skip
    (release,) = rows(store, "SELECT * FROM result_release WHERE agreement_id = :a", a=a)
    assert (release["access_id"], release["result_hash"], release["kind"], release["size"]) == (
        hexed(granted.request.request_id), hexed(result), ReleaseKind.AGGREGATE_RESULT, 1234,
    )  # fmt: skip

    # the raw event table holds every log with its chain reference
    events = rows(store, "SELECT * FROM event WHERE name = 'AccessRecorded' AND tx_hash = :t",
                  t=g["tx_hash"])  # fmt: skip
    assert len(events) == 2
    args = events[0]["args"]
    args = json.loads(args) if isinstance(args, str) else args
    assert args["record"]["requestId"] == hexed(granted.request.request_id)
    assert summary.events == store.count("event") > 0
    assert store.count("event") == len(chain_logs(chain, world, summary.checkpoint_block))
    indexer.close()


def chain_logs(chain: ChainHandle, world: World, to_block: int) -> list[dict[str, Any]]:
    deployment = world.ledger.deployment
    logs: list[dict[str, Any]] = chain.rpc(
        "eth_getLogs",
        {
            "fromBlock": hex(int(deployment.raw["block"])),
            "toBlock": hex(to_block),
            "address": list(deployment.addresses.values()),
        },
    )
    return logs


# --- pages ----------------------------------------------------------------------------------------


class RefusingTransport(httpx.BaseTransport):
    """Forwards to the real node but refuses `eth_getLogs` over more than `max_span` blocks,
    alternately as a JSON-RPC error (Besu/geth style) and as HTTP 413 (a body too big)."""

    def __init__(self, max_span: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.max_span = max_span
        self.refused = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if isinstance(body, list):  # a batch (a page's two header reads): forwarded as it is
            return self.inner.handle_request(request)
        if body["method"] == "eth_getLogs":
            span = int(body["params"][0]["toBlock"], 16) - int(body["params"][0]["fromBlock"], 16)
            if span + 1 > self.max_span:
                self.refused += 1
                if self.refused % 2:
                    return httpx.Response(413, text="request entity too large")
                return httpx.Response(
                    200,
                    json={"jsonrpc": "2.0", "id": body["id"],
                          "error": {"code": -32005, "message": "query exceeds max results"}},
                )  # fmt: skip
        return self.inner.handle_request(request)


@pytest.mark.every_node
def test_pages_shrink_when_the_node_refuses_a_range_and_the_store_is_the_same(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    agreement = world.activate(world.research_terms())
    record_accesses(world, agreement, 5)
    target = head(chain)
    reference = make_indexer(world, new_store(), chain.rpc_url)
    reference.run(to_block=target)

    transport = RefusingTransport(max_span=4)
    indexer = make_indexer(
        world, new_store(), chain.rpc_url, transport=transport, page_size=64, max_page_size=64
    )
    summary = indexer.run(to_block=target)
    assert transport.refused > 0
    assert summary.refused_ranges == transport.refused
    assert indexer.sizer.size <= 64
    assert indexer.store.dump() == reference.store.dump()
    reference.close()
    indexer.close()


@pytest.mark.every_node
def test_a_page_bigger_than_the_log_budget_shrinks_the_next_one(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    agreement = world.activate(world.research_terms())
    record_accesses(world, agreement, 30)
    indexer = make_indexer(world, new_store(), chain.rpc_url, page_size=100_000,
                           max_page_size=100_000, max_logs_per_page=10)  # fmt: skip
    indexer.run(to_block=head(chain))
    assert indexer.sizer.size < 100_000
    indexer.close()


@pytest.mark.every_node
def test_a_reply_over_the_byte_budget_halves_the_page_and_changes_nothing(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    agreement = world.activate(world.research_terms())
    record_accesses(world, agreement, 30)
    target = head(chain)
    reference = make_indexer(world, new_store(), chain.rpc_url)
    reference.run(to_block=target)
    budget = make_indexer(world, new_store(), chain.rpc_url, page_size=1_000,
                          max_page_bytes=20_000, fit_to_gas=False)  # fmt: skip
    summary = budget.run(to_block=target)
    assert summary.refused_ranges > 0
    assert budget.store.dump() == reference.store.dump()
    reference.close()
    budget.close()


@pytest.mark.every_node
def test_a_reply_over_the_byte_budget_keeps_its_whole_blocks_and_changes_nothing(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    """A reply over the budget is not thrown away: the blocks that came whole within its
    first quarter make the page, and the rest of the range is asked for again (the node read
    it once, where a refusal had it read again and again); the store is a fresh index's, and
    the next ranges are fitted to what the cut reply said about the blocks after the page."""
    agreement = world.activate(world.research_terms())
    for _ in range(8):
        record_accesses(world, agreement, 6)
    target = head(chain)
    start = int(world.ledger.deployment.raw["block"])
    reference = make_indexer(world, new_store(), chain.rpc_url)
    reference.run(to_block=target)
    probe = RpcClient(chain.rpc_url)
    probe.request("eth_getLogs", {"fromBlock": hex(start), "toBlock": hex(target),
                                  "address": reference.fetcher.addresses})  # fmt: skip
    whole = probe.reply_bytes
    probe.close()
    cut = make_indexer(world, new_store(), chain.rpc_url, page_size=target - start + 1,
                       max_page_size=target - start + 1, max_page_bytes=whole // 2,
                       fit_to_gas=False)  # fmt: skip
    pages: list[Any] = []
    fetch = cut.fetcher.fetch

    def spy(first: int, last: int) -> Any:
        page = fetch(first, last)
        pages.append((first, last, page))
        return page

    cut.fetcher.fetch = spy  # type: ignore[method-assign]
    summary = cut.run(to_block=target)
    first, last, page = pages[0]
    assert (first, last) == (start, target)
    assert page.over_budget == whole  # the declared length of the reply it was cut from
    assert start < page.last.number < target
    assert page.count > 0
    assert page.reply_bytes <= whole // 8  # a quarter of the budget at most
    assert summary.refused_ranges >= 1
    assert summary.events == reference.store.count("event")
    assert cut.store.dump() == reference.store.dump()
    reference.close()
    cut.close()


# --- crashes and restarts -------------------------------------------------------------------------


class CrashError(Exception):
    """Stands for the process dying between the page's rows and its checkpoint."""


@pytest.mark.every_node
@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_a_crash_between_rows_and_checkpoint_then_a_restart_gives_the_same_store(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    agreement = world.activate(world.research_terms())
    for _ in range(3):
        record_accesses(world, agreement, 4)
    target = head(chain)
    reference = make_indexer(world, new_store(), chain.rpc_url)
    reference.run(to_block=target)

    url = new_store()
    pages = 0
    pages_needed = (target - int(world.ledger.deployment.raw["block"])) // 8
    crash_at = random.randint(1, max(1, pages_needed - 1))

    def crash() -> None:
        nonlocal pages
        pages += 1
        if pages == crash_at:
            raise CrashError

    crashing = make_indexer(world, url, chain.rpc_url, page_size=8, max_page_size=8)
    crashing.before_checkpoint = crash
    with pytest.raises(CrashError):
        crashing.run(to_block=target)
    crashing.close()
    restarted = make_indexer(world, url, chain.rpc_url, page_size=8, max_page_size=8)
    restarted.run(to_block=target)
    assert restarted.store.dump() == reference.store.dump()
    reference.close()
    restarted.close()


@pytest.mark.every_node
@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_worker_processes_give_the_store_one_reader_gives(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    """Pages fetched by two worker processes over disjoint ranges, answered out of order,
    reach the store in block order: the same rows, blocks and checkpoint as one in-process
    reader's. (Ranges refused and handed out again in parts: the refusal tests below, whose
    test transport keeps the fetch in a thread of the same pipeline.)"""
    agreement = world.activate(world.research_terms())
    for count in (3, 9, 1, 6):
        record_accesses(world, agreement, count)
    target = head(chain)
    reference = make_indexer(world, new_store(), chain.rpc_url)
    reference.run(to_block=target)

    pipelined = make_indexer(world, new_store(), chain.rpc_url, fetch_workers=2, page_size=3,
                             max_page_size=3)  # fmt: skip
    summary = pipelined.run(to_block=target)
    workers = pipelined._workers
    assert isinstance(workers, ProcessWorkers)
    assert summary.pages > (target - int(world.ledger.deployment.raw["block"])) // 3
    assert pipelined.store.dump() == reference.store.dump()
    assert pipelined.store.missing_indexes() == []
    reference.close()
    pipelined.close()
    assert [process.exitcode for process in workers.processes] == [0, 0]  # stopped, not killed


@pytest.mark.every_node
@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_a_first_catch_up_builds_the_readers_indexes_at_its_end_even_after_a_crash(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    agreement = world.activate(world.research_terms())
    record_accesses(world, agreement, 4)
    target = head(chain)
    url = new_store()
    crashing = make_indexer(world, url, chain.rpc_url, page_size=8, max_page_size=8)
    pages = 0

    def crash() -> None:
        nonlocal pages
        pages += 1
        if pages == 2:
            raise CrashError

    crashing.before_checkpoint = crash
    with pytest.raises(CrashError):
        crashing.run(to_block=target)
    crashing.close()
    store = AuditStore(create_store_engine(url))
    assert store.count("event") > 0  # a first catch-up, interrupted with rows written
    assert set(store.missing_indexes()) == {
        "ix_access_event_agreement_id_position",
        "ix_access_event_dataset_id_position",
        "ix_access_event_requester_position",
    }
    restarted = make_indexer(world, url, chain.rpc_url)
    restarted.run(to_block=target)
    assert restarted.store.missing_indexes() == []
    assert restarted.store.defer_indexes() is False  # a store with events keeps its indexes
    assert restarted.store.missing_indexes() == []
    if restarted.store.dialect == "sqlite":  # provenance reads by agreement through it again
        with restarted.store.engine.connect() as conn:
            plan = conn.execute(
                sa.text(
                    "EXPLAIN QUERY PLAN SELECT * FROM access_event WHERE agreement_id = :a "
                    "ORDER BY block_number, tx_index, log_index LIMIT 5"
                ),
                {"a": hexed(agreement)},
            ).all()
        assert "ix_access_event_agreement_id_position" in " ".join(str(r[-1]) for r in plan)
    store.engine.dispose()
    restarted.close()


def test_kill_9_mid_catch_up_then_a_restart_gives_the_same_store(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    agreement = world.activate(world.research_terms())
    record_accesses(world, agreement, 20)
    target = head(chain)
    reference = make_indexer(world, new_store(), chain.rpc_url)
    reference.run(to_block=target)
    start = int(world.ledger.deployment.raw["block"])

    url = new_store()
    env = {
        **os.environ,
        **chain.env,
        "DUL_AUDIT_DATABASE_URL": url,
        "DUL_AUDIT_PAGE_SIZE": "1",
        "DUL_AUDIT_MAX_PAGE_SIZE": "1",
        "DUL_AUDIT_COMMIT_SECONDS": "0.01",  # the checkpoint moves page by page: seen mid-way
    }
    command = [sys.executable, "-m", "audit.cli", "index", "--once", "--to-block", str(target)]
    engine = create_store_engine(url)
    kill_after = start + random.randint(5, max(6, (target - start) // 2))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with engine.connect() as conn:
                    at = conn.execute(sa.text("SELECT block_number FROM checkpoint")).scalar()
            except sa.exc.OperationalError:  # tables not created yet
                at = None
            if at is not None and at >= kill_after:
                break
            time.sleep(0.005)
        process.kill()  # SIGKILL: no clean-up of any kind
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    engine.dispose()
    interrupted = make_indexer(world, url, chain.rpc_url)
    assert interrupted.store.checkpoint() is not None
    killed_at = interrupted.store.checkpoint()
    assert killed_at is not None
    assert killed_at.block_number < target, "killed too late"
    # one block per page from the deployment on: minutes on a busy machine
    finished = subprocess.run(command, env=env, capture_output=True, timeout=240, check=False)
    assert finished.returncode == 0, finished.stderr.decode()
    assert interrupted.store.dump() == reference.store.dump()
    reference.close()
    interrupted.close()


def test_the_indexer_follows_across_a_node_restart(tmp_path: Path, new_store: StoreFactory) -> None:
    """A private chain (restarting the session's would disturb other modules): the follower
    keeps retrying while the node is down and picks up what happens after it is back."""
    operator = LocalSigner(HexStr(TEST_OPERATOR_KEY))
    home = Home(tmp_path / "home").ensure()
    node = ChainNode(home, throwaway_chain_settings(operator=operator.address))
    status = node.start()
    assert status.rpc_url is not None
    stop = threading.Event()
    try:
        w3 = connect(status.rpc_url)
        deployment, _ = deploy(w3, operator, home.deployment, admin_delay=5)
        world = World(Ledger(w3, deployment), operator).build()
        indexer = make_indexer(world, new_store(), status.rpc_url)
        follower = threading.Thread(target=lambda: indexer.run(follow=True, stop=stop))
        with structlog.testing.capture_logs() as logs:
            follower.start()
            time.sleep(0.3)
            node.stop()
            time.sleep(1.0)  # the follower meets a dead endpoint
            node.start()
            agreement = hexed(world.activate(world.research_terms()))
            deadline = time.monotonic() + 20
            active = "SELECT 1 FROM agreement WHERE agreement_id = :a AND status = :s"
            while time.monotonic() < deadline and not rows(
                indexer.store, active, a=agreement, s=int(AgreementStatus.ACTIVE)
            ):
                time.sleep(0.05)
            stop.set()
            follower.join(10)
        assert any(e["event"] == "audit.node_unavailable" for e in logs)
        assert not any(e["event"] == "audit.reorg" for e in logs)  # the ledger survived
        (row,) = rows(
            indexer.store, "SELECT status FROM agreement WHERE agreement_id = :a", a=agreement
        )
        assert row["status"] == AgreementStatus.ACTIVE
        indexer.close()
    finally:
        stop.set()
        node.stop()


# --- reorgs ---------------------------------------------------------------------------------------


@pytest.mark.every_node
@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_a_forked_history_is_rolled_back_to_the_common_ancestor_with_an_alarm(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    fork_base = head(chain)
    snapshot = chain.node_rpc("evm_snapshot")
    lost = world.activate(world.research_terms())
    record_accesses(world, lost, 3)
    metrics = IndexerMetrics()
    url = new_store()
    indexer = make_indexer(world, url, chain.rpc_url, metrics=metrics)
    before = indexer.run(to_block=head(chain))
    assert rows(indexer.store, "SELECT 1 FROM agreement WHERE agreement_id = :a", a=hexed(lost))

    assert chain.node_rpc("evm_revert", snapshot) is True
    # anvil may put the reverted transactions back in its pool and re-mine them into blocks
    # identical to the old ones (same second, same contents): then no history changed at all.
    # (On Hardhat's node `chain.node_rpc` drops its pending transactions one by one.)
    chain.node_rpc("anvil_dropAllTransactions")
    kept = world.activate(world.research_terms())
    record_accesses(world, kept, 2)
    while head(chain) <= before.checkpoint_block:  # the new history outgrows the old one
        time.sleep(0.1)
    target = head(chain)
    with structlog.testing.capture_logs() as logs:
        after = indexer.run(to_block=target)
    alarms = [e for e in logs if e["event"] == "audit.reorg"]
    assert len(alarms) == 1
    assert alarms[0]["log_level"] == "error"
    # a verified common block at or below the fork; the first stored block above it diverged
    assert alarms[0]["ancestor"] <= fork_base < alarms[0]["first_diverged"]
    assert after.reorgs == 1
    assert metrics.registry.get_sample_value("dul_audit_reorgs_total") == 1
    assert rows(indexer.store, "SELECT 1 FROM agreement WHERE agreement_id = :a",
                a=hexed(lost)) == []  # fmt: skip
    assert rows(indexer.store, "SELECT 1 FROM agreement WHERE agreement_id = :a", a=hexed(kept))
    (reorg,) = rows(indexer.store, "SELECT * FROM reorg")
    assert reorg["checkpoint_number"] == before.checkpoint_block
    assert reorg["removed_events"] > 0

    fresh = make_indexer(world, new_store(), chain.rpc_url)
    fresh.run(to_block=target)
    assert indexer.store.dump() == fresh.store.dump()
    indexer.close()
    fresh.close()


@pytest.mark.every_node
def test_a_history_shorter_than_the_checkpoint_is_rolled_back_too(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    snapshot = chain.node_rpc("evm_snapshot")
    lost = world.activate(world.research_terms())
    indexer = make_indexer(world, new_store(), chain.rpc_url)
    indexer.run(to_block=head(chain))
    assert chain.node_rpc("evm_revert", snapshot) is True
    # anvil may put the reverted transactions back in its pool and re-mine them into blocks
    # identical to the old ones (same second, same contents): then no history changed at all.
    chain.node_rpc("anvil_dropAllTransactions")
    with structlog.testing.capture_logs() as logs:
        indexer.run(to_block=head(chain))  # the node's head is now below the checkpoint
    assert [e["event"] for e in logs].count("audit.reorg") == 1
    assert rows(indexer.store, "SELECT 1 FROM agreement WHERE agreement_id = :a",
                a=hexed(lost)) == []  # fmt: skip
    indexer.close()


@pytest.mark.every_node
def test_a_store_of_another_deployment_is_refused(
    chain: ChainHandle, world: World, new_store: StoreFactory
) -> None:
    from audit.indexer import StoreMismatchError

    url = new_store()
    indexer = make_indexer(world, url, chain.rpc_url)
    indexer.run(to_block=int(world.ledger.deployment.raw["block"]))
    other = make_indexer(world, url, chain.rpc_url)
    other.contracts = {**other.contracts, "AccessLog": "0x" + "11" * 20}
    with pytest.raises(StoreMismatchError):
        other.run()
    indexer.close()
    other.close()


# --- migrations -----------------------------------------------------------------------------------


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_migrations_build_the_models_schema_and_go_back_down(new_store: StoreFactory) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    url = new_store()
    migrate(url)
    migrate(url)  # idempotent
    engine = create_store_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert [d for d in diff if d[0] != "remove_table" or d[1].name != "audit_alembic_version"] == []
    downgrade(url)
    assert set(sa.inspect(engine).get_table_names()) <= {"audit_alembic_version"}
    engine.dispose()


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_migration_0015_keeps_every_events_arguments_and_the_store_digest(
    new_store: StoreFactory,
) -> None:
    """`event.args` becomes JSON text on PostgreSQL (it was `jsonb`, which reorders keys): the
    values read back and the digest a signed checkpoint holds are the same after the upgrade
    and after a downgrade."""
    from audit.checkpoints import store_digest

    url = new_store()
    migrate(url, "0014")
    engine = create_store_engine(url)
    wide = 2**256 - 1
    args = [
        {"zeta": 1, "alpha": {"deadline": wide, "list": [3, 1, 2]}, "m": "0x" + "ab" * 32},
        {"b": True, "a": None, "text": 'naïve \\x00 "quoted"'},
    ]
    with engine.begin() as conn:
        for n, value in enumerate(args):
            conn.execute(
                sa.text(
                    "INSERT INTO event (block_number, tx_index, log_index, tx_hash, block_hash, "
                    "contract, address, name, args) VALUES (:b, 0, :i, :tx, :bh, 'AccessLog', "
                    ":a, 'AccessRecorded', :args)"
                ),
                {"b": 5, "i": n, "tx": "0x" + "01" * 32, "bh": "0x" + "02" * 32,
                 "a": "0x" + "03" * 20, "args": json.dumps(value)},
            )  # fmt: skip

    def stored() -> tuple[list[Any], dict[int, str]]:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT args FROM event ORDER BY log_index")).scalars()
            values = [json.loads(v) if isinstance(v, str) else v for v in rows]
            return values, store_digest(conn, [5])

    before = stored()
    assert before[0] == args
    migrate(url)
    if engine.dialect.name == "postgresql":
        column = next(c for c in sa.inspect(engine).get_columns("event") if c["name"] == "args")
        assert type(column["type"]).__name__ == "JSON"
    assert stored() == before
    downgrade(url, "0014")
    assert stored() == before
    engine.dispose()


@pytest.mark.parametrize("new_store", BACKENDS, indirect=True)
def test_migration_0014_keys_an_artifacts_release_by_its_agreement_too(
    new_store: StoreFactory,
) -> None:
    """A store at 0013 keeps its rows, and then takes one request id and result under a second
    agreement for the same artifact (two releases on chain)."""
    url = new_store()
    migrate(url, "0013")
    engine = create_store_engine(url)
    row = {"f": "0x" + "a1" * 32, "k": "0x" + "ac" * 32, "r": "0x" + "5e" * 32, "b": 7}
    insert = sa.text(
        "INSERT INTO artifact_release_parent (artifact_id, access_id, result_hash, "
        "agreement_id, block_number) VALUES (:f, :k, :r, :g, :b)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {**row, "g": "0x" + "01" * 32})
    migrate(url)
    key = sa.inspect(engine).get_pk_constraint("artifact_release_parent")["constrained_columns"]
    assert sorted(key) == ["access_id", "agreement_id", "artifact_id", "result_hash"]
    with engine.begin() as conn:
        conn.execute(insert, {**row, "g": "0x" + "02" * 32})
        stored = conn.execute(
            sa.text("SELECT agreement_id, block_number FROM artifact_release_parent "
                    "ORDER BY agreement_id")
        ).all()  # fmt: skip
    assert [tuple(r) for r in stored] == [("0x" + "01" * 32, 7), ("0x" + "02" * 32, 7)]
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(insert, {**row, "g": "0x" + "02" * 32})
    engine.dispose()
