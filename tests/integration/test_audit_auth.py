"""Who may read the audit service, on a store indexed from the real chain (SQLite and
PostgreSQL): every `/v1` path needs a credential; API tokens (made and revoked by the CLI),
OpenID Connect access tokens from a test issuer whose JWKS is served over HTTP, and patient
tokens signed by a steward whose role the service checks on chain. A regulator sees everything,
an organization what it is a party to (graphs cut and the cut marked), a patient their own
report only."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from eth_hash.auto import keccak
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audit.app import MAX_BODY_BYTES, create_app
from audit.auth import AuditRole
from audit.settings import AuditSettings
from audit.testing import (
    TestIdentityProvider,
    audit_token,
    bearer,
    drop_stores,
    index_with_cohorts,
    make_cohort_store,
    make_store_url,
    private_world,
    put_cohort,
    with_token_file,
)
from dul.artifacts import ReleaseRef, content_id, register_artifact
from dul.chain.testing import ChainHandle
from dul.cli.main import app as dul_cli
from dul.contracts.world import OMOP_FIELDS, World, derived_signer
from dul.domain import ArtifactKind, Operation, OrgKind, ReleaseKind, Role, Tier, slug_id
from dul.home import Home
from dul.keys import KeyStore
from dul.patient_tokens import PatientToken, patient_token_domain
from dul.signing import LocalSigner, Signer
from dul.subjects import new_subject_key, subject_ref

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
HOSPITAL_B = "audit-auth-b"
PASSPHRASE = "audit auth tests"
AUDIENCE = "dul-audit"


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


def signers_b() -> tuple[LocalSigner, LocalSigner]:
    return derived_signer("audit-auth.b.steward"), derived_signer("audit-auth.b.gateway")


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A deployment of this module's own; hospital B's keys are first admitted by the session's
    deployment, whose Membership the permissioned endpoint asks who may send."""
    session = world
    steward, gateway = signers_b()
    if not session.ledger.call("Membership", "isAuthorizedSender", steward.address):
        org = slug_id("audit-auth-admitted")
        tx = session.ledger.transact
        tx(session.operator, "Membership", "registerOrganization", org, OrgKind.HOSPITAL, "B")
        for signer, role in ((steward, Role.STEWARD), (gateway, Role.GATEWAY)):
            tx(session.operator, "Membership", "grantMemberRole", org, signer.address, role)
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("auth") / "deployment.json")


@dataclass
class Story:
    world: World
    hospital_b: World
    agreement_a: str
    agreement_b: str
    access_a: str
    access_b: str
    dataset_b: str
    subject_a: str
    subject_b: str
    subject_shared: str
    subject_key: Path
    pseudonym: str
    model: str
    update_b: str
    cohort_store: str


def add_hospital_b(world: World) -> World:
    steward, gateway = signers_b()
    b = replace(world, hospital=slug_id(HOSPITAL_B), dataset=slug_id(f"{HOSPITAL_B}/omop"),
                steward=steward, gateway=gateway)  # fmt: skip
    tx = world.ledger.transact
    tx(world.operator, "Membership", "registerOrganization", b.hospital, OrgKind.HOSPITAL, "B")
    tx(world.operator, "Membership", "grantMemberRole", b.hospital, steward.address, Role.STEWARD)
    tx(world.operator, "Membership", "grantMemberRole", b.hospital, gateway.address, Role.GATEWAY)
    tx(steward, "DatasetRegistry", "registerDataset", b.dataset, b.hospital,
       content_id(b"OMOP"), list(OMOP_FIELDS), Tier.PSEUDONYMIZED)  # fmt: skip
    return b


def train(
    hospital: World, agreement: bytes, cohort_store: str, subjects: list[bytes]
) -> ReleaseRef:
    """A TRAIN access whose cohort (leaves in the hospital's store) admitted `subjects`, and
    the model update it released."""
    record = hospital.access_record(agreement, tier=Tier.MODEL_PARAMETERS,
                                    operation=Operation.TRAIN)  # fmt: skip
    root, size = put_cohort(cohort_store, record.request.request_id, subjects)
    record = replace(record, cohort_root=root, cohort_size=size)
    update = content_id(f"update {uuid.uuid4()}".encode())
    ledger = hospital.ledger
    ledger.transact(hospital.gateway, "AccessLog", "recordAccesses", [record.as_abi()])
    ledger.transact(hospital.gateway, "AccessLog", "releaseResult", record.request.request_id,
                    agreement, update, ReleaseKind.MODEL_UPDATE, 64)  # fmt: skip
    return ReleaseRef(record.request.request_id, agreement, update)


