"""Specific consent on the real chain, over real HTTP: a consent limited to studies (agreement
ids), to requesting organizations or to a disease term (DUO:0000007, exact CURIE match) admits
its subject only to cohorts of the studies it covers — at the gateway's decision, and in the
audit service's consent check, where `verify` names an admitted subject whose consent did not
cover the study. The REST routes and the steward CLI take and show the new fields, bad ones are
refused with clear errors before anything is sent, and nothing that names a patient (their
pseudonym, the hospital's subject key) reaches any transaction or event."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from eth_hash.auto import keccak
from typer.testing import CliRunner, Result

from audit.exports import block_times, fhir_json, graph_blocks
from audit.provenance import Kind, provenance
from audit.testing import (
    index_with_cohorts,
    make_cohort_store,
    private_world,
    put_cohort,
    subject_of,
)
from audit.transparency import subject_report
from audit.verify import verify_store
from dul import log as dul_log
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle, chain_haystack
from dul.cli.steward import app as steward_app
from dul.cohort import verify_inclusion
from dul.consent_terms import ConsentTerms, disease_code
from dul.contracts.typed_data import AccessRequest
from dul.contracts.world import World
from dul.domain import Operation, Scenario, Tier, slug_id
from dul.keys import KeyStore
from dul.signing import Signer
from dul.subjects import load_subject_key, subject_ref
from ledger_gateway.client import (
    GatewayClientError,
    StewardClient,
    sign_request,
    sign_steward_call,
)
from ledger_gateway.relay import function
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

CANCER = "MONDO:0007254"  # breast carcinoma
DIABETES = "MONDO:0005015"


def refs(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@pytest.fixture(scope="module")
def studies(world: World) -> dict[str, bytes]:
    """Three consent-bound studies of the institute at the hospital: a breast cancer study
    (its agreement signed with DUO:0000007 and the disease term), a general one, and a
    diabetes study."""
    base = world.cohort_terms()
    cancer = replace(base, duo_codes=(7,), disease_code=disease_code(CANCER), nonce=time.time_ns())
    general = replace(base, nonce=time.time_ns() + 1)
    diabetes = replace(cancer, disease_code=disease_code(DIABETES), nonce=time.time_ns() + 2)
    return {
        "cancer": world.activate(cancer),
        "general": world.activate(general),
        "diabetes": world.activate(diabetes),
    }


def admitted(
    world: World,
    gateway: GatewayHandle,
    agreement: bytes,
    cohort: list[bytes],
    *,
    confirm: bool = False,
) -> set[str]:
    """The subjects of `cohort` the gateway admits to the study (`confirm`: once on chain)."""
    request = AccessRequest(
        request_id=os.urandom(32),
        agreement_id=agreement,
        dataset_id=world.dataset,
        field_mask=0b0110,
        tier=Tier.PSEUDONYMIZED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM condition_occurrence"),
        deadline=int(time.time()) + 600,
    )
    body = sign_request(world.requester, request, gateway.domain, cohort=cohort)
    answer = gateway.client.request_access(body)
    if confirm:
        assert gateway.client.get_access(answer.access_id, wait=True).status == "confirmed"
    if answer.decision == "DENIED":
        assert answer.reasons == ["CONSENT_MISSING"]
        return set()
    assert answer.cohort is not None
    return set(answer.cohort.admitted)


def test_a_study_specific_consent_admits_to_that_study_only(
    world: World, gateway: GatewayHandle, studies: dict[str, bytes]
) -> None:
    mine, general = refs(1)[0], refs(1)[0]
    world.record_consents([mine], studies=[studies["general"]])
    world.record_consents([general])
    both = [mine, general]
    assert admitted(world, gateway, studies["general"], both) == {hexed(mine), hexed(general)}
    assert admitted(world, gateway, studies["cancer"], both) == {hexed(general)}
    assert admitted(world, gateway, studies["diabetes"], both) == {hexed(general)}


def test_a_disease_specific_consent_admits_only_to_a_study_of_that_disease(
    world: World, gateway: GatewayHandle, studies: dict[str, bytes]
) -> None:
    mine = refs(1)[0]
    world.record_consents([mine], duo_codes=(7,), disease=disease_code(CANCER))
    assert admitted(world, gateway, studies["cancer"], [mine]) == {hexed(mine)}
    assert admitted(world, gateway, studies["general"], [mine]) == set()
    assert admitted(world, gateway, studies["diabetes"], [mine]) == set()


def test_a_requester_specific_consent_admits_to_that_organization_s_studies_only(
    world: World, gateway: GatewayHandle, studies: dict[str, bytes]
) -> None:
    institute_only, regulator_only = refs(1)[0], refs(1)[0]
    world.record_consents([institute_only], requesters=[world.institute])
    world.record_consents([regulator_only], requesters=[world.regulator_org])
    cohort = [institute_only, regulator_only]
    for study in ("general", "cancer"):
        assert admitted(world, gateway, studies[study], cohort) == {hexed(institute_only)}


def test_a_withdrawn_specific_consent_admits_nobody(
    world: World, gateway: GatewayHandle, studies: dict[str, bytes]
) -> None:
    mine = refs(1)[0]
    [consent] = world.record_consents([mine], studies=[studies["cancer"]])
    assert admitted(world, gateway, studies["cancer"], [mine]) == {hexed(mine)}
    world.ledger.transact(world.steward, "ConsentRegistry", "withdrawConsent", consent)
    assert admitted(world, gateway, studies["cancer"], [mine]) == set()


# --------------------------------------------------------------------------- REST


@pytest.fixture(scope="module")
def steward(gateway: GatewayHandle) -> Iterator[StewardClient]:
    token = TokenStore(gateway.settings.tokens_path).create(
        f"specific-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    with StewardClient(gateway.url, token) as client:
        yield client


def signed(world: World, signer: Signer, terms: ConsentTerms) -> bytes:
    data = function("ConsentRegistry", "recordConsent").encode(terms.as_abi())
    registry = world.ledger.deployment.address("ConsentRegistry")
    return sign_steward_call(world.ledger.w3, signer, registry, data, gas=800_000)


def test_rest_records_and_lists_a_specific_consent(
    world: World, steward: StewardClient, studies: dict[str, bytes]
) -> None:
    subject = refs(1)[0]
    terms = ConsentTerms(
        holder=world.hospital, subject=subject, scenarios=1 << Scenario.RESEARCH,
        valid_until=int(time.time()) + 86_400, duo_codes=(42, 7),
        disease_code=disease_code(CANCER), studies=tuple(sorted(studies.values())),
        requesters=(world.institute,),
    ).check()  # fmt: skip
    answer = steward.record_consents(signed(world, world.steward, terms), wait=True)
    assert answer.status == "confirmed"
    [shown] = steward.consents(subject).consents
    assert shown.studies == sorted(hexed(s) for s in studies.values())
    assert shown.requesters == ["institute"]
    assert shown.disease == CANCER
    assert shown.duo_codes == ["DUO:0000042", "DUO:0000007"]
    assert (shown.status, shown.in_force) == ("GRANTED", True)


def test_rest_refuses_a_scope_the_chain_refuses_and_sends_nothing(
    world: World, steward: StewardClient
) -> None:
    base = ConsentTerms(world.hospital, refs(1)[0], 1 << Scenario.RESEARCH, int(time.time()) + 600)
    many = tuple(sorted(keccak(f"study {i}".encode()) for i in range(17)))
    mismatch = (422, "ConsentRegistryDiseaseCodeMismatch")
    cases = [
        (replace(base, studies=many), (422, "ConsentRegistryTooManyStudies")),
        (replace(base, requesters=(world.institute,) * 17),
         (422, "ConsentRegistryTooManyRequesters")),
        (replace(base, duo_codes=tuple(range(100, 117))), (422, "ConsentRegistryTooManyDuoCodes")),
        (replace(base, studies=many[:2][::-1]), (422, "ConsentRegistryScopeNotAscending")),
        (replace(base, requesters=(slug_id("nobody-at-all"),)),
         (404, "ConsentRegistryUnknownRequester")),
        (replace(base, duo_codes=(7,)), mismatch),
        (replace(base, disease_code=disease_code(CANCER)), mismatch),
    ]  # fmt: skip
    for terms, expected in cases:
        raw = signed(world, world.steward, terms)
        before = world.ledger.w3.eth.get_transaction_count(world.steward.address, "pending")
        with pytest.raises(GatewayClientError) as exc:
            steward.record_consents(raw)
        assert (exc.value.status, exc.value.code) == expected, terms
        after = world.ledger.w3.eth.get_transaction_count(world.steward.address, "pending")
        assert after == before  # nothing was sent
    assert steward.consents(base.subject).consents == []


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_env(
    chain: ChainHandle, gateway: GatewayHandle, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
    names = {name for name, _ in keys.list()}
    for name, seed in (("hospital-a.steward", "steward"), ("institute.steward", "partner-steward")):
        if name not in names:
            keys.import_key(name, keccak(f"dul world {seed}".encode()))
    token = TokenStore(gateway.settings.tokens_path).create(
        f"specific-cli-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    return {
        "DUL_HOME": str(chain.home.root),
        "DUL_RPC_URL": chain.rpc_url,
        "DUL_KEY_PASSPHRASE": "gateway-tests",
        "DUL_GATEWAY_URL": gateway.url,
        "DUL_GATEWAY_TOKEN": token,
        "DUL_SUBJECT_KEY": str(tmp_path_factory.mktemp("specific") / "hospital-a.subject-key"),
    }


def cli(env: dict[str, str], *args: str) -> Result:
    saved = structlog.get_config()
    dul_log.configure("WARNING")
    try:
        return CliRunner().invoke(steward_app, list(args), env=env)
    finally:
        structlog.configure(**saved)


def test_cli_grants_a_specific_consent_and_the_next_decision_honours_it(
    world: World, gateway: GatewayHandle, studies: dict[str, bytes], cli_env: dict[str, str]
) -> None:
    start = int(world.ledger.w3.eth.block_number)
    name = f"PSN-specific-{os.getpid()}-{time.time_ns()}"
    granted = cli(cli_env, "consent", "grant", name, "--scenario", "RESEARCH",
                  "--study", hexed(studies["cancer"]), "--requester", "institute",
                  "--disease", CANCER, "--key", "hospital-a.steward", "--json")  # fmt: skip
    assert granted.exit_code == 0, granted.output
    out = json.loads(granted.stdout)
    assert out["studies"] == [hexed(studies["cancer"])]
    assert out["requesters"] == ["institute"]
    assert (out["disease"], out["duo_codes"]) == (CANCER, ["DUO:0000007"])
    key = load_subject_key(Path(cli_env["DUL_SUBJECT_KEY"]))
    ref = subject_ref(key, name)
    listed = cli(cli_env, "consent", "list", name)
    assert listed.exit_code == 0, listed.output
    assert f"study {hexed(studies['cancer'])}" in listed.stdout
    assert f"disease {CANCER}" in listed.stdout
    assert "requester institute" in listed.stdout
    assert admitted(world, gateway, studies["cancer"], [ref], confirm=True) == {hexed(ref)}
    assert admitted(world, gateway, studies["general"], [ref], confirm=True) == set()
    # no pseudonym and no subject key in any transaction or event since
    haystack, transactions, logs = chain_haystack(world.ledger.w3.provider.make_request, start)
    assert transactions >= 3  # the consent and the two accesses
    assert logs >= 3
    for needle in (name.encode(), key, key.hex().encode(), name.encode().hex().encode()):
        assert needle.lower() not in haystack.lower(), needle


def test_cli_drafts_a_disease_study_whose_disease_specific_consents_are_admitted(
    world: World, gateway: GatewayHandle, cli_env: dict[str, str]
) -> None:
    def run(*args: str) -> Any:
        result = cli(cli_env, *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    study_args = ("agreement", "draft", "--holder", "hospital-a", "--requester", "institute",
                  "--dataset", "hospital-a/omop-cdm=1,2", "--scenario", "RESEARCH",
                  "--max-tier", "PSEUDONYMIZED", "--operation", "QUERY",
                  "--consent-policy", "COHORT_CONSENT", "--duo", "DUO:0000007")  # fmt: skip
    drafted = run(*study_args, "--disease", DIABETES, "--json")
    assert drafted["draft"]["disease_code"] == DIABETES
    signed_code = drafted["typed_data"]["message"]["diseaseCode"]
    assert bytes.fromhex(signed_code.removeprefix("0x")) == disease_code(DIABETES)
    draft = Path(cli_env["DUL_SUBJECT_KEY"]).parent / "diabetes-study.json"
    draft.write_text(json.dumps(drafted["draft"]))
    study = str(run("agreement", "submit", str(draft), "--key", "hospital-a.steward",
                    "--json")["agreement_id"])  # fmt: skip
    for key in ("hospital-a.steward", "institute.steward"):
        run("agreement", "sign", study, "--key", key, "--yes", "--json")
    diabetic, other = refs(1)[0], refs(1)[0]
    world.record_consents([diabetic], duo_codes=(7,), disease=disease_code(DIABETES))
    world.record_consents([other], duo_codes=(7,), disease=disease_code(CANCER))
    assert admitted(world, gateway, bytes.fromhex(study[2:]), [diabetic, other]) == {
        hexed(diabetic)
    }
    bad = cli(cli_env, *study_args, "--disease", "type 2 diabetes", "--json")
    assert bad.exit_code != 0
    assert "not a disease term" in bad.output


def test_cli_refuses_a_bad_scope_with_one_clear_line(
    studies: dict[str, bytes], cli_env: dict[str, str]
) -> None:
    many = [f"--study={hexed(keccak(f'study {i}'.encode()))}" for i in range(17)]
    cases = [
        (many, "at most 16"),
        (["--study", "0x1234"], "agreement id"),
        (["--study", hexed(studies["cancer"])] * 2, "named twice"),
        (["--disease", "breast cancer"], "not a disease term"),
        (["--disease", "MONDO:" + "1" * 40], "not a disease term"),
        (["--duo", "DUO:0000007"], "DUO:0000007"),
        (["--requester", "x" * 40], "invalid_id"),
    ]
    for extra, message in cases:
        result = cli(cli_env, "consent", "grant", "PSN-never-sent", *extra,
                     "--key", "hospital-a.steward")  # fmt: skip
        assert result.exit_code != 0, extra
        assert message in result.output, (extra, result.output)
        assert "Traceback" not in result.output


# --------------------------------------------------------------------------- audit


@pytest.fixture(scope="module")
def audited(
    world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A deployment of its own (its violation stays out of the other stores): a patient whose
    consent is limited to study A, admitted by one access under A and one under B; another
    with a disease-specific consent admitted under the general study B."""
    own = private_world(chain.rpc_url, tmp_path_factory.mktemp("specific") / "deployment.json")
    base = own.cohort_terms()
    study_a = own.activate(
        replace(base, duo_codes=(7,), disease_code=disease_code(CANCER), nonce=time.time_ns())
    )
    study_b = own.activate(replace(base, nonce=time.time_ns() + 1))
    alice, bob, carol = subject_of("alice"), subject_of("bob"), subject_of("carol")
    own.record_consents([alice], studies=[study_a])
    own.record_consents([bob])
    own.record_consents([carol], duo_codes=(7,), disease=disease_code(CANCER))
    store = make_cohort_store(tmp_path_factory.mktemp("hospital") / "gateway.db")
    accesses = {}
    records = []
    for name, study, members in (
        ("in_a", study_a, [alice, bob, carol]),
        ("in_b", study_b, [alice, bob, carol]),
    ):
        record = own.access_record(study, tier=Tier.PSEUDONYMIZED)
        root, size = put_cohort(store, record.request.request_id, members)
        records.append(replace(record, cohort_root=root, cohort_size=size))
        accesses[name] = hexed(record.request.request_id)
    own.ledger.transact(own.gateway, "AccessLog", "recordAccesses", [r.as_abi() for r in records])
    url = f"sqlite:///{tmp_path_factory.mktemp('audit') / 'audit.db'}"
    engine, indexer = index_with_cohorts(own.ledger.deployment, chain.rpc_url, url, [store])
    yield {
        "world": own, "engine": engine, "accesses": accesses, "alice": hexed(alice),
        "bob": hexed(bob), "carol": hexed(carol), "study_a": hexed(study_a),
    }  # fmt: skip
    indexer.close()


