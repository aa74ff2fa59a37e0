"""`verify` against the session's real chain: a faithful store passes; an edited, deleted or
inserted row, a wrong block hash, a forged signature and a broken agreement rule are each
found and named (check, table, position); the CLI exits non-zero when anything is off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_hash.auto import keccak
from typer.testing import CliRunner

from audit.cli import app as audit_cli
from audit.cohorts import close_sources, open_sources
from audit.events import AUDITED_CONTRACTS
from audit.store import COHORT_COLUMNS, COLUMNS, store_session
from audit.testing import (
    drop_stores,
    index_into,
    index_with_cohorts,
    make_cohort_store,
    make_store_url,
    private_world,
    put_cohort,
    record_story,
)
from audit.verify import VerifyReport, access_request_digest, verify_store
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.typed_data import AccessRequest, access_log_domain
from dul.contracts.world import World
from dul.domain import Operation, Tier

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


# --- the same story and stores as test_audit_provenance.py -----------------------------------


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


# --- tests ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A deployment of this module's own on the session's chain: "a faithful store verifies"
    is about this story, whatever other tests record on the session's deployment (a gateway
    test's consent-filtered accesses, whose leaves live in its gateway's store, would be
    `cohort_leaves_unavailable` here). Built after the session's world, whose members (the
    same keys) the permissioned endpoint admits."""
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("verify") / "deployment.json")


@pytest.fixture(scope="module")
def recorded(world: World) -> dict[str, str]:
    """One story on chain for the module (each test indexes its own store of it)."""
    agreement, granted, exported, denied, result = record_story(world)
    return {
        "agreement": hexed(agreement),
        "granted": hexed(granted.request.request_id),
        "exported": hexed(exported.request.request_id),
        "denied": hexed(denied.request.request_id),
        "result": hexed(result),
    }


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest,
    world: World,
    chain: ChainHandle,
    recorded: dict[str, str],
    tmp_path: Path,
) -> Iterator[tuple[str, sa.Engine]]:
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(request.param, tmp_path, cleanup)
    engine = index_into(world.ledger.deployment, chain.rpc_url, url)
    yield url, engine
    engine.dispose()
    drop_stores(cleanup)


def run_verify(engine: sa.Engine, node: ChainHandle, world: World, **options: Any) -> VerifyReport:
    rpc = RpcClient(node.rpc_url)
    try:
        return verify_store(
            engine, rpc, start_block=int(world.ledger.deployment.raw["block"]), workers=1,
            **{"deployment": world.ledger.deployment.addresses, **options},
        )  # fmt: skip
    finally:
        rpc.close()


def execute(engine: sa.Engine, sql: str, **params: object) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def position_of(engine: sa.Engine, table: str, column: str, value: str) -> str:
    with engine.connect() as conn:
        b, t, i = conn.execute(
            sa.text(
                f"SELECT block_number, tx_index, log_index FROM {table} WHERE {column} = :v"  # noqa: S608 - test literals
            ),
            {"v": value},
        ).one()
    return f"{b}/{t}/{i}"


def findings(report: VerifyReport) -> set[tuple[str, str | None, str | None]]:
    return {(f.check, f.table, f.position or f.key) for f in report.findings}


def test_a_faithful_store_verifies(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World
) -> None:
    report = run_verify(store[1], chain, world)
    assert report.ok, report.findings
    assert report.findings_total == 0
    assert report.checked["accesses"] >= 3
    assert report.checked["access_signatures"] == report.checked["accesses"]
    assert report.checked["agreement_signatures"] >= 2
    assert report.checked["rows.access_event"] == report.checked["accesses"]
    assert report.skipped == []