@pytest.fixture(scope="module")
def story(world: World, tmp_path_factory: pytest.TempPathFactory) -> Story:
    root = tmp_path_factory.mktemp("auth-story")
    b = add_hospital_b(world)
    subject_key = root / "hospital-a.subject-key"
    pseudonym = "patient-0042"
    subject_a = subject_ref(new_subject_key(subject_key), pseudonym)
    subject_b = keccak(f"b {uuid.uuid4()}".encode())
    shared = keccak(f"shared {uuid.uuid4()}".encode())
    world.record_consents([subject_a, shared])
    # hospital B's steward claims hospital A's patient: a key of its own for a subject
    # reference it read in A's ConsentRecorded event
    world.ledger.transact(b.steward, "ConsentRegistry", "registerSubjectKey", b.hospital,
                          shared, b.steward.address)  # fmt: skip
    b.record_consents([subject_b])
    agreements = [h.activate(h.training_terms(quota=10)) for h in (world, b)]
    cohort_store = make_cohort_store(root / "gateway.db")
    releases = [
        train(world, agreements[0], cohort_store, [subject_a, shared]),
        train(b, agreements[1], cohort_store, [subject_b]),
    ]
    lab = world.requester
    for ref in releases:
        register_artifact(world.ledger, lab, ref.result_hash, ArtifactKind.MODEL_UPDATE, [ref])
    model = content_id(f"model {uuid.uuid4()}".encode())
    register_artifact(world.ledger, lab, model, ArtifactKind.MODEL, [],
                      [r.result_hash for r in releases])  # fmt: skip
    return Story(
        world=world, hospital_b=b,
        agreement_a=hexed(agreements[0]), agreement_b=hexed(agreements[1]),
        access_a=hexed(releases[0].access_id), access_b=hexed(releases[1].access_id),
        dataset_b=hexed(b.dataset), subject_a=hexed(subject_a), subject_b=hexed(subject_b),
        subject_shared=hexed(shared), subject_key=subject_key, pseudonym=pseudonym,
        model=hexed(model),
        update_b=hexed(releases[1].result_hash), cohort_store=cohort_store,
    )  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def settings(
    request: pytest.FixtureRequest,
    story: Story,
    chain: ChainHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AuditSettings]:
    root = tmp_path_factory.mktemp("auth-store")
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(request.param, root, cleanup)
    deployment = story.world.ledger.deployment
    engine, indexer = index_with_cohorts(deployment, chain.rpc_url, url, [story.cohort_store])
    indexer.close()
    engine.dispose()
    manifest = root / "deployment.json"
    manifest.write_text(json.dumps(deployment.raw))
    yield with_token_file(
        AuditSettings(
            database_url=url, rpc_url=chain.rpc_url, deployment_path=manifest, steward_cache_s=0
        )
    )
    drop_stores(cleanup)