def test_the_audit_store_keeps_the_scope_and_counts_only_covered_members(
    audited: dict[str, Any],
) -> None:
    with audited["engine"].connect() as conn:
        query = sa.text("SELECT subject, studies, requesters, disease_code FROM consent")
        rows = {r.subject: r for r in conn.execute(query)}
        consented = dict(
            conn.execute(sa.text("SELECT access_id, consented FROM cohort")).tuples().all()
        )
    assert rows[audited["alice"]].studies == audited["study_a"]
    assert rows[audited["bob"]].studies == ""
    assert rows[audited["carol"]].disease_code == hexed(disease_code(CANCER))
    assert consented[audited["accesses"]["in_a"]] == 3
    assert consented[audited["accesses"]["in_b"]] == 1  # bob only


def test_verify_names_admitted_subjects_whose_consent_did_not_cover_the_study(
    audited: dict[str, Any], chain: ChainHandle
) -> None:
    own: World = audited["world"]
    rpc = RpcClient(chain.rpc_url)
    try:
        report = verify_store(audited["engine"], rpc, workers=1, consent_lag=60,
                              start_block=int(own.ledger.deployment.raw["block"]))  # fmt: skip
    finally:
        rpc.close()
    in_b = audited["accesses"]["in_b"]
    found = {(f.check, f.key): f for f in report.findings}
    assert set(found) == {
        ("subject_without_consent", f"{in_b}/{audited['alice']}"),
        ("subject_without_consent", f"{in_b}/{audited['carol']}"),
    }
    alice = found[("subject_without_consent", f"{in_b}/{audited['alice']}")].message
    assert "did not cover the study" in alice
    assert "names other studies" in alice
    carol = found[("subject_without_consent", f"{in_b}/{audited['carol']}")].message
    assert f"limited to disease {CANCER}" in carol
    assert "no disease term" in carol


