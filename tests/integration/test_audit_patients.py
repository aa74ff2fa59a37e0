"""Patients in the audit store, against the session's real chain, on SQLite and on PostgreSQL:
consents, withdrawals and authorization codes are indexed; each access's cohort is read from the
hospital's cohort store and checked against its root; the transparency report's proofs verify
with `dul.cohort.verify_inclusion` and with `ConsentRegistry.cohortIncludes` on chain; verify
finds a subject admitted after its withdrawal or without consent, a tampered proof, a deleted
member, leaves that are missing or lie; FHIR Consent resources parse back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from prov.model import ProvDocument

from audit.cohorts import CohortStatus
from audit.exports import block_times, fhir_json, graph_blocks, prov_json
from audit.indexer import Indexer
from audit.provenance import Direction, Kind, provenance
from audit.reports import agreement_report
from audit.testing import (
    PatientStory,
    drop_stores,
    index_with_cohorts,
    make_cohort_store,
    make_store_url,
    private_world,
    put_cohort,
    record_patient_story,
)
from audit.transparency import subject_report
from audit.verify import VerifyReport, verify_store
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.cohort import verify_inclusion
from dul.contracts.world import World
from dul.domain import AuthorizationStatus, ConsentStatus

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A deployment of this module's own on the session's chain: its story's violations
    (found below on purpose) stay out of the stores the other audit tests verify. Built after
    the session's world, whose members (the same keys) the permissioned endpoint admits."""
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("patients") / "deployment.json")


@pytest.fixture(scope="module")
def story(world: World, tmp_path_factory: pytest.TempPathFactory) -> PatientStory:
    """One patient story on chain for the module (each store indexes it)."""
    store = make_cohort_store(tmp_path_factory.mktemp("hospital") / "gateway.db")
    return record_patient_story(world, store)


@dataclass
class Indexed:
    engine: sa.Engine
    indexer: Indexer
    story: PatientStory


@pytest.fixture(scope="module", params=BACKENDS)
def indexed(
    request: pytest.FixtureRequest,
    world: World,
    chain: ChainHandle,
    story: PatientStory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Indexed]:
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(request.param, tmp_path_factory.mktemp("patients"), cleanup)
    engine, indexer = index_with_cohorts(
        world.ledger.deployment, chain.rpc_url, url, [story.cohort_store]
    )
    yield Indexed(engine, indexer, story)
    indexer.close()
    drop_stores(cleanup)