@pytest.fixture(scope="module")
def client(settings: AuditSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def paths(story: Story) -> list[str]:
    """One of every `/v1` path the service has."""
    return [
        f"/v1/provenance/agreement/{story.agreement_a}",
        f"/v1/provenance/dataset/{hexed(story.world.dataset)}",
        f"/v1/provenance/access/{story.access_a}",
        f"/v1/provenance/artifact/{story.model}",
        f"/v1/provenance/subject/{story.subject_a}",
        "/v1/provenance/organization/hospital-a",
        f"/v1/provenance/agreement/{story.agreement_a}?format=prov-json",
        f"/v1/provenance/agreement/{story.agreement_a}?format=fhir",
        "/v1/verify?chain=false",
        f"/v1/reports/agreements/{story.agreement_a}",
        f"/v1/subjects/{story.subject_a}/accesses",
        "/v1/organizations",
        "/v1/agreements?status=ACTIVE&limit=5",
        "/v1/accesses?limit=5",
    ]


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"], body["type"]) == (status, code, f"urn:dul:problem:{code}")
    assert body["detail"]
    return body


def get(client: TestClient, path: str, token: str) -> Any:
    return client.get(path, headers=bearer(token))


# --- no credential, a bad one, a revoked or expired one ---------------------------------------


def test_every_path_needs_a_valid_credential(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    revoked = audit_token(settings, name="auth-revoked")
    assert get(client, "/v1/verify?chain=false", revoked).status_code == 200
    from audit.auth import audit_tokens

    assert settings.tokens_path is not None
    assert audit_tokens(settings.tokens_path).revoke("auth-revoked")
    expired = audit_token(settings, expires_at=time.time() - 1)
    for path in paths(story):
        missing = client.get(path)
        problem(missing, 401, "credential_missing")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        for header in ("Bearer dulau_nope", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 9000,
                       "Bearer a.b.c", "Bearer dulpt_short"):  # fmt: skip
            bad = client.get(path, headers={"Authorization": header})
            problem(bad, 401, "credential_invalid")
            assert 'error="invalid_token"' in bad.headers["www-authenticate"]
        problem(get(client, path, revoked), 401, "credential_revoked")
        problem(get(client, path, expired), 401, "credential_expired")


def test_health_is_open_and_metrics_name_no_ids(client: TestClient, story: Story) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    client.get(f"/v1/provenance/agreement/{story.agreement_a}")
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "dul_audit_auth_refused_total" in metrics.text
    assert "0x" not in metrics.text
    assert story.agreement_a[2:] not in metrics.text


# --- API tokens: regulator and organizations ---------------------------------------------------


def test_a_regulator_sees_every_path(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    token = audit_token(settings, AuditRole.REGULATOR, "regulator")
    for path in paths(story):
        assert get(client, path, token).status_code == 200, path
    model = get(client, f"/v1/provenance/artifact/{story.model}?direction=up", token).json()
    assert f"artifact:{story.update_b}" in {n["id"] for n in model["nodes"]}
    assert model["cut"] == []


def test_an_organization_sees_its_own_agreements_only(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    token = audit_token(settings, AuditRole.ORGANIZATION, "hospital-a")
    for path in (
        f"/v1/provenance/agreement/{story.agreement_a}",
        f"/v1/reports/agreements/{story.agreement_a}",
        f"/v1/provenance/access/{story.access_a}",
        "/v1/provenance/organization/hospital-a",
        f"/v1/subjects/{story.subject_a}/accesses",
        f"/v1/provenance/subject/{story.subject_a}",
    ):
        assert get(client, path, token).status_code == 200, path
    for path in (
        f"/v1/provenance/agreement/{story.agreement_b}",
        f"/v1/reports/agreements/{story.agreement_b}",
        f"/v1/provenance/access/{story.access_b}",
        f"/v1/provenance/dataset/{story.dataset_b}",
        f"/v1/provenance/artifact/{story.update_b}",
        f"/v1/provenance/organization/{HOSPITAL_B}",
    ):
        problem(get(client, path, token), 403, "out_of_scope")
    # another hospital's patient: as if there were none
    problem(get(client, f"/v1/subjects/{story.subject_b}/accesses", token), 404,
            "subject_not_found")  # fmt: skip
    problem(get(client, f"/v1/provenance/subject/{story.subject_b}", token), 404,
            "subject_not_found")  # fmt: skip
    unknown = hexed(keccak(b"nobody"))
    problem(get(client, f"/v1/subjects/{unknown}/accesses", token), 404, "subject_not_found")
    # an unknown agreement is unknown to everyone
    problem(get(client, f"/v1/reports/agreements/{unknown}", token), 404, "agreement_not_found")


def test_the_graph_is_cut_where_the_organization_stops(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    token = audit_token(settings, AuditRole.ORGANIZATION, "hospital-a")
    graph = get(client, f"/v1/provenance/artifact/{story.model}?direction=up", token).json()
    ids = {n["id"] for n in graph["nodes"]}
    root = f"artifact:{story.model}"
    access_a = f"access:{story.access_a}@{story.agreement_a}"
    assert {root, access_a, f"agreement:{story.agreement_a}"} <= ids
    hidden = {f"artifact:{story.update_b}", f"access:{story.access_b}@{story.agreement_b}",
              f"agreement:{story.agreement_b}", f"dataset:{story.dataset_b}"}  # fmt: skip
    assert not hidden & ids
    assert root in graph["cut"]
    assert all(e["source"] in ids and e["target"] in ids for e in graph["edges"])
    exported = get(client, f"/v1/provenance/artifact/{story.model}?direction=up&format=prov-json",
                   token).json()  # fmt: skip
    model_entity = exported["entity"][f"dul:artifact-{story.model}"]
    assert model_entity["dul:cut"] is True
    assert not any(story.update_b in key for part in exported.values() for key in part)
    # the requester is a party to both agreements: nothing is cut for it
    lab = audit_token(settings, AuditRole.ORGANIZATION, "institute")
    full = get(client, f"/v1/provenance/artifact/{story.model}?direction=up", lab).json()
    assert hidden <= {n["id"] for n in full["nodes"]}
    assert full["cut"] == []
    # ... but the hospitals' patients are not the requester's
    problem(get(client, f"/v1/subjects/{story.subject_a}/accesses", lab), 404,
            "subject_not_found")  # fmt: skip
    access = get(client, f"/v1/provenance/access/{story.access_a}", lab).json()
    assert not any(n["type"] == "subject" for n in access["nodes"])


def test_an_organization_gets_the_verdict_without_the_findings(
    client: TestClient, settings: AuditSettings
) -> None:
    token = audit_token(settings, AuditRole.ORGANIZATION, "hospital-a")
    report = get(client, "/v1/verify?chain=false", token).json()
    assert report["findings"] == []
    assert "checkpoint_block" in report


# --- patient tokens ------------------------------------------------------------------------------


def patient_token(
    story: Story,
    signer: Signer,
    subject: str,
    holder: str = "hospital-a",
    *,
    issued: int | None = None,
    lifetime: int = 600,
) -> str:
    deployment = story.world.ledger.deployment
    domain = patient_token_domain(deployment.chain_id, deployment.address("Membership"))
    now = int(time.time()) if issued is None else issued
    token = PatientToken(bytes.fromhex(subject[2:]), slug_id(holder), now, now + lifetime)
    return token.signed(signer, domain).encode()


def test_a_patient_sees_their_own_report_and_nothing_else(client: TestClient, story: Story) -> None:
    token = patient_token(story, story.world.steward, story.subject_a)
    report = get(client, f"/v1/subjects/{story.subject_a}/accesses", token)
    assert report.status_code == 200, report.text
    assert [a["access_id"] for a in report.json()["accesses"]] == [story.access_a]
    problem(get(client, f"/v1/subjects/{story.subject_b}/accesses", token), 403, "out_of_scope")
    for path in paths(story):
        if not path.startswith("/v1/subjects/"):
            problem(get(client, path, token), 403, "out_of_scope")


def test_patient_tokens_that_are_refused(client: TestClient, story: Story) -> None:
    path = f"/v1/subjects/{story.subject_a}/accesses"
    not_a_steward = patient_token(story, story.world.requester, story.subject_a)
    problem(get(client, path, not_a_steward), 401, "credential_invalid")
    stranger = patient_token(story, derived_signer("audit-auth.stranger"), story.subject_a)
    problem(get(client, path, stranger), 401, "credential_invalid")
    wrong_holder = patient_token(story, story.world.steward, story.subject_a, HOSPITAL_B)
    problem(get(client, path, wrong_holder), 401, "credential_invalid")
    expired = patient_token(story, story.world.steward, story.subject_a,
                            issued=int(time.time()) - 700)  # fmt: skip
    problem(get(client, path, expired), 401, "credential_expired")
    too_long = patient_token(story, story.world.steward, story.subject_a, lifetime=7200)
    problem(get(client, path, too_long), 401, "credential_invalid")
    tampered = patient_token(story, story.world.steward, story.subject_a)
    flipped = tampered[:20] + ("A" if tampered[20] != "A" else "B") + tampered[21:]
    problem(get(client, path, flipped), 401, "credential_invalid")
    # hospital B's steward vouching for hospital A's patient sees what it would see of a
    # subject nobody holds: an empty report, the same answer, so it learns nothing
    b_for_a = patient_token(story, story.hospital_b.steward, story.subject_a, HOSPITAL_B)
    unknown = "0x" + "5a" * 32
    b_for_unknown = patient_token(story, story.hospital_b.steward, unknown, HOSPITAL_B)
    answers = [get(client, f"/v1/subjects/{s}/accesses", t) for s, t in
               ((story.subject_a, b_for_a), (unknown, b_for_unknown))]  # fmt: skip
    assert [a.status_code for a in answers] == [200, 200]
    seen_a, seen_unknown = (a.json() for a in answers)
    assert seen_a["accesses"] == seen_a["consents"] == seen_a["authorizations"] == []
    assert seen_a == {**seen_unknown, "subject": story.subject_a}


def test_a_hospital_claiming_another_hospitals_patient_reads_its_own_records_only(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    """Hospital B registered a key for hospital A's patient, so B holds a record of the subject
    reference: its report, asked as an organization or through a patient token B's steward
    signs, holds B's records only: not A's consent, nor that A's access admitted the patient
    (cohort membership is not on chain)."""
    path = f"/v1/subjects/{story.subject_shared}/accesses"
    b = hexed(story.hospital_b.hospital)
    b_org = audit_token(settings, AuditRole.ORGANIZATION, HOSPITAL_B)
    b_patient = patient_token(story, story.hospital_b.steward, story.subject_shared, HOSPITAL_B)
    for token in (b_org, b_patient):
        report = get(client, path, token)
        assert report.status_code == 200, report.text
        body = report.json()
        assert (body["accesses"], body["consents"], body["authorizations"]) == ([], [], [])
        assert [k["holder_org"] for k in body["keys"]] == [b]
    graph = get(client, f"/v1/provenance/subject/{story.subject_shared}", b_org).json()
    types = {n["type"] for n in graph["nodes"]}
    assert not types & {"access", "cohort", "consent", "agreement"}, types
    a_org = audit_token(settings, AuditRole.ORGANIZATION, "hospital-a")
    a_patient = patient_token(story, story.world.steward, story.subject_shared)
    for token in (a_org, a_patient):
        seen = get(client, path, token).json()
        assert [a["access_id"] for a in seen["accesses"]] == [story.access_a]
        assert [c["holder_org"] for c in seen["consents"]] == [hexed(story.world.hospital)]
        assert seen["keys"] == []
    everything = get(client, path, audit_token(settings)).json()
    assert [a["access_id"] for a in everything["accesses"]] == [story.access_a]
    assert [k["holder_org"] for k in everything["keys"]] == [b]
    assert len(everything["consents"]) == 1


def test_the_steward_cli_issues_a_patient_token(
    client: TestClient, story: Story, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = Home(tmp_path / "steward-home").ensure()
    (home.root / "deployment.json").write_text(json.dumps(story.world.ledger.deployment.raw))
    secret = keccak(b"dul world steward")  # the world's steward key (derived_signer)
    KeyStore(home, passphrase=PASSPHRASE, scrypt_n=2**14).import_key("steward", secret)
    monkeypatch.setenv("DUL_HOME", str(home.root))
    monkeypatch.setenv("DUL_KEY_PASSPHRASE", PASSPHRASE)
    runner = CliRunner()
    args = ["steward", "patient-token", story.pseudonym, "--subject-key", str(story.subject_key)]
    made = runner.invoke(dul_cli, [*args, "--minutes", "5", "--json"])
    assert made.exit_code == 0, made.output
    out = json.loads(made.stdout)
    assert out["subject"] == story.subject_a
    assert get(client, f"/v1/subjects/{story.subject_a}/accesses", out["token"]).status_code == 200
    too_long = runner.invoke(dul_cli, [*args, "--minutes", "100000"])
    assert too_long.exit_code == 2
    no_key = runner.invoke(dul_cli, ["steward", "patient-token", "p", "--subject-key",
                                     str(tmp_path / "none")])  # fmt: skip
    assert no_key.exit_code != 0
    assert "Traceback" not in no_key.output


# --- the CLI's API tokens ----------------------------------------------------------------------


def test_admin_token_create_list_revoke(
    story: Story, settings: AuditSettings, chain: ChainHandle
) -> None:
    """On the session's data directory (its deployment knows hospital-a)."""
    env = chain.env
    runner = CliRunner()
    name = f"ward-{uuid.uuid4().hex[:6]}"
    create = ["admin", "token", "create", name, "--service", "audit"]
    made = runner.invoke(dul_cli, [*create, "--role", "organization", "--org", "hospital-a",
                                   "--expires-in", "1d", "--json"], env=env)  # fmt: skip
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["token"].startswith("dulau_")
    assert created["role"] == "organization"
    assert 86_000 < created["expires_at"] - time.time() <= 86_400
    path = chain.home.root / "audit" / "tokens.json"
    assert created["token"] not in path.read_text()  # stored hashed
    served = settings.model_copy(update={"tokens_path": path})
    with TestClient(create_app(served), raise_server_exceptions=False) as client:
        own = f"/v1/reports/agreements/{story.agreement_a}"
        assert get(client, own, created["token"]).status_code == 200
        listed = runner.invoke(dul_cli, ["admin", "token", "list", "--service", "audit", "--json"],
                               env=env)  # fmt: skip
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        assert rows[name] == {"name": name, "org": "hospital-a", "role": "organization",
                              "revoked": False, "expired": False}  # fmt: skip
        revoked = runner.invoke(dul_cli, ["admin", "token", "revoke", name, "--service",
                                          "audit"], env=env)  # fmt: skip
        assert revoked.exit_code == 0, revoked.output
        problem(get(client, own, created["token"]), 401, "credential_revoked")
    regulator = runner.invoke(dul_cli, ["admin", "token", "create", f"{name}-r", "--service",
                                        "audit", "--json"], env=env)  # fmt: skip
    assert json.loads(regulator.stdout)["role"] == "regulator"
    for bad in (
        ["--role", "organization"],  # no --org
        ["--role", "steward"],  # a gateway role
        ["--role", "regulator", "--expires-in", "forever"],
        ["--service", "nowhere"],
    ):
        args = ["admin", "token", "create", f"{name}-x", *bad]
        if "--service" not in bad:
            args += ["--service", "audit"]
        refused = runner.invoke(dul_cli, args, env=env)
        assert refused.exit_code == 2, (bad, refused.output)
        assert "Traceback" not in refused.output
    unknown_org = [*create[:3], f"{name}-u", "--service", "audit", "--role", "organization",
                   "--org", "nowhere-at-all"]  # fmt: skip
    unknown = runner.invoke(dul_cli, unknown_org, env=env)
    assert unknown.exit_code == 1
    assert "unknown_org" in unknown.stderr
    # the gateway's token file is another one
    gateway = runner.invoke(dul_cli, ["admin", "token", "list", "--json"], env=env)
    assert name not in {row["name"] for row in json.loads(gateway.stdout)}


# --- OpenID Connect ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def issuer() -> Iterator[TestIdentityProvider]:
    """A test identity provider: its own key, its JWKS and endpoints on local HTTP."""
    provider = TestIdentityProvider(AUDIENCE)
    try:
        yield provider
    finally:
        provider.close()


def test_oidc_access_tokens(
    settings: AuditSettings, issuer: TestIdentityProvider, story: Story
) -> None:
    oidc = issuer.settings(settings).model_copy(
        update={"oidc_roles_claim": "realm_access.roles", "oidc_org_claim": "org"}
    )
    own = f"/v1/reports/agreements/{story.agreement_a}"
    other = f"/v1/reports/agreements/{story.agreement_b}"
    with TestClient(create_app(oidc), raise_server_exceptions=False) as client:
        regulator = issuer.token(realm_access={"roles": ["regulator"]})
        assert get(client, other, regulator).status_code == 200
        staff = issuer.token(realm_access={"roles": ["organization"]}, org="hospital-a")
        assert get(client, own, staff).status_code == 200
        problem(get(client, other, staff), 403, "out_of_scope")
        problem(get(client, own, issuer.token(realm_access={"roles": ["nurse"]})), 403,
                "role_missing")  # fmt: skip
        problem(get(client, own, issuer.token(realm_access={"roles": ["organization"]})), 403,
                "role_missing")  # fmt: skip
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for refused, code in (
            (issuer.token(aud="another-service", realm_access={"roles": ["regulator"]}),
             "credential_invalid"),
            (issuer.token(iss="https://evil.example", realm_access={"roles": ["regulator"]}),
             "credential_invalid"),
            (issuer.token(exp=int(time.time()) - 120, realm_access={"roles": ["regulator"]}),
             "credential_expired"),
            (issuer.token(key=other_key, realm_access={"roles": ["regulator"]}),
             "credential_invalid"),
            (issuer.token(exp=None, realm_access={"roles": ["regulator"]}),
             "credential_invalid"),
            (jwt.encode({"iss": issuer.issuer, "aud": AUDIENCE, "exp": int(time.time()) + 60,
                         "realm_access": {"roles": ["regulator"]}}, "a shared secret of 32 bytes!!",
                        algorithm="HS256", headers={"kid": issuer.kid}), "credential_invalid"),
        ):  # fmt: skip
            problem(get(client, own, refused), 401, code)
    # a service that accepts no OIDC tokens says so
    with TestClient(create_app(settings), raise_server_exceptions=False) as plain:
        problem(get(plain, own, regulator), 401, "credential_invalid")


def test_oidc_keys_from_a_file(
    settings: AuditSettings, issuer: TestIdentityProvider, tmp_path: Path
) -> None:
    jwks = tmp_path / "jwks.json"
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(issuer.key.public_key()))
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": issuer.kid}]}))
    oidc = settings.model_copy(update={"oidc_issuer": issuer.issuer, "oidc_audience": AUDIENCE,
                                       "oidc_jwks_path": jwks})  # fmt: skip
    with TestClient(create_app(oidc), raise_server_exceptions=False) as client:
        token = issuer.token(roles="regulator")
        assert get(client, "/v1/verify?chain=false", token).status_code == 200
        rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        new = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rotated))
        jwks.write_text(json.dumps({"keys": [{**new, "kid": "next"}]}))  # the old key retired
        problem(get(client, "/v1/verify?chain=false", token), 401, "credential_invalid")
        jwks.write_text("{not json")
        problem(get(client, "/v1/verify?chain=false", token), 503,
                "identity_provider_unavailable")  # fmt: skip


# --- the console's sign-in routes ------------------------------------------------------------


def test_auth_config_and_me(
    client: TestClient, settings: AuditSettings, issuer: TestIdentityProvider, story: Story
) -> None:
    assert client.get("/auth/config").json() == {"oidc": None}
    problem(client.get("/auth/me"), 401, "credential_missing")
    token = audit_token(settings, AuditRole.ORGANIZATION, "hospital-a", name="auth-me")
    me = get(client, "/auth/me", token).json()
    assert me == {"role": "organization", "via": "token", "name": "auth-me",
                  "org": hexed(slug_id("hospital-a")), "org_slug": "hospital-a",
                  "subject": None}  # fmt: skip
    patient = patient_token(story, story.world.steward, story.subject_a)
    assert get(client, "/auth/me", patient).json()["subject"] == story.subject_a
    with TestClient(create_app(issuer.settings(settings))) as oidc:
        config = oidc.get("/auth/config").json()["oidc"]
        assert config["authorization_endpoint"] == f"{issuer.url}/authorize"
        assert config["client_id"] == issuer.client_id


def _code(issuer: TestIdentityProvider, verifier: str, redirect: str, **claims: Any) -> str:
    """An authorization code from the provider, as a browser would be given one."""
    digest = hashlib.sha256(verifier.encode()).digest()
    challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    issuer.next_claims = claims
    answer = httpx.get(f"{issuer.url}/authorize", params={
        "response_type": "code", "client_id": issuer.client_id, "redirect_uri": redirect,
        "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
    })  # fmt: skip
    assert answer.status_code == 302
    return parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]


def test_auth_token_redeems_a_pkce_code(
    settings: AuditSettings, issuer: TestIdentityProvider, story: Story
) -> None:
    redirect = "http://127.0.0.1:1/"
    verifier = "v" * 43
    with TestClient(create_app(issuer.settings(settings)), raise_server_exceptions=False) as c:
        code = _code(issuer, verifier, redirect, roles=["organization"], org="hospital-a")
        answer = c.post("/auth/token", json={"code": code, "code_verifier": verifier,
                                             "redirect_uri": redirect})  # fmt: skip
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["me"]["org_slug"] == "hospital-a"
        own = f"/v1/reports/agreements/{story.agreement_a}"
        assert get(c, own, body["access_token"]).status_code == 200
        # the same code twice, or another verifier: the provider refuses, and so do we
        again = c.post("/auth/token", json={"code": code, "code_verifier": verifier,
                                            "redirect_uri": redirect})  # fmt: skip
        problem(again, 401, "credential_invalid")
        code = _code(issuer, verifier, redirect, roles=["regulator"])
        wrong = c.post("/auth/token", json={"code": code, "code_verifier": "w" * 43,
                                            "redirect_uri": redirect})  # fmt: skip
        problem(wrong, 401, "credential_invalid")
        short = {"code": "x", "code_verifier": "short", "redirect_uri": redirect}
        problem(c.post("/auth/token", json=short), 422, "validation_error")
        huge = b'{"code": "' + b"x" * MAX_BODY_BYTES + b'"}'
        problem(c.post("/auth/token", content=huge), 413, "body_too_large")
    with TestClient(create_app(settings), raise_server_exceptions=False) as plain:
        problem(plain.post("/auth/token", json={"code": "x", "code_verifier": verifier,
                                                "redirect_uri": redirect}), 401,
                "oidc_not_configured")  # fmt: skip


def test_a_half_configured_identity_provider_is_refused_at_start(tmp_path: Path) -> None:
    from audit.cli import app as audit_cli

    env = {"DUL_AUDIT_OIDC_ISSUER": "https://idp.example", "DUL_HOME": str(tmp_path)}
    store = f"sqlite:///{tmp_path / 'a.db'}"
    refused = CliRunner().invoke(audit_cli, ["serve", "--database-url", store], env=env)
    assert refused.exit_code == 2
    assert "config_error" in refused.stderr
    assert "DUL_AUDIT_OIDC_AUDIENCE" in refused.stderr
    assert "Traceback" not in refused.output
    with pytest.raises(ValueError, match="oidc_algorithms"):
        AuditSettings(oidc_algorithms=["HS256"])


# --- the front door: organizations, agreements, accesses ------------------------------------


def walk(client: TestClient, path: str, token: str, limit: int) -> list[dict[str, Any]]:
    """Every item of a paged list, `limit` a page, following `next_cursor`."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1_000):
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = get(client, f"{path}{'&' if '?' in path else '?'}{query}", token)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the cursor never ended")


def test_a_regulator_lists_everything_newest_first_in_pages(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    token = audit_token(settings, AuditRole.REGULATOR, "regulator")
    orgs = walk(client, "/v1/organizations", token, 2)
    assert {"hospital-a", HOSPITAL_B, "institute"} <= {o["slug"] for o in orgs}
    assert len({o["org_id"] for o in orgs}) == len(orgs)
    b = next(o for o in orgs if o["slug"] == HOSPITAL_B)
    assert (b["kind"], b["status"], b["name"]) == ("HOSPITAL", "ACTIVE", "B")

    agreements = walk(client, "/v1/agreements", token, 1)
    assert len({a["agreement_id"] for a in agreements}) == len(agreements)
    positions = [(a["chain"]["block"], a["chain"]["tx_index"], a["chain"]["log_index"])
                 for a in agreements]  # fmt: skip
    assert positions == sorted(positions, reverse=True)
    by_id = {a["agreement_id"]: a for a in agreements}
    a = by_id[story.agreement_a]
    assert (a["status"], a["holder"], a["requester"], a["quota"], a["granted"]) == (
        "ACTIVE",
        "hospital-a",
        "institute",
        10,
        1,
    )
    assert a["scenario"] == "AI_TRAINING"
    assert story.agreement_b in by_id
    assert walk(client, "/v1/agreements?limit=200", token, 200) == agreements
    active = walk(client, "/v1/agreements?status=ACTIVE", token, 50)
    assert {x["status"] for x in active} == {"ACTIVE"}
    assert story.agreement_a in {x["agreement_id"] for x in active}
    assert all(x["status"] == "REVOKED" for x in walk(client, "/v1/agreements?status=REVOKED",
                                                       token, 50))  # fmt: skip

    accesses = walk(client, "/v1/accesses", token, 1)
    ids = [x["access_id"] for x in accesses]
    assert {story.access_a, story.access_b} <= set(ids)
    assert len(set(ids)) == len(ids)
    mine = next(x for x in accesses if x["access_id"] == story.access_a)
    assert (mine["decision"], mine["reason"], mine["operation"], mine["tier"]) == (
        "GRANTED",
        "NONE",
        "TRAIN",
        "MODEL_PARAMETERS",
    )
    assert mine["agreement_id"] == story.agreement_a
    assert mine["requester"].startswith("0x")
    assert mine["requester"] != mine["requester"].lower()  # EIP-55
    assert str(mine["time"]).endswith("Z")


def test_an_organization_lists_what_it_is_a_party_to(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    token = audit_token(settings, AuditRole.ORGANIZATION, "hospital-a")
    assert [o["slug"] for o in walk(client, "/v1/organizations", token, 5)] == ["hospital-a"]
    agreements = walk(client, "/v1/agreements", token, 1)
    assert story.agreement_a in {a["agreement_id"] for a in agreements}
    assert story.agreement_b not in {a["agreement_id"] for a in agreements}
    assert all("hospital-a" in (a["holder"], a["requester"]) for a in agreements)
    accesses = {x["access_id"] for x in walk(client, "/v1/accesses", token, 1)}
    assert story.access_a in accesses
    assert story.access_b not in accesses
    # the requester is a party to both hospitals' agreements
    lab = audit_token(settings, AuditRole.ORGANIZATION, "institute")
    both = {a["agreement_id"] for a in walk(client, "/v1/agreements", lab, 50)}
    assert {story.agreement_a, story.agreement_b} <= both
    assert {story.access_a, story.access_b} <= {
        x["access_id"] for x in walk(client, "/v1/accesses", lab, 50)
    }
    # an organization the store does not know has nothing to list
    nobody = audit_token(settings, AuditRole.ORGANIZATION, "nobody-here")
    for path in ("/v1/organizations", "/v1/agreements", "/v1/accesses"):
        assert get(client, path, nobody).json() == {"items": [], "next_cursor": None}


def test_the_lists_refuse_patients_and_bad_parameters(
    client: TestClient, settings: AuditSettings, story: Story
) -> None:
    patient = patient_token(story, story.world.steward, story.subject_a)
    token = audit_token(settings, AuditRole.REGULATOR, "regulator")
    for path in ("/v1/organizations", "/v1/agreements", "/v1/accesses"):
        problem(client.get(path), 401, "credential_missing")
        problem(get(client, path, patient), 403, "out_of_scope")
        for query in ("limit=0", "limit=201", "limit=-1", "limit=x", "cursor=" + "1" * 41):
            problem(get(client, f"{path}?{query}", token), 422, "validation_error")
        for cursor in ("x", "1-2", "99999999999999999999-0-0", "1-2-3-4", "-1-0-0"):
            problem(get(client, f"{path}?cursor={cursor}", token), 422, "malformed_cursor")
    problem(get(client, "/v1/agreements?status=LOST", token), 422, "validation_error")
    problem(get(client, "/v1/agreements?status=active", token), 422, "validation_error")
