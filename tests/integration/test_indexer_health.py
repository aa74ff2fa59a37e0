"""A stalled indexer is never "verified", and history rewrites are findings, on the session's
chain with a deployment of this module's own:

- an event the store refuses (the indexer's `apply_check` seam) is quarantined with its
  position and error, indexing goes on past it, the metric counts it, `verify` reports it (and
  only it), `/readyz` is 503 naming it, `/metrics` shows it;
- a checkpoint behind the head is `index_behind` past the thresholds, in verify and `/readyz`;
- a rollback (evm_snapshot / evm_revert) is kept as an incident with the old and new hashes and
  the agreements, accesses and consents that vanished; verify reports it until `dul audit
  acknowledge` records who, when and why, then lists it as a note.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audit.app import create_app
from audit.cli import app as audit_cli
from audit.events import DecodedEvent
from audit.health import indexer_health
from audit.indexer import Indexer, IndexerMetrics
from audit.migrations import migrate
from audit.settings import AuditSettings
from audit.store import AuditStore, create_store_engine
from audit.testing import (
    audit_token,
    bearer,
    drop_stores,
    make_store_url,
    private_world,
    record_consents,
    subject_of,
    with_token_file,
)
from audit.verify import VerifyReport, verify_store
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.world import World

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

BEHIND_BLOCKS, BEHIND_S = 10_000_000, 31_536_000
"""Thresholds no static store of a test exceeds (nothing follows the chain here)."""


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("health") / "deployment.json")


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


def head(chain: ChainHandle) -> int:
    return int(chain.rpc("eth_blockNumber"), 16)


def make_indexer(world: World, url: str, rpc_url: str, **options: Any) -> Indexer:
    engine = create_store_engine(url)
    migrate(engine)
    deployment = world.ledger.deployment
    return Indexer(
        AuditStore(engine), RpcClient(rpc_url), chain_id=deployment.chain_id,
        contracts=deployment.addresses, start_block=int(deployment.raw["block"]),
        poll_interval=0.05, **options,
    )  # fmt: skip


def verify(world: World, indexer: Indexer, chain: ChainHandle, **options: Any) -> VerifyReport:
    rpc = RpcClient(chain.rpc_url)
    try:
        return verify_store(
            indexer.store.engine, rpc, start_block=int(world.ledger.deployment.raw["block"]),
            workers=1, **options,
        )  # fmt: skip
    finally:
        rpc.close()


@pytest.fixture
def manifest(world: World, tmp_path: Path) -> Path:
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(world.ledger.deployment.raw))
    return path


def test_an_unapplicable_event_is_quarantined_and_indexing_goes_on(
    chain: ChainHandle, world: World, tmp_path: Path, manifest: Path
) -> None:
    agreement = world.activate(world.research_terms(quota=10))
    refused = world.access_record(agreement)
    later = world.access_record(agreement)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [refused.as_abi()])
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [later.as_abi()])
    refused_id = hexed(refused.request.request_id)

    def apply_check(event: DecodedEvent) -> None:
        if event.name == "AccessRecorded" and event.args["accessId"] == refused_id:
            raise ValueError("the store cannot hold this access (test)")

    metrics = IndexerMetrics()
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    indexer = make_indexer(world, url, chain.rpc_url, metrics=metrics)
    indexer.apply_check = apply_check
    summary = indexer.run(to_block=head(chain))
    engine = indexer.store.engine
    with engine.connect() as conn:
        quarantined = conn.execute(sa.text("SELECT * FROM quarantined_event")).mappings().all()
        accesses = set(conn.execute(sa.text("SELECT access_id FROM access_event")).scalars())
    assert len(quarantined) == 1
    (row,) = quarantined
    assert row["stage"] == "apply"
    assert "the store cannot hold this access (test)" in row["error"]
    assert refused_id not in accesses
    assert hexed(later.request.request_id) in accesses  # indexing went on past it
    assert summary.checkpoint_block >= row["block_number"] + 1
    assert summary.quarantined == 1
    assert metrics.registry.get_sample_value("dul_audit_events_quarantined_total") == 1

    report = verify(world, indexer, chain, max_lag_blocks=BEHIND_BLOCKS,
                    max_lag_s=BEHIND_S)  # fmt: skip
    assert report.ok is False
    # the only other finding the missing access may cause: the chain's state (quota used)
    # is one access ahead of the stored events
    assert report.findings_by_check.pop("event_quarantined") == 1
    assert set(report.findings_by_check) <= {"state_differs_from_events"}, report.findings
    (finding,) = [f for f in report.findings if f.check == "event_quarantined"]
    assert finding.position == f"{row['block_number']}/{row['tx_index']}/{row['log_index']}"
    assert finding.details["stage"] == "apply"

    health = indexer_health(engine, indexer.rpc, max_blocks=10**9, max_seconds=1e12)
    assert (health.status, health.ready, health.quarantined) == ("failing", False, 1)

    settings = with_token_file(AuditSettings(
        database_url=url, rpc_url=chain.rpc_url, deployment_path=manifest,
        index_behind_blocks=BEHIND_BLOCKS, index_behind_s=BEHIND_S,
    ))  # fmt: skip
    token = audit_token(settings)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")  # health needs no credential, like /healthz
        assert ready.status_code == 503
        body = ready.json()
        assert body["ready"] is False
        assert body["status"] == "failing"
        assert "1 event(s) quarantined" in body["reasons"][0]
        assert "dul_audit_quarantined_events 1.0" in client.get("/metrics").text
        api_report = client.get("/v1/verify", headers=bearer(token)).json()
        assert api_report["ok"] is False
        assert api_report["findings_by_check"]["event_quarantined"] == 1
    indexer.close()


class CorruptingTransport(httpx.BaseTransport):
    """The real node, except that the logs of one transaction come back with their data cut
    short (a node or ABI drift: logs that claim an audited event and do not decode as it)."""

    def __init__(self, tx_hash: str) -> None:
        self.inner = httpx.HTTPTransport()
        self.tx_hash = tx_hash

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        response = self.inner.handle_request(request)
        if not isinstance(body, dict) or body.get("method") != "eth_getLogs":
            return response  # a batch (a page's two header reads) or another method
        reply = json.loads(response.read())
        for entry in reply.get("result") or []:
            if entry["transactionHash"].lower() == self.tx_hash:
                entry["data"] = entry["data"][:66]
        return httpx.Response(200, json=reply)


def test_a_log_that_does_not_decode_is_quarantined_at_its_position(
    chain: ChainHandle, world: World, tmp_path: Path
) -> None:
    agreement = world.activate(world.research_terms(quota=10))
    broken, later = world.access_record(agreement), world.access_record(agreement)
    receipt = world.ledger.transact(world.gateway, "AccessLog", "recordAccesses",
                                    [broken.as_abi()])  # fmt: skip
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [later.as_abi()])
    tx_hash = hexed(bytes(receipt["transactionHash"]))
    engine = create_store_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    deployment = world.ledger.deployment
    indexer = Indexer(
        AuditStore(engine), RpcClient(chain.rpc_url, transport=CorruptingTransport(tx_hash)),
        chain_id=deployment.chain_id, contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
    )  # fmt: skip
    indexer.run(to_block=head(chain))
    with engine.connect() as conn:
        (row,) = conn.execute(sa.text("SELECT * FROM quarantined_event")).mappings().all()
        accesses = set(conn.execute(sa.text("SELECT access_id FROM access_event")).scalars())
    assert (row["stage"], row["tx_hash"]) == ("decode", tx_hash)
    assert row["block_number"] == receipt["blockNumber"]
    assert "EventDecodeError" in row["error"]
    assert hexed(later.request.request_id) in accesses
    assert hexed(broken.request.request_id) not in accesses
    # verify reads the node itself: the log decodes there, and is left to the quarantine finding
    report = verify(world, indexer, chain)
    assert report.findings_by_check.pop("event_quarantined") == 1
    assert set(report.findings_by_check) <= {"state_differs_from_events"}, report.findings
    indexer.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    cleanup: list[tuple[str, str]] = []
    yield make_store_url(str(request.param), tmp_path, cleanup)
    drop_stores(cleanup)


def test_a_row_the_store_refuses_is_quarantined_and_the_rest_of_the_page_written(
    chain: ChainHandle, world: World, store_url: str
) -> None:
    """The store already holds an agreement row under the id the chain proposes next (an edited
    store): that event cannot be written; the page's other events are, and the refused one is
    quarantined with the store's error."""
    terms = world.research_terms(quota=3)
    planted = hexed(terms.agreement_id)
    indexer = make_indexer(world, store_url, chain.rpc_url)
    indexer.run(to_block=head(chain))
    names = (
        "agreement_id", "version", "previous_id", "holder_org", "requester_org", "digest",
        "scenario", "duo_codes", "disease_code", "ethics_approval", "max_tier", "operations",
        "valid_from", "valid_until", "quota", "consent_policy", "terms_hash", "nonce", "deadline",
        "status", "block_number", "tx_index", "log_index", "tx_hash",
    )  # fmt: skip
    values = ", ".join(f":{c}" for c in names)
    insert = f"INSERT INTO agreement ({', '.join(names)}) VALUES ({values})"  # noqa: S608 - fixed
    with indexer.store.engine.begin() as conn:
        conn.execute(sa.text(insert), {
            "agreement_id": planted, "version": 1, "previous_id": None, "holder_org": "0x00",
            "requester_org": "0x00", "digest": "0x00", "scenario": 0, "duo_codes": "[]",
            "disease_code": "0x00", "ethics_approval": "0x00", "max_tier": 0, "operations": 0,
            "valid_from": 0, "valid_until": 0, "quota": 0, "consent_policy": 0,
            "terms_hash": "0x00", "nonce": "0x0", "deadline": 0, "status": 0,
            "block_number": 1, "tx_index": 0, "log_index": 0, "tx_hash": "0x00",
        })  # fmt: skip
    agreement = world.activate(terms)
    assert hexed(agreement) == planted
    indexer.run(to_block=head(chain))
    with indexer.store.engine.connect() as conn:
        quarantined = conn.execute(sa.text("SELECT * FROM quarantined_event")).mappings().all()
        signatures = conn.execute(
            sa.text("SELECT count(*) FROM agreement_signature WHERE agreement_id = :a"),
            {"a": planted},
        ).scalar_one()
    logs = [q["log"] if isinstance(q["log"], dict) else json.loads(q["log"]) for q in quarantined]
    assert [(q["stage"], log["name"]) for q, log in zip(quarantined, logs, strict=True)] == [
        ("apply", "AgreementProposed")
    ]
    assert "agreement_id" in quarantined[0]["error"]  # the unique key the store refused
    assert signatures == 2  # the rest of the agreement's events were written
    indexer.close()