@pytest.fixture
def scratch(
    request: pytest.FixtureRequest,
    world: World,
    chain: ChainHandle,
    story: PatientStory,
    tmp_path: Path,
) -> Iterator[Indexed]:
    """A store of its own to tamper with (SQLite: the edits are SQL, the same on both)."""
    engine, indexer = index_with_cohorts(
        world.ledger.deployment, chain.rpc_url, f"sqlite:///{tmp_path / 'scratch.db'}",
        [story.cohort_store],
    )  # fmt: skip
    yield Indexed(engine, indexer, story)
    indexer.close()


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def execute(engine: sa.Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def run_verify(
    engine: sa.Engine, chain: ChainHandle, world: World, *, lag: float = 60.0, on_chain: bool = True
) -> VerifyReport:
    rpc = RpcClient(chain.rpc_url)
    try:
        return verify_store(
            engine, rpc, start_block=int(world.ledger.deployment.raw["block"]), workers=1,
            chain=on_chain, consent_lag=lag,
        )  # fmt: skip
    finally:
        rpc.close()


def findings(report: VerifyReport) -> set[tuple[str, str | None]]:
    return {(f.check, f.key) for f in report.findings}


def mine(report: VerifyReport, story: PatientStory) -> set[tuple[str, str | None]]:
    """The findings about the story's accesses (keyed by access id, or access/leaf)."""
    ids = {hexed(a) for a in story.accesses.values()}
    return {(c, k) for c, k in findings(report) if k is not None and k.split("/")[0] in ids}


# --- indexing -------------------------------------------------------------------------------


def test_consents_withdrawals_and_codes_are_indexed(indexed: Indexed) -> None:
    s = indexed.story
    consents = {
        r["consent_id"]: r
        for r in rows(indexed.engine, "SELECT * FROM consent WHERE consent_id IN "
                      "(:a, :w)", a=hexed(s.consents["alice"]), w=hexed(s.consents["walt"]))
    }  # fmt: skip
    alice, walt = consents[hexed(s.consents["alice"])], consents[hexed(s.consents["walt"])]
    assert alice["subject"] == hexed(s.subjects["alice"])
    assert alice["status"] == ConsentStatus.GRANTED
    assert alice["scenarios"] == 0b10
    assert walt["status"] == ConsentStatus.WITHDRAWN
    assert alice["valid_from"] > 0  # the effective start, from the event
    (withdrawal,) = rows(indexed.engine, "SELECT * FROM consent_withdrawal WHERE consent_id = :c",
                         c=hexed(s.consents["walt"]))  # fmt: skip
    assert not withdrawal["by_subject"]
    codes = {
        r["code_hash"]: r
        for r in rows(indexed.engine, "SELECT * FROM patient_authorization WHERE subject = :s",
                      s=hexed(s.subjects["alice"]))
    }  # fmt: skip
    assert codes[hexed(s.code)]["status"] == AuthorizationStatus.REDEEMED
    assert codes[hexed(s.revoked_code)]["status"] == AuthorizationStatus.REVOKED
    (redemption,) = rows(indexed.engine, "SELECT * FROM authorization_redemption "
                         "WHERE code_hash = :c", c=hexed(s.code))  # fmt: skip
    assert redemption["access_id"] == hexed(s.accesses["insurance"])


def test_each_cohort_is_checked_against_its_root(indexed: Indexed) -> None:
    s = indexed.story
    status = {
        r["access_id"]: (r["status"], r["source"], r["leaves"])
        for r in rows(indexed.engine, "SELECT * FROM cohort")
    }
    expect = {
        "cohort": (CohortStatus.VERIFIED, 3),
        "after_withdrawal": (CohortStatus.VERIFIED, 2),
        "unconsented": (CohortStatus.VERIFIED, 2),
        "unavailable": (CohortStatus.LEAVES_UNAVAILABLE, 0),
        "mismatch": (CohortStatus.ROOT_MISMATCH, 2),
        "insurance": (CohortStatus.VERIFIED, 1),
    }
    for name, (want, leaves) in expect.items():
        got = status[hexed(s.accesses[name])]
        assert (got[0], got[2]) == (want.value, leaves), name
    assert status[hexed(s.accesses["insurance"])][1] == "authorization"
    assert hexed(s.accesses["denied"]) not in status
    consented = {
        r["access_id"]: r["consented"]
        for r in rows(indexed.engine, "SELECT access_id, consented FROM cohort")
    }
    # counted at index time, in chain order: walt had withdrawn, erin never consented
    names = ("cohort", "after_withdrawal", "unconsented", "mismatch")
    assert [consented[hexed(s.accesses[n])] for n in names] == [3, 1, 1, None]
    members = rows(indexed.engine, "SELECT subject_ref, leaf_index FROM cohort_member "
                   "WHERE access_id = :a ORDER BY leaf_index",
                   a=hexed(s.accesses["cohort"]))  # fmt: skip
    admitted = sorted(hexed(s.subjects[n]) for n in s.cohorts["cohort"])
    assert [m["subject_ref"] for m in members] == admitted
    assert [m["leaf_index"] for m in members] == [0, 1, 2]


def test_a_cohort_the_store_gets_later_is_settled_on_retry(scratch: Indexed) -> None:
    s = scratch.story
    access = hexed(s.accesses["unavailable"])
    people = [s.subjects[n] for n in s.cohorts["unavailable"]]
    # the gateway's row arrives late (it was down when the indexer passed)
    engine = sa.create_engine(s.cohort_store)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM cohort_leaves WHERE access_id = :a"),
                     {"a": s.accesses["unavailable"]})  # fmt: skip
    engine.dispose()
    put_cohort(s.cohort_store, s.accesses["unavailable"], people)
    assert scratch.indexer.retry_cohorts(force=True) == 1
    (row,) = rows(scratch.engine, "SELECT status FROM cohort WHERE access_id = :a", a=access)
    assert row["status"] == CohortStatus.VERIFIED.value
    report = subject_report(scratch.engine, hexed(s.subjects["nobody"]))
    assert [a.access_id for a in report.accesses] == [access]


# --- the transparency report --------------------------------------------------------------