def test_an_edited_row_is_named(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    engine = store[1]
    execute(engine, "UPDATE access_event SET cohort_size = 7 WHERE access_id = :a",
            a=recorded["granted"])  # fmt: skip
    report = run_verify(engine, chain, world)
    assert not report.ok
    where = position_of(engine, "access_event", "access_id", recorded["granted"])
    (differs,) = [f for f in report.findings if f.check == "row_differs"]
    assert (differs.table, differs.position) == ("access_event", where)
    assert differs.details["columns"] == {"cohort_size": {"store": 7, "chain": 42}}


def test_an_edited_tier_also_breaks_the_requester_signature(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    engine = store[1]
    execute(engine, "UPDATE access_event SET tier = :t WHERE access_id = :a",
            t=int(Tier.AGGREGATE), a=recorded["granted"])  # fmt: skip
    where = position_of(engine, "access_event", "access_id", recorded["granted"])
    report = run_verify(engine, chain, world)
    assert ("row_differs", "access_event", where) in findings(report)
    assert ("access_signature_invalid", "access_event", where) in findings(report)
    # the store-only checks find the forgery without the chain, too
    offline = run_verify(engine, chain, world, chain=False)
    assert ("access_signature_invalid", "access_event", where) in findings(offline)
    assert offline.skipped == ["chain comparison (no node given)"]


def test_a_deleted_row_is_named(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    engine = store[1]
    where = position_of(engine, "result_release", "result_hash", recorded["result"])
    execute(engine, "DELETE FROM result_release WHERE result_hash = :r", r=recorded["result"])
    report = run_verify(engine, chain, world)
    assert findings(report) == {("row_missing", "result_release", where)}


def test_an_inserted_row_is_named(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    engine = store[1]
    with engine.begin() as conn:
        row = dict(
            conn.execute(
                sa.text("SELECT * FROM access_event WHERE access_id = :a"),
                {"a": recorded["granted"]},
            )
            .mappings()
            .one()
        )
        row.update(access_id="0x" + "99" * 32, log_index=row["log_index"] + 1000)
        columns = ", ".join(row)
        conn.execute(
            sa.text(f"INSERT INTO access_event ({columns}) VALUES "  # noqa: S608 - test literals
                    f"({', '.join(':' + c for c in row)})"),
            row,
        )  # fmt: skip
    where = f"{row['block_number']}/{row['tx_index']}/{row['log_index']}"
    report = run_verify(engine, chain, world)
    assert ("row_not_on_chain", "access_event", where) in findings(report)
    # the forged access also fails its signature (the digest covers the request id)
    assert ("access_signature_invalid", "access_event", where) in findings(report)


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("table", "edit"),
    [
        ("agreement", "UPDATE agreement SET status = 'abc' WHERE agreement_id = :g"),
        ("dataset", "UPDATE dataset SET fields = 'not json'"),
        ("access_event", "UPDATE access_event SET tier = 'high' WHERE access_id = :a"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_finding_not_a_crash(
    store: tuple[str, sa.Engine],
    chain: ChainHandle,
    world: World,
    recorded: dict[str, str],
    table: str,
    edit: str,
) -> None:
    """SQLite keeps any value in any column: a hand edit that breaks a column's type is named
    like any other edit, and every other check still runs (no traceback, no 500)."""
    engine = store[1]
    params = {"g": recorded["agreement"], "a": recorded["granted"]}
    execute(engine, edit, **{k: v for k, v in params.items() if f":{k}" in edit})
    report = run_verify(engine, chain, world)
    assert not report.ok
    assert table in {f.table for f in report.findings}, report.findings
    assert "accesses_and_signatures" in report.seconds  # the access pass ran to its end


def test_a_store_emptied_and_pointed_at_other_contracts_is_named(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World
) -> None:
    """The store's record of which contracts it indexed is checked against the deployment
    manifest: emptied, with its checkpoint naming addresses that never emitted a log, it
    would otherwise compare nothing with nothing and verify."""
    engine = store[1]
    real = {n: a.lower() for n, a in world.ledger.deployment.addresses.items()}
    fake = {name: f"0x{index:040x}" for index, name in enumerate(sorted(real), 1)}
    with engine.begin() as conn:
        for table in (*COLUMNS, *COHORT_COLUMNS, "block"):
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 - test literals
        checkpoint = sa.table("checkpoint", sa.column("contracts", sa.JSON))
        conn.execute(checkpoint.update().values(contracts=fake))
    report = run_verify(engine, chain, world, deployment=real)
    assert not report.ok
    named = {f.key for f in report.findings if f.check == "contracts_differ"}
    assert named == set(real) & set(AUDITED_CONTRACTS)
    assert report.findings_by_check.get("row_missing", 0) > 0  # the real trail, named missing


def test_without_a_deployment_manifest_verify_claims_no_more_than_it_checked(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """With no manifest, the store's own word says which contracts and from which block it
    indexed: emptied and pointed at addresses that never emitted a log, it compares nothing
    with nothing. That is no verdict that the store is the chain's: skipped, named."""
    url, engine = store
    real = {n: a.lower() for n, a in world.ledger.deployment.addresses.items()}
    fake = {name: f"0x{0xDEAD0000 + index:040x}" for index, name in enumerate(sorted(real), 1)}
    with engine.begin() as conn:
        for table in (*COLUMNS, *COHORT_COLUMNS, "block"):
            conn.execute(sa.text(f"DELETE FROM {table}"))  # noqa: S608 - test literals
        checkpoint = sa.table("checkpoint", sa.column("contracts", sa.JSON))
        conn.execute(checkpoint.update().values(contracts=fake))
    rpc = RpcClient(chain.rpc_url)
    try:
        report = verify_store(engine, rpc, workers=1)
    finally:
        rpc.close()
    assert report.findings_total == 0  # nothing to compare: so it must say what it skipped
    assert any("deployment manifest" in s for s in report.skipped), report.skipped
    assert any("deployment block" in s for s in report.skipped), report.skipped
    monkeypatch.setenv("DUL_AUDIT_DEPLOYMENT_PATH", str(tmp_path / "no-manifest.json"))
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_BLOCKS", "10000000")
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_S", "31536000")
    out = CliRunner().invoke(audit_cli, ["verify", "--database-url", url,
                                         "--rpc-url", chain.rpc_url])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "OK as far as checked" in out.stdout


def test_cohort_rows_deleted_under_an_agreement_that_needs_no_consent_are_found(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    """A training access's cohort needs no consent, so no cohort store is required for it;
    but when the hospital's store holds its subjects and the audit store lists none, the
    patients' reports would not show the access: with the stores given, verify asks them."""
    agreement = world.activate(world.training_terms(quota=10))
    record = world.access_record(agreement, tier=Tier.MODEL_PARAMETERS, operation=Operation.TRAIN)
    cohorts = make_cohort_store(tmp_path / "gateway.db")
    subjects = [keccak(f"trained patient {i}".encode()) for i in range(3)]
    root, size = put_cohort(cohorts, record.request.request_id, subjects)
    record = replace(record, cohort_root=root, cohort_size=size)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [record.as_abi()])
    cleanup: list[tuple[str, str]] = []
    url = make_store_url("sqlite", tmp_path, cleanup)
    engine, indexer = index_with_cohorts(world.ledger.deployment, chain.rpc_url, url, [cohorts])
    indexer.close()
    access = hexed(record.request.request_id)
    sources = open_sources([cohorts])
    try:
        assert run_verify(engine, chain, world, cohort_sources=sources).ok
        execute(engine, "DELETE FROM cohort_member WHERE access_id = :a", a=access)
        execute(engine, "DELETE FROM cohort WHERE access_id = :a", a=access)
        report = run_verify(engine, chain, world, cohort_sources=sources)
        where = position_of(engine, "access_event", "access_id", access)
        assert findings(report) == {("cohort_rows_missing", "cohort", where)}
        execute(engine, "INSERT INTO cohort (block_number, tx_index, log_index, access_id, "
                "status, source, leaves) VALUES (:b, :t, :i, :a, 'leaves_unavailable', NULL, 0)",
                b=int(where.split("/")[0]), t=int(where.split("/")[1]),
                i=int(where.split("/")[2]), a=access)  # fmt: skip
        report = run_verify(engine, chain, world, cohort_sources=sources)
        assert findings(report) == {("cohort_rows_missing", "cohort", where)}
    finally:
        close_sources(sources)
        engine.dispose()
        drop_stores(cleanup)


def test_a_wrong_block_hash_is_found(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    engine = store[1]
    block = position_of(engine, "access_event", "access_id", recorded["granted"]).split("/")[0]
    execute(engine, "UPDATE block SET hash = :h WHERE number = :n", h="0x" + "ee" * 32,
            n=int(block))  # fmt: skip
    report = run_verify(engine, chain, world)
    assert ("block_hash_mismatch", "block", block) in findings(report)


def test_an_edited_block_time_is_found(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    """The store's block times date every access in the reports, the FHIR AuditEvents and
    the patient's transparency report, and judge each grant's window: a time moved an hour
    (still inside the window), on a block with events and on the checkpoint block, or taken
    away (a grant whose window goes unchecked), is the chain's no longer."""
    engine = store[1]
    block = int(position_of(engine, "access_event", "access_id", recorded["granted"]).split("/")[0])
    with engine.connect() as conn:
        last = conn.execute(sa.text("SELECT block_number FROM checkpoint")).scalar_one()
    for number in (block, last):
        execute(engine, "UPDATE block SET timestamp = timestamp + 3600 WHERE number = :n",
                n=number)  # fmt: skip
    report = run_verify(engine, chain, world)
    assert findings(report) == {("row_differs", "block", str(block)),
                                ("row_differs", "block", str(last))}  # fmt: skip
    execute(engine, "UPDATE block SET timestamp = NULL WHERE number = :n", n=block)
    report = run_verify(engine, chain, world)
    assert ("row_differs", "block", str(block)) in findings(report)


def test_a_wrong_checkpoint_hash_is_found(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World
) -> None:
    engine = store[1]
    execute(engine, "UPDATE checkpoint SET block_hash = :h", h="0x" + "ee" * 32)
    report = run_verify(engine, chain, world)
    assert {f.check for f in report.findings} >= {"checkpoint_mismatch"}


def test_edited_agreement_terms_break_digest_signatures_and_invariants(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    """Narrowing the stored scope makes the recorded grants break the (stored) agreement: the
    invariant pass, the digest and the party signatures all say so, besides the chain."""
    engine = store[1]
    agreement = recorded["agreement"]
    execute(engine, "UPDATE agreement_dataset SET field_mask = '0x2' WHERE agreement_id = :a",
            a=agreement)  # fmt: skip
    execute(engine, "UPDATE agreement SET quota = 1 WHERE agreement_id = :a", a=agreement)
    report = run_verify(engine, chain, world)
    checks = {f.check for f in report.findings}
    assert checks >= {
        "row_differs",
        "fields_not_allowed",
        "quota_exceeded",
        "agreement_digest_mismatch",
        "agreement_signature_invalid",
    }
    granted = position_of(engine, "access_event", "access_id", recorded["granted"])
    assert ("fields_not_allowed", "access_event", granted) in findings(report)
    assert ("quota_exceeded", "agreement", agreement) in findings(report)


def test_a_release_from_a_denied_access_is_found(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    engine = store[1]
    where = position_of(engine, "result_release", "result_hash", recorded["result"])
    execute(engine, "UPDATE result_release SET access_id = :d WHERE result_hash = :r",
            d=recorded["denied"], r=recorded["result"])  # fmt: skip
    report = run_verify(engine, chain, world, chain=False)
    assert findings(report) == {("release_without_grant", "result_release", where)}
    (found,) = report.findings
    assert f"{recorded['denied']}@{recorded['agreement']}" in found.message


def test_a_grant_while_suspended_is_found(
    store: tuple[str, sa.Engine], chain: ChainHandle, world: World, recorded: dict[str, str]
) -> None:
    """A status change moved before the grants (history rewritten in the store)."""
    engine = store[1]
    agreement = recorded["agreement"]
    granted = position_of(engine, "access_event", "access_id", recorded["granted"])
    execute(engine, "UPDATE agreement_status_change SET status = 3, event = 'AgreementSuspended' "
            "WHERE agreement_id = :a", a=agreement)  # fmt: skip
    report = run_verify(engine, chain, world, chain=False)
    assert ("access_while_not_active", "access_event", granted) in findings(report)


def test_the_fast_access_digest_equals_the_typed_data_digest(world: World) -> None:
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    request = AccessRequest(
        request_id=b"\x01" * 32, agreement_id=b"\x02" * 32, dataset_id=b"\x03" * 32,
        field_mask=(1 << 200) | 5, tier=Tier.PSEUDONYMIZED, operation=Operation.TRAIN,
        request_hash=b"\x04" * 32, deadline=2**63, authorization_ref=b"\x05" * 32,
    )  # fmt: skip
    columns = (
        hexed(request.request_id), hexed(request.agreement_id), hexed(request.dataset_id),
        hex(request.field_mask), int(request.tier), int(request.operation),
        hexed(request.request_hash), hexed(request.authorization_ref), request.deadline,
    )  # fmt: skip
    assert access_request_digest(domain.separator, columns) == request.digest(domain)


def test_the_cli_exits_non_zero_and_names_the_row(
    store: tuple[str, sa.Engine],
    chain: ChainHandle,
    world: World,
    recorded: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    url, engine = store
    # a static store: no indexer follows the chain here, so its lag is not judged
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_BLOCKS", "10000000")
    manifest = tmp_path / "deployment.json"  # the store's own deployment, not DUL_HOME's
    manifest.write_text(json.dumps(world.ledger.deployment.raw))
    monkeypatch.setenv("DUL_AUDIT_DEPLOYMENT_PATH", str(manifest))
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_S", "31536000")
    options = ["--database-url", url, "--rpc-url", chain.rpc_url,
               "--from-block", str(world.ledger.deployment.raw["block"])]  # fmt: skip
    runner = CliRunner()
    clean = runner.invoke(audit_cli, ["verify", "--json", *options])
    assert clean.exit_code == 0, clean.output
    assert json.loads(clean.stdout.splitlines()[-1])["ok"] is True
    offline = runner.invoke(audit_cli, ["verify", "--no-chain", *options])
    assert offline.exit_code == 0, offline.output
    assert "OK as far as checked" in offline.stdout
    assert "every rule held" not in offline.stdout  # no chain read: no claim it is the chain's
    execute(engine, "DELETE FROM access_event WHERE access_id = :a", a=recorded["denied"])
    broken = runner.invoke(audit_cli, ["verify", *options])
    assert broken.exit_code == 1
    assert "row_missing" in broken.stdout
    assert "access_event" in broken.stdout
    as_json = runner.invoke(audit_cli, ["verify", "--json", *options])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout.splitlines()[-1])["findings_by_check"] == {"row_missing": 1}


def test_an_audit_setting_out_of_range_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_BLOCKS", "999999999")
    result = CliRunner().invoke(audit_cli, ["verify", "--no-chain"])
    assert result.exit_code == 2, result.exception
    assert "error [config_error]" in result.output
    assert "index_behind_blocks" in result.output
    assert "Traceback" not in result.output


def test_an_incident_id_beyond_the_store_s_integers_is_a_usage_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with store_session(url):
        pass  # a migrated, empty store
    result = CliRunner().invoke(
        audit_cli, ["acknowledge", str(2**80), "--reason", "drill", "--database-url", url]
    )
    assert result.exit_code == 2, result.exception
    assert not isinstance(result.exception, OverflowError)