def test_an_index_behind_the_head_is_a_finding_and_not_ready(
    chain: ChainHandle, world: World, tmp_path: Path, manifest: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    indexer = make_indexer(world, url, chain.rpc_url)
    checkpoint = indexer.run(to_block=head(chain)).checkpoint_block
    while head(chain) < checkpoint + 3:
        time.sleep(0.1)
    in_time = verify(world, indexer, chain, max_lag_blocks=10**6, max_lag_s=1e9)
    assert in_time.ok is True, in_time.findings
    assert in_time.head_block is not None
    assert in_time.head_block >= checkpoint + 3
    behind = verify(world, indexer, chain, max_lag_blocks=2, max_lag_s=1e9)
    assert behind.findings_by_check == {"index_behind": 1}
    assert behind.findings[0].details["lag_blocks"] >= 3
    settings = AuditSettings(database_url=url, rpc_url=chain.rpc_url, deployment_path=manifest,
                             index_behind_blocks=2)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "behind"
        assert "blocks behind the head" in ready.json()["reasons"][0]
    indexer.run(to_block=head(chain))
    with TestClient(
        create_app(settings.model_copy(update={"index_behind_blocks": 1_000})),
        raise_server_exceptions=False,
    ) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ok"
    indexer.close()


@pytest.fixture
def rolled_back(
    chain: ChainHandle, world: World, tmp_path: Path
) -> Iterator[tuple[Indexer, str, dict[str, str]]]:
    """A store that indexed a history the node then lost (an agreement, two accesses and a
    consent), and indexed the new one."""
    snapshot = chain.node_rpc("evm_snapshot")
    lost = world.activate(world.research_terms(quota=5))
    records = [world.access_record(lost) for _ in range(2)]
    world.ledger.transact(world.gateway, "AccessLog", "recordAccesses",
                          [r.as_abi() for r in records])  # fmt: skip
    (consent,) = record_consents(world, [subject_of("rolled back")])
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    indexer = make_indexer(world, url, chain.rpc_url)
    before = indexer.run(to_block=head(chain))
    assert chain.node_rpc("evm_revert", snapshot) is True
    chain.node_rpc("anvil_dropAllTransactions")  # no re-mining of the same blocks
    world.activate(world.research_terms(quota=5))
    while head(chain) <= before.checkpoint_block:
        time.sleep(0.1)
    after = indexer.run(to_block=head(chain))
    assert after.reorgs == 1
    vanished = {
        "agreement": hexed(lost),
        "access": hexed(records[0].request.request_id),
        "consent": hexed(consent),
        "old_hash": before.checkpoint_hash,
    }
    yield indexer, url, vanished
    indexer.close()


def test_a_rollback_is_reported_with_what_vanished_until_acknowledged(
    chain: ChainHandle, world: World, rolled_back: tuple[Indexer, str, dict[str, str]]
) -> None:
    indexer, url, vanished = rolled_back
    report = verify(world, indexer, chain)
    assert report.findings_by_check == {"history_rewritten": 1}, report.findings
    (finding,) = report.findings
    details = finding.details
    assert details["old_hash"] == vanished["old_hash"]
    assert details["new_hash"] != details["old_hash"]
    assert vanished["agreement"] in details["vanished"]["agreements"]
    assert vanished["access"] in details["vanished"]["accesses"]
    assert vanished["consent"] in details["vanished"]["consents"]
    assert details["vanished"]["counts"]["accesses"] == 2
    incident = str(details["incident"])

    runner = CliRunner()
    options = ["--database-url", url]
    empty = runner.invoke(audit_cli, ["acknowledge", incident, "--reason", " ", *options])
    assert empty.exit_code == 2
    assert "validation_error" in empty.output
    unknown = runner.invoke(audit_cli, ["acknowledge", "999", "--reason", "drill", *options])
    assert unknown.exit_code == 2
    assert "incident_not_found" in unknown.output
    still = verify(world, indexer, chain)
    assert still.findings_by_check == {"history_rewritten": 1}

    done = runner.invoke(audit_cli, ["acknowledge", incident, "--reason", "fork drill on the "
                                     "test network", "--by", "ops@hospital-a", "--json",
                                     *options])  # fmt: skip
    assert done.exit_code == 0, done.output
    recorded = json.loads(done.stdout.splitlines()[-1])
    assert recorded["acknowledged_by"] == "ops@hospital-a"
    assert recorded["acknowledged_reason"] == "fork drill on the test network"
    assert abs(recorded["acknowledged_at"] - time.time()) < 60
    again = runner.invoke(audit_cli, ["acknowledge", incident, "--reason", "again", *options])
    assert again.exit_code == 2
    assert "incident_acknowledged" in again.output

    clean = verify(world, indexer, chain)
    assert clean.ok is True, clean.findings
    assert any(f"incident {incident}" in n and "ops@hospital-a" in n and "fork drill" in n
               for n in clean.notes)  # fmt: skip