def test_every_access_of_a_subject_comes_with_a_proof_the_chain_accepts(
    indexed: Indexed, world: World, chain: ChainHandle
) -> None:
    s = indexed.story
    alice = s.subjects["alice"]
    report = subject_report(indexed.engine, hexed(alice))
    names = {hexed(v): k for k, v in s.accesses.items()}
    assert [names[a.access_id] for a in report.accesses] == ["cohort", "insurance"]
    for access in report.accesses:
        proof = [bytes.fromhex(p[2:]) for p in access.inclusion.proof]
        root = bytes.fromhex(access.inclusion.root[2:])
        assert verify_inclusion(root, access.inclusion.size, access.inclusion.index, alice, proof)
        assert world.ledger.call(
            "ConsentRegistry", "cohortIncludes", root, access.inclusion.size,
            access.inclusion.index, alice, proof,
        )  # fmt: skip
        # the root is the one in the AccessRecorded event at the chain reference
        receipt = chain.rpc("eth_getTransactionReceipt", access.chain.tx_hash)
        (log,) = [e for e in receipt["logs"] if int(e["logIndex"], 16) == access.chain.log_index]
        assert int(log["blockNumber"], 16) == access.chain.block
        assert log["topics"][1] == access.access_id
        assert access.inclusion.root[2:] in log["data"]
        assert access.decision == "GRANTED"
        assert access.time is not None
    cohort, insurance = report.accesses
    assert (cohort.scenario, cohort.admitted_by, cohort.requester_org_name) == (
        "RESEARCH",
        "cohort",
        "Institute",
    )
    assert (insurance.scenario, insurance.admitted_by, insurance.authorization) == (
        "INSURANCE_CLAIM",
        "authorization",
        hexed(s.code),
    )
    assert insurance.inclusion.proof == []
    assert insurance.inclusion.size == 1
    codes = {c.code_hash: c for c in report.authorizations}
    assert codes[hexed(s.code)].status == "REDEEMED"
    assert codes[hexed(s.code)].redeemed_by_access == hexed(s.accesses["insurance"])
    # the request id names one access per agreement: the report names its agreement too
    assert codes[hexed(s.code)].redeemed_by_agreement == hexed(s.insurance_agreement)
    assert codes[hexed(s.revoked_code)].redeemed_by_agreement is None
    assert codes[hexed(s.revoked_code)].status == "REVOKED"
    assert codes[hexed(s.revoked_code)].revoked is not None
    (consent,) = report.consents
    assert consent.status == "GRANTED"
    assert consent.scenarios == ["RESEARCH"]
    assert consent.duo_codes == ["DUO:0000042", "DUO:0000046"]
    assert [h.event for h in consent.history] == ["recorded"]


def test_a_withdrawn_consent_shows_its_history(indexed: Indexed) -> None:
    s = indexed.story
    report = subject_report(indexed.engine, hexed(s.subjects["walt"]))
    (consent,) = report.consents
    assert consent.status == "WITHDRAWN"
    assert [h.event for h in consent.history] == ["recorded", "withdrawn"]
    assert consent.history[1].chain.block >= consent.history[0].chain.block
    assert [a.access_id for a in report.accesses] == [hexed(s.accesses["after_withdrawal"])]


# --- verify ---------------------------------------------------------------------------------


def test_verify_names_subjects_admitted_without_consent(
    indexed: Indexed, chain: ChainHandle, world: World
) -> None:
    s = indexed.story
    report = run_verify(indexed.engine, chain, world)
    unconsented, withdrawn = hexed(s.accesses["unconsented"]), hexed(s.accesses["after_withdrawal"])
    # the store holds this module's deployment only: these are all the findings there are
    assert findings(report) == {
        ("subject_without_consent", f"{unconsented}/{hexed(s.subjects['erin'])}"),
        ("cohort_leaves_unavailable", hexed(s.accesses["unavailable"])),
        ("cohort_root_mismatch", hexed(s.accesses["mismatch"])),
    }
    assert report.checked["cohort_members"] >= 8
    assert report.checked["redemptions"] >= 1
    # walt's withdrawal was mined seconds before the access: within the default lag the
    # gateway cannot have known; with no lag allowed it is a violation, named with its reason
    strict = run_verify(indexed.engine, chain, world, lag=0, on_chain=False)
    walt = f"{withdrawn}/{hexed(s.subjects['walt'])}"
    assert ("subject_without_consent", walt) in mine(strict, s)
    (finding,) = [f for f in strict.findings if f.key == walt]
    assert "withdrawn" in finding.message
    assert finding.details["consents"] == [hexed(s.consents["walt"])]


