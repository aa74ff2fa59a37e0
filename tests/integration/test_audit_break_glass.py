"""The regulator's view of break-glass: an emergency access recorded on the real chain, indexed,
appears unreviewed in `verify` and in the agreement's compliance report until a steward of the
holder reviews it, and overdue (a `break_glass_review_overdue` finding, named in the report)
once its window has passed; its FHIR AuditEvent carries the purpose of use ETREAT and BTG."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from eth_hash.auto import keccak
from typer.testing import CliRunner

from audit.cli import app as audit_cli
from audit.exports import block_times, fhir_json, graph_blocks
from audit.indexer import Indexer
from audit.provenance import Kind, provenance
from audit.reports import agreement_report, render_report
from audit.testing import (
    drop_stores,
    index_with_cohorts,
    make_cohort_store,
    make_store_url,
    private_world,
    put_cohort,
    record_break_glass,
)
from audit.verify import VerifyReport, verify_store
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.world import World
from dul.domain import (
    BreakGlassOutcome,
    slug_id,
)

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

EHR = slug_id("hospital-a/ehr-identified")
PATIENT = keccak(b"audit break-glass patient reference")


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A deployment of this module's own: its verify is about this story only."""
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("glass") / "deployment.json")


@pytest.fixture(scope="module")
def story(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A transfer agreement (break-glass, 1-hour review) and one break-glass access on it,
    whose cohort of one the hospital's cohort store holds."""
    agreement, access = record_break_glass(world, PATIENT, review_hours=1)
    cohorts = make_cohort_store(tmp_path_factory.mktemp("glass-cohorts") / "cohorts.db")
    put_cohort(cohorts, access, [PATIENT])
    due = int(world.ledger.call("AccessLog", "breakGlassOf", access, agreement)[0])
    return {"agreement": agreement, "access": access, "due": due, "cohorts": cohorts}


@pytest.fixture
def indexed(
    world: World, chain: ChainHandle, story: dict[str, Any], tmp_path: Path
) -> Iterator[tuple[str, sa.Engine, Indexer]]:
    cleanup: list[tuple[str, str]] = []
    url = make_store_url("sqlite", tmp_path, cleanup)
    engine, indexer = index_with_cohorts(
        world.ledger.deployment, chain.rpc_url, url, [story["cohorts"]]
    )
    yield url, engine, indexer
    indexer.close()
    engine.dispose()
    drop_stores(cleanup)


def run_verify(engine: sa.Engine, chain: ChainHandle, world: World, **options: Any) -> VerifyReport:
    rpc = RpcClient(chain.rpc_url)
    try:
        return verify_store(engine, rpc, start_block=int(world.ledger.deployment.raw["block"]),
                            workers=1, **options)  # fmt: skip
    finally:
        rpc.close()


def test_unreviewed_then_overdue_then_reviewed_in_verify_and_the_report(
    world: World, chain: ChainHandle, story: dict[str, Any],
    indexed: tuple[str, sa.Engine, Indexer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    url, engine, indexer = indexed
    access, agreement, due = hexed(story["access"]), hexed(story["agreement"]), story["due"]

    fresh = run_verify(engine, chain, world)
    assert fresh.ok, fresh.findings
    assert fresh.checked["break_glass_accesses"] == 1
    [case] = fresh.break_glass_unreviewed
    assert (case.access_id, case.state, case.reason) == (
        access, "unreviewed", "LIFE_THREATENING_EMERGENCY",
    )  # fmt: skip
    assert case.review_due == due
    report = agreement_report(engine, agreement)
    assert report.break_glass_review_hours == 1
    assert report.break_glass_by_state == {"unreviewed": 1}
    assert [c.access_id for c in report.break_glass] == [access]
    listed = _cli_verify(world, chain, url, monkeypatch, tmp_path)
    assert "Break-glass accesses awaiting the holder's review" in listed
    assert access in listed

    late = run_verify(engine, chain, world, now=due + 1)
    assert not late.ok
    assert late.findings_by_check == {"break_glass_review_overdue": 1}
    assert late.findings[0].key == access
    assert late.break_glass_unreviewed[0].state == "overdue"
    overdue = agreement_report(engine, agreement, now=due + 1)
    assert overdue.break_glass_by_state == {"overdue": 1}
    console = _rendered(overdue)
    assert "OVERDUE" in console
    assert access in console

    world.ledger.transact(
        world.steward, "AccessLog", "reviewBreakGlass", story["access"], story["agreement"],
        BreakGlassOutcome.REFERRED, keccak(b"referred: no emergency on record"),
    )  # fmt: skip
    indexer.run(to_block=world.ledger.w3.eth.block_number)
    reviewed = run_verify(engine, chain, world, now=due + 1)
    assert reviewed.ok, reviewed.findings
    assert reviewed.break_glass_unreviewed == []
    after = agreement_report(engine, agreement, now=due + 1)
    assert after.break_glass_by_state == {"referred": 1}
    assert after.break_glass[0].reviewer == world.steward.address.lower()
    assert after.break_glass[0].late is False


def _cli_verify(
    world: World, chain: ChainHandle, url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """`dul audit verify` over the store, as text."""
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_BLOCKS", "10000000")  # a static store
    monkeypatch.setenv("DUL_AUDIT_INDEX_BEHIND_S", "31536000")
    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps(world.ledger.deployment.raw))
    monkeypatch.setenv("DUL_AUDIT_DEPLOYMENT_PATH", str(manifest))
    options = ["--database-url", url, "--rpc-url", chain.rpc_url,
               "--from-block", str(world.ledger.deployment.raw["block"])]  # fmt: skip
    result = CliRunner().invoke(audit_cli, ["verify", *options])
    assert result.exit_code == 0, result.output
    return result.stdout


def _rendered(report: Any) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(render_report(report))
    return console.export_text()


def test_the_fhir_audit_event_says_emergency_treatment_and_break_the_glass(
    story: dict[str, Any], indexed: tuple[str, sa.Engine, Indexer]
) -> None:
    _, engine, _ = indexed
    graph = provenance(engine, Kind.ACCESS, hexed(story["access"]))
    node = graph.node(f"access:{hexed(story['access'])}@{hexed(story['agreement'])}")
    assert node.attributes["break_glass_reason"] == "LIFE_THREATENING_EMERGENCY"
    assert not [n for n in graph.nodes if n.type == "authorization"]  # no code was redeemed
    bundle = json.loads(fhir_json(graph, block_times(engine, graph_blocks(graph))))
    [event] = [e["resource"] for e in bundle["entry"]
               if e["resource"]["resourceType"] == "AuditEvent"]  # fmt: skip
    codes = {(c["system"], c["code"]) for p in event["purposeOfEvent"] for c in p["coding"]}
    act_reason = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
    assert {(act_reason, "ETREAT"), (act_reason, "BTG")} <= codes
    assert (act_reason, "TREAT") not in codes
    details = {d["type"]: d["valueString"] for e in event["entity"] for d in e.get("detail", [])}
    assert details["breakGlassReason"] == "LIFE_THREATENING_EMERGENCY"
    assert details["breakGlassReview"] in ("UNREVIEWED", "REFERRED")


def test_verify_lists_a_break_glass_access_to_its_parties_and_regulators_only(
    world: World, chain: ChainHandle, indexed: tuple[str, sa.Engine, Indexer], tmp_path: Path
) -> None:
    """`GET /v1/verify` gives an organization the verdict and counts, not the findings; the
    unreviewed break-glass accesses (access, agreement, holder, emergency, time) are as much
    another organization's business as the findings are."""
    from audit.auth import AuditRole
    from audit.settings import AuditSettings
    from audit.testing import audit_client

    _, access_id = record_break_glass(world, keccak(b"another break-glass patient"))
    indexed[2].run(to_block=world.ledger.w3.eth.block_number)
    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps(world.ledger.deployment.raw))
    settings = AuditSettings(database_url=indexed[0], rpc_url=chain.rpc_url,
                             deployment_path=manifest)  # fmt: skip
    access = hexed(access_id)
    for role, org, sees in (
        (AuditRole.REGULATOR, "", True),
        (AuditRole.ORGANIZATION, "hospital-a", True),  # the holder
        (AuditRole.ORGANIZATION, "institute", True),  # the requester
        (AuditRole.ORGANIZATION, "insurer-elsewhere", False),
    ):
        with audit_client(settings, role, org) as client:
            report = client.get("/v1/verify?chain=false")
            assert report.status_code == 200, report.text
            listed = {case["access_id"] for case in report.json()["break_glass_unreviewed"]}
            assert (access in listed) is sees, (role, org)
            assert sees or listed == set()
