"""The patient transparency report over HTTP and the CLI, on a store indexed from a real chain:
`GET /v1/subjects/{ref}/accesses` and `dul audit subject REF` answer every access that admitted
the subject with a proof anyone can check, its codes and consents; an unknown subject gets an
empty report, a malformed reference a 422 problem (a clear line and exit 2 on the CLI); and the
cohort the real gateway records is the one the report proves."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_hash.auto import keccak
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.consent import Consent
from prov.model import ProvDocument
from typer.testing import CliRunner

from audit.cli import app as audit_cli
from audit.settings import AuditSettings
from audit.testing import (
    PatientStory,
    audit_client,
    index_with_cohorts,
    make_cohort_store,
    private_world,
    record_patient_story,
)
from audit.transparency import subject_report
from dul.chain.testing import ChainHandle
from dul.cohort import verify_inclusion
from dul.contracts.typed_data import AccessRequest
from dul.contracts.world import World
from dul.domain import Operation, Scenario, Tier
from ledger_gateway.client import sign_request
from ledger_gateway.testing import GatewayHandle

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class Served:
    client: TestClient
    url: str
    story: PatientStory

    def subject(self, name: str) -> str:
        return hexed(self.story.subjects[name])


@pytest.fixture(scope="module")
def served(
    world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    # a deployment of its own: the story's violations stay out of the other tests' stores
    root = tmp_path_factory.mktemp("transparency")
    own = private_world(chain.rpc_url, root / "deployment.json")
    story = record_patient_story(own, make_cohort_store(root / "gateway.db"))
    url = f"sqlite:///{root / 'audit.db'}"
    engine, indexer = index_with_cohorts(
        own.ledger.deployment, chain.rpc_url, url, [story.cohort_store]
    )
    indexer.close()
    engine.dispose()
    settings = AuditSettings(
        database_url=url, rpc_url=chain.rpc_url, deployment_path=root / "deployment.json"
    )
    with audit_client(settings) as client:
        yield Served(client, url, story)


def assert_problem(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert (body["status"], body["code"]) == (status, code)
    assert body["detail"]


def test_the_report_lists_every_access_with_a_checkable_proof(served: Served) -> None:
    alice = served.subject("alice")
    response = served.client.get(f"/v1/subjects/{alice.upper().replace('0X', '0x')}/accesses")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["subject"] == alice
    story = served.story
    assert [a["access_id"] for a in body["accesses"]] == [
        hexed(story.accesses["cohort"]),
        hexed(story.accesses["insurance"]),
    ]
    for access in body["accesses"]:
        assert set(access["chain"]) == {"block", "tx_index", "log_index", "tx_hash"}
        inclusion = access["inclusion"]
        assert set(inclusion) == {"root", "size", "index", "proof"}
        assert verify_inclusion(
            bytes.fromhex(inclusion["root"][2:]), inclusion["size"], inclusion["index"],
            story.subjects["alice"], [bytes.fromhex(p[2:]) for p in inclusion["proof"]],
        )  # fmt: skip
        for key in ("agreement_id", "dataset_id", "requester_org", "scenario", "tier",
                    "operation", "decision", "time"):  # fmt: skip
            assert access[key] is not None, key
    assert {c["code_hash"]: c["status"] for c in body["authorizations"]} == {
        hexed(story.code): "REDEEMED",
        hexed(story.revoked_code): "REVOKED",
    }
    assert [c["consent_id"] for c in body["consents"]] == [hexed(story.consents["alice"])]
    assert "cohortIncludes" in body["how_to_verify"]


def test_an_unknown_subject_gets_an_empty_report(served: Served) -> None:
    response = served.client.get(f"/v1/subjects/0x{'ab' * 32}/accesses")
    assert response.status_code == 200
    body = response.json()
    assert (body["accesses"], body["authorizations"], body["consents"]) == ([], [], [])
    assert body["truncated"] is False


def test_limit_truncates_and_says_so(served: Served) -> None:
    body = served.client.get(f"/v1/subjects/{served.subject('alice')}/accesses?limit=1").json()
    assert len(body["accesses"]) == 1
    assert body["truncated"] is True
    assert_problem(
        served.client.get(f"/v1/subjects/{served.subject('alice')}/accesses?limit=0"),
        422, "validation_error",
    )  # fmt: skip


@pytest.mark.parametrize(
    "ref",
    ["not-a-ref", "0x1234", "0x" + "g" * 64, "0x" + "a" * 65, "%00", "a" * 300, "hospital-a",
     "%F0%9F%92%A9"],
)  # fmt: skip
def test_a_malformed_reference_is_422(served: Served, ref: str) -> None:
    assert_problem(served.client.get(f"/v1/subjects/{ref}/accesses"), 422, "malformed_id")


def test_the_subject_graph_exports_fhir_consents_and_prov(served: Served) -> None:
    walt = served.subject("walt")
    fhir = served.client.get(f"/v1/provenance/subject/{walt}?format=fhir")
    assert fhir.status_code == 200, fhir.text
    bundle = Bundle.model_validate_json(fhir.text)
    consents = [e.resource for e in bundle.entry or [] if isinstance(e.resource, Consent)]
    assert [c.status for c in consents] == ["inactive"]
    prov = served.client.get(f"/v1/provenance/subject/{walt}?format=prov-json")
    document = ProvDocument.deserialize(content=prov.text, format="json")
    assert f"dul:subject-{walt}" in prov.text
    assert len(list(document.get_records())) > 5
    graph = served.client.get(f"/v1/provenance/subject/{walt}").json()
    assert graph["root"] == f"subject:{walt}"
    assert {n["type"] for n in graph["nodes"]} >= {"subject", "consent", "access", "agreement"}


def test_the_cli_prints_the_report(served: Served) -> None:
    runner = CliRunner()
    store = ["--database-url", served.url]
    alice = served.subject("alice")
    as_json = runner.invoke(audit_cli, ["subject", alice, "--json", *store])
    assert as_json.exit_code == 0, as_json.output
    printed = json.loads(as_json.stdout.splitlines()[-1])
    answered = served.client.get(f"/v1/subjects/{alice}/accesses").json()
    assert printed == answered
    table = runner.invoke(audit_cli, ["subject", alice, *store])
    assert table.exit_code == 0, table.output
    assert "Institute" in table.stdout
    assert "leaf" in table.stdout
    assert "REDEEMED" in table.stdout
    (redeemed,) = [c for c in printed["authorizations"] if c["redeemed_by_access"]]
    # the access that used the code is its request id under its agreement, both named
    accesses = {(a["access_id"], a["agreement_id"]) for a in printed["accesses"]}
    assert (redeemed["redeemed_by_access"], redeemed["redeemed_by_agreement"]) in accesses
    malformed = runner.invoke(audit_cli, ["subject", "nope", *store])
    assert malformed.exit_code == 2
    assert "malformed_id" in malformed.stderr
    assert "Traceback" not in malformed.output
    exported = runner.invoke(audit_cli, ["export", "subject", alice, "--format", "fhir", *store])
    assert exported.exit_code == 0, exported.output
    Bundle.model_validate_json(exported.stdout)


# --- with the real gateway: the cohort it records is the one the report proves -----------------


def test_a_gateway_cohort_reaches_the_patients_report(
    world: World, chain: ChainHandle, gateway: GatewayHandle, tmp_path: Path
) -> None:
    """The gateway admits the consented subjects, records their tree head on chain and the
    leaves in its store's `cohort_leaves`; the indexer, pointed at that store, proves each
    admitted subject's membership and nobody else's."""
    agreement = world.activate(world.cohort_terms())
    consented, stranger = [os.urandom(32) for _ in range(3)], os.urandom(32)
    world.record_consents(consented, [Scenario.RESEARCH])
    request = AccessRequest(
        request_id=os.urandom(32), agreement_id=agreement, dataset_id=world.dataset,
        field_mask=0b0110, tier=Tier.PSEUDONYMIZED, operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM measurement"), deadline=int(time.time()) + 600,
    )  # fmt: skip
    body = sign_request(world.requester, request, gateway.domain, cohort=[*consented, stranger])
    answer = gateway.client.request_access(body)
    assert answer.decision == "GRANTED"
    assert gateway.client.get_access(answer.access_id, wait=True).status == "confirmed"
    engine, indexer = index_with_cohorts(
        world.ledger.deployment, chain.rpc_url, f"sqlite:///{tmp_path / 'audit.db'}",
        [gateway.settings.effective_database_url],
    )  # fmt: skip
    try:
        for subject in consented:
            report = subject_report(engine, hexed(subject))
            (access,) = [a for a in report.accesses if a.access_id == answer.access_id]
            assert access.admitted_by == "cohort"
            assert access.inclusion.size == 3
            assert world.ledger.call(
                "ConsentRegistry", "cohortIncludes", bytes.fromhex(access.inclusion.root[2:]),
                access.inclusion.size, access.inclusion.index, subject,
                [bytes.fromhex(p[2:]) for p in access.inclusion.proof],
            )  # fmt: skip
            assert [c.status for c in report.consents] == ["GRANTED"]
        assert subject_report(engine, hexed(stranger)).accesses == []
    finally:
        indexer.close()
        engine.dispose()