def test_verify_finds_a_tampered_proof_and_a_deleted_member(
    scratch: Indexed, chain: ChainHandle, world: World
) -> None:
    s = scratch.story
    access = hexed(s.accesses["cohort"])
    execute(scratch.engine, "UPDATE cohort_member SET proof = :p WHERE access_id = :a "
            "AND leaf_index = 1", p=b"\x11" * 64, a=access)  # fmt: skip
    report = run_verify(scratch.engine, chain, world, on_chain=False)
    assert ("cohort_proof_invalid", f"{access}/1") in mine(report, s)
    execute(scratch.engine, "DELETE FROM cohort_member WHERE access_id = :a AND leaf_index = 0",
            a=access)  # fmt: skip
    report = run_verify(scratch.engine, chain, world, on_chain=False)
    assert ("cohort_members_missing", access) in mine(report, s)
    other = hexed(s.accesses["after_withdrawal"])
    execute(scratch.engine, "UPDATE cohort SET consented = 2 WHERE access_id = :a", a=other)
    report = run_verify(scratch.engine, chain, world, on_chain=False)
    assert ("cohort_count_differs", other) in mine(report, s)


def test_verify_finds_a_subject_swapped_into_a_cohort(
    scratch: Indexed, chain: ChainHandle, world: World
) -> None:
    """Hiding a patient's access from their report by renaming its member row breaks the
    row's proof against the root on chain."""
    s = scratch.story
    access = hexed(s.accesses["cohort"])
    execute(scratch.engine, "UPDATE cohort_member SET subject_ref = :o WHERE access_id = :a "
            "AND leaf_index = 2", o=hexed(s.subjects["nobody"]), a=access)  # fmt: skip
    report = run_verify(scratch.engine, chain, world, on_chain=False)
    assert ("cohort_proof_invalid", f"{access}/2") in mine(report, s)


def test_consent_rows_are_compared_with_the_chain(
    scratch: Indexed, chain: ChainHandle, world: World
) -> None:
    s = scratch.story
    walt = hexed(s.consents["walt"])
    execute(scratch.engine, "DELETE FROM consent_withdrawal WHERE consent_id = :c", c=walt)
    execute(scratch.engine, "UPDATE consent SET status = 1, scenarios = 31 WHERE consent_id = :c",
            c=walt)  # fmt: skip
    execute(scratch.engine, "UPDATE patient_authorization SET tier = 4 WHERE code_hash = :c",
            c=hexed(s.code))  # fmt: skip
    report = run_verify(scratch.engine, chain, world)
    checks = {(f.check, f.table) for f in report.findings}
    assert {
        ("row_missing", "consent_withdrawal"),
        ("row_differs", "consent"),
        ("status_differs", "consent"),
        ("row_differs", "patient_authorization"),
    } <= checks
    (differs,) = [f for f in report.findings if f.check == "row_differs" and f.key == walt]
    assert set(differs.details["columns"]) == {"scenarios"}


def test_an_access_that_did_not_redeem_its_code_is_found(
    scratch: Indexed, chain: ChainHandle, world: World
) -> None:
    s = scratch.story
    execute(scratch.engine, "DELETE FROM authorization_redemption WHERE code_hash = :c",
            c=hexed(s.code))  # fmt: skip
    report = run_verify(scratch.engine, chain, world, on_chain=False)
    assert ("authorization_not_redeemed", hexed(s.accesses["insurance"])) in mine(report, s)


# --- provenance and exports -----------------------------------------------------------------


def test_an_access_graph_shows_its_cohort_as_one_node(indexed: Indexed) -> None:
    s = indexed.story
    access = hexed(s.accesses["cohort"])
    graph = provenance(indexed.engine, Kind.ACCESS, access, direction=Direction.UP)
    cohort = graph.node(f"cohort:{access}@{hexed(s.agreement)}")
    assert cohort.attributes["size"] == 3
    assert cohort.attributes["status"] == "verified"
    assert cohort.attributes["consented_members"] == 3
    assert not [n for n in graph.nodes if n.type == "subject"]
    claim = hexed(s.accesses["insurance"])
    insurance = provenance(indexed.engine, Kind.ACCESS, claim, direction=Direction.UP)
    code = insurance.node(f"authorization:{hexed(s.code)}")
    assert code.attributes["status"] == "REDEEMED"
    assert (code.attributes["multi_use"], code.attributes["uses"]) == (False, 1)
    used = [e for e in insurance.edges if e.target == code.id]
    assert used[0].relation == "used"
    assert used[0].attributes["redeemed"] is True