def test_the_transparency_report_lists_the_cohorts_with_proofs(audited: dict[str, Any]) -> None:
    alice = audited["alice"]
    report = subject_report(audited["engine"], alice)
    assert {a.access_id for a in report.accesses} == set(audited["accesses"].values())
    for access in report.accesses:  # every RFC 9162 proof reaches the root on chain
        proof = access.inclusion
        assert verify_inclusion(
            bytes.fromhex(proof.root[2:]), proof.size, proof.index, bytes.fromhex(alice[2:]),
            [bytes.fromhex(p[2:]) for p in proof.proof],
        )  # fmt: skip
    [consent] = report.consents
    assert consent.studies == [audited["study_a"]]
    assert (consent.requesters, consent.disease) == ([], None)
    [carol] = subject_report(audited["engine"], audited["carol"]).consents
    assert (carol.disease, carol.duo_codes) == (CANCER, ["DUO:0000007"])


def test_provenance_and_fhir_show_what_a_specific_consent_is_limited_to(
    audited: dict[str, Any],
) -> None:
    engine = audited["engine"]
    graph = provenance(engine, Kind.SUBJECT, audited["alice"])
    [consent] = [n for n in graph.nodes if n.type == "consent"]
    assert consent.attributes["studies"] == [audited["study_a"]]
    agreements = {n.attributes["agreement_id"]: n for n in graph.nodes if n.type == "agreement"}
    assert agreements[audited["study_a"]].attributes["disease"] == CANCER
    bundle = json.loads(fhir_json(graph, block_times(engine, graph_blocks(graph))))
    [fhir] = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Consent"]
    assert audited["study_a"] in {p["code"] for p in fhir["provision"]["purpose"]}
    carol = provenance(engine, Kind.SUBJECT, audited["carol"])
    [limited] = [n for n in carol.nodes if n.type == "consent"]
    assert limited.attributes["disease"] == CANCER