def test_a_subject_graph_links_consents_codes_and_accesses(indexed: Indexed) -> None:
    s = indexed.story
    alice = hexed(s.subjects["alice"])
    graph = provenance(indexed.engine, Kind.SUBJECT, alice)
    root = graph.node(f"subject:{alice}")
    assert root.prov == "agent"
    assert root.attributes == {"subject_ref": alice, "consents": 1, "authorizations": 2,
                               "accesses": 2}  # fmt: skip
    types = {n.type for n in graph.nodes}
    assert {"subject", "consent", "authorization", "access", "agreement", "organization"} <= types
    assert "cohort" not in types
    edges = {(e.relation, e.source.split(":")[0], e.target.split(":")[0], e.attributes.get("role"))
             for e in graph.edges}  # fmt: skip
    assert {
        ("wasAttributedTo", "consent", "subject", "subject"),
        ("wasAttributedTo", "authorization", "subject", "subject"),
        ("used", "access", "subject", "cohort member"),
        ("used", "access", "consent", "consent"),
        ("used", "access", "authorization", "authorization"),
        ("used", "access", "agreement", "agreement"),
    } <= edges
    consent_edge = [e for e in graph.edges if e.target == f"consent:{hexed(s.consents['alice'])}"
                    and e.relation == "used"]  # fmt: skip
    cohort_access = f"access:{hexed(s.accesses['cohort'])}@{hexed(s.agreement)}"
    assert [e.source for e in consent_edge] == [cohort_access]
    document = ProvDocument.deserialize(content=prov_json(graph), format="json")
    assert len(list(document.get_records())) > 10


def scope_of(consent: Consent) -> str | None:
    codings = consent.scope.coding or []
    return codings[0].code if codings else None


def test_fhir_consents_parse_back_and_name_the_patient_by_reference_only(
    indexed: Indexed,
) -> None:
    s = indexed.story
    walt = hexed(s.subjects["walt"])
    graph = provenance(indexed.engine, Kind.SUBJECT, walt)
    text = fhir_json(graph, block_times(indexed.engine, graph_blocks(graph)))
    bundle = Bundle.model_validate_json(text)
    consents = [e.resource for e in bundle.entry or [] if isinstance(e.resource, Consent)]
    (consent,) = consents
    assert consent.status == "inactive"
    assert consent.patient is not None
    assert consent.patient.identifier is not None
    assert consent.patient.identifier.value == walt
    assert consent.patient.reference is None
    assert consent.patient.display is None
    assert scope_of(consent) == "research"
    provision = consent.provision
    assert provision is not None
    assert provision.type == "permit"
    assert provision.period is not None
    assert provision.period.start is not None
    duo = [c.code for c in provision.purpose or [] if "duo" in (c.system or "")]
    assert duo == ["DUO:0000042", "DUO:0000046"]
    events = [e.resource for e in bundle.entry or [] if isinstance(e.resource, AuditEvent)]
    (event,) = events  # the access that admitted walt, with the patient as its object
    patients = [x.what for x in event.entity or [] if x.what and x.what.type == "Patient"]
    assert [p.identifier.value for p in patients if p.identifier] == [walt]
    # alice's: her research consent, and her two codes (redeemed, revoked) as disclosures
    alice = hexed(s.subjects["alice"])
    bundle_alice = fhir_json(
        provenance(indexed.engine, Kind.SUBJECT, alice),
        block_times(indexed.engine, graph_blocks(graph)),
    )
    parsed = Bundle.model_validate_json(bundle_alice)
    kinds = sorted(
        (scope_of(c), c.status)
        for c in (e.resource for e in parsed.entry or [])
        if isinstance(c, Consent)
    )
    assert kinds == [("patient-privacy", "inactive"), ("patient-privacy", "inactive"),
                     ("research", "active")]  # fmt: skip


def test_the_agreement_report_counts_consent_filtered_accesses(indexed: Indexed) -> None:
    s = indexed.story
    report = agreement_report(indexed.engine, hexed(s.agreement))
    assert report.consent_policy == "COHORT_CONSENT"
    assert report.consent_filtered_accesses == 5
    assert report.cohort_subjects == 2 + 3 + 2 + 2 + 2
    assert report.cohorts_by_status == {"verified": 3, "leaves_unavailable": 1,
                                        "root_mismatch": 1}  # fmt: skip
    assert report.denied_consent_missing == 1
    insurance = agreement_report(indexed.engine, hexed(s.insurance_agreement))
    assert insurance.consent_policy == "PATIENT_AUTHORIZATION"
    assert insurance.authorization_redemptions == 1
    assert insurance.denied_authorization_invalid == 0
