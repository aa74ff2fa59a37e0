"""Compute-to-data provenance from the real chain: a federated model trained over three
hospitals in two rounds (each round's model updates released by the hospitals' gateways and
registered by the AI lab with `dul.artifacts`) is indexed from ArtifactRegistry's events; the
model's provenance reaches every hospital, dataset, training agreement and signature, and the
previous model; the exports parse back; verify is clean on a faithful store and flags a release
no granted access allowed (after tampering), artifacts derived from the results of an
agreement revoked before they were registered, and an artifact another organization registered
under the hash of a result released to the AI lab (both of which the chain allows); the
compliance report lists them. A store indexed before the registry was audited catches up with
it in place. On SQLite and on PostgreSQL (DUL_TEST_DATABASE_URL)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.provenance import Provenance
from prov.model import ProvDocument

from audit.events import AUDITED_CONTRACTS
from audit.exports import block_times, fhir_json, graph_blocks, prov_json
from audit.indexer import Indexer
from audit.migrations import migrate
from audit.provenance import Direction, Graph, Kind, _Builder, provenance
from audit.reports import agreement_report
from audit.settings import AuditSettings
from audit.store import AuditStore, create_store_engine
from audit.testing import audit_client, drop_stores, index_into, make_store_url, private_world
from audit.verify import VerifyReport, verify_store
from dul.artifacts import ReleaseRef, content_id, register_artifact
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle
from dul.contracts.world import OMOP_FIELDS, World, derived_signer
from dul.domain import ArtifactKind, Operation, OrgKind, ReleaseKind, Role, Tier, slug_id
from dul.errors import TransactionError

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
EXTRA_HOSPITALS = ("hospital-b", "hospital-c")
SQUATTER_ORG = slug_id("artifact-audit-ai-co")
SQUATTER = derived_signer("artifact-audit.ai-co.requester")


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


def signers_of(name: str) -> tuple[Any, Any]:
    return derived_signer(f"artifact-audit.{name}.steward"), derived_signer(
        f"artifact-audit.{name}.gateway"
    )


@pytest.fixture(scope="module")
def world(world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory) -> World:
    """A deployment of this module's own (verify answers about this story only). The extra
    hospitals' keys are first made members of the session's deployment, whose Membership the
    permissioned endpoint asks who may send."""
    session = world
    org = slug_id("artifact-audit-hospitals")
    tx = session.ledger.transact
    if not session.ledger.call(
        "Membership", "isAuthorizedSender", signers_of("hospital-b")[0].address
    ):
        tx(session.operator, "Membership", "registerOrganization", org, OrgKind.HOSPITAL, "FL")
        for name in EXTRA_HOSPITALS:
            steward, gateway = signers_of(name)
            tx(
                session.operator,
                "Membership",
                "grantMemberRole",
                org,
                steward.address,
                Role.STEWARD,
            )
            tx(
                session.operator,
                "Membership",
                "grantMemberRole",
                org,
                gateway.address,
                Role.GATEWAY,
            )
    if not session.ledger.call("Membership", "isAuthorizedSender", SQUATTER.address):
        # any role admits a sender; its requester role is in the module's own deployment
        tx(session.operator, "Membership", "grantMemberRole", org, SQUATTER.address, Role.STEWARD)
    return private_world(chain.rpc_url, tmp_path_factory.mktemp("artifacts") / "deployment.json")


def add_hospital(world: World, name: str) -> World:
    """Another hospital with its steward, gateway and dataset, as a World of its own (same
    requester side: the world's institute)."""
    steward, gateway = signers_of(name)
    hospital = replace(
        world,
        hospital=slug_id(name),
        dataset=slug_id(f"{name}/omop-cdm"),
        steward=steward,
        gateway=gateway,
    )
    tx = world.ledger.transact
    tx(world.operator, "Membership", "registerOrganization", hospital.hospital, OrgKind.HOSPITAL,
       name.replace("-", " ").title())  # fmt: skip
    tx(world.operator, "Membership", "grantMemberRole", hospital.hospital, steward.address,
       Role.STEWARD)  # fmt: skip
    tx(world.operator, "Membership", "grantMemberRole", hospital.hospital, gateway.address,
       Role.GATEWAY)  # fmt: skip
    tx(steward, "DatasetRegistry", "registerDataset", hospital.dataset, hospital.hospital,
       content_id(b"OMOP CDM 5.4"), list(OMOP_FIELDS), Tier.PSEUDONYMIZED)  # fmt: skip
    return hospital


def train(hospital: World, agreement: bytes, update: bytes) -> ReleaseRef:
    """A granted TRAIN access recorded by the hospital's gateway and the model update it
    released (under the update's content id)."""
    record = hospital.access_record(
        agreement, tier=Tier.MODEL_PARAMETERS, operation=Operation.TRAIN
    )
    ledger = hospital.ledger
    ledger.transact(hospital.gateway, "AccessLog", "recordAccesses", [record.as_abi()])
    ledger.transact(hospital.gateway, "AccessLog", "releaseResult", record.request.request_id,
                    agreement, update, ReleaseKind.MODEL_UPDATE, len(update))  # fmt: skip
    return ReleaseRef(record.request.request_id, agreement, update)


@dataclass
class Federated:
    """What the module recorded on chain."""

    hospitals: list[World]
    agreements: list[bytes]
    releases: list[list[ReleaseRef]]
    models: list[bytes]
    revoked: bytes
    """A training agreement revoked after one of its releases."""
    early: bytes
    """A model update from the revoked agreement's release, registered before the revocation."""
    late_result: bytes
    """A RESULT from the same release, registered after the revocation."""
    late_model: bytes
    """A MODEL derived from `early` only, registered after the revocation."""
    clean_model: bytes
    """A MODEL fine-tuned from model v2 after the revocation: nothing of the revoked agreement
    is in it (never flagged)."""
    claimed: ReleaseRef
    """A model update released to the AI lab whose hash another organization's requester
    registered first (naming the lab's round 1 update as its parent): the chain allows it."""
    last_block: int
    """The block of the last registration (`clean_model`)."""


@pytest.fixture(scope="module")
def federated(world: World) -> Federated:
    hospitals = [world, *(add_hospital(world, name) for name in EXTRA_HOSPITALS)]
    agreements = [h.activate(h.training_terms(quota=20)) for h in hospitals]
    lab = world.requester
    releases: list[list[ReleaseRef]] = []
    models: list[bytes] = []
    for round_ in (1, 2):
        refs = []
        for hospital, agreement in zip(hospitals, agreements, strict=True):
            tag = f"round {round_} update of {hexed(hospital.hospital)} {os.urandom(4).hex()}"
            update = content_id(tag.encode())
            ref = train(hospital, agreement, update)
            register_artifact(world.ledger, lab, update, ArtifactKind.MODEL_UPDATE, [ref])
            refs.append(ref)
        releases.append(refs)
        model = content_id(f"model v{round_} {os.urandom(4).hex()}".encode())
        parents = [r.result_hash for r in refs] + models[-1:]
        register_artifact(world.ledger, lab, model, ArtifactKind.MODEL, [], parents,
                          metadata_hash=content_id(f"model card v{round_}".encode()))  # fmt: skip
        models.append(model)

    tx = world.ledger.transact
    tx(world.operator, "Membership", "registerOrganization", SQUATTER_ORG, OrgKind.AI_COMPANY,
       "AI Co")  # fmt: skip
    tx(world.operator, "Membership", "grantMemberRole", SQUATTER_ORG, SQUATTER.address,
       Role.REQUESTER)  # fmt: skip
    claimed = train(world, agreements[0], content_id(b"round 3 update " + os.urandom(4)))
    register_artifact(world.ledger, SQUATTER, claimed.result_hash, ArtifactKind.RESULT, [],
                      [releases[0][0].result_hash])  # fmt: skip
    with pytest.raises(TransactionError) as taken:  # first registration wins
        register_artifact(world.ledger, lab, claimed.result_hash, ArtifactKind.MODEL_UPDATE,
                          [claimed])  # fmt: skip
    assert taken.value.code == "ArtifactRegistryInvalidArtifact"

    revoked = world.activate(world.training_terms(quota=5))
    ref = train(world, revoked, content_id(b"update before revocation " + os.urandom(4)))
    early = ref.result_hash
    register_artifact(world.ledger, lab, early, ArtifactKind.MODEL_UPDATE, [ref])
    world.ledger.transact(world.regulator, "AgreementRegistry", "revoke", revoked,
                          content_id(b"ethics approval withdrawn"))  # fmt: skip
    late_result = content_id(b"evaluation after revocation " + os.urandom(4))
    register_artifact(world.ledger, lab, late_result, ArtifactKind.RESULT, [ref])
    late_model = content_id(b"model from a revoked agreement " + os.urandom(4))
    register_artifact(world.ledger, lab, late_model, ArtifactKind.MODEL, [], [early])
    clean_model = content_id(b"model v2 fine-tuned " + os.urandom(4))
    last = register_artifact(world.ledger, lab, clean_model, ArtifactKind.MODEL, [], [models[-1]])
    return Federated(
        hospitals, agreements, releases, models, revoked, early, late_result, late_model,
        clean_model, claimed, last.block_number,
    )  # fmt: skip


@pytest.fixture(scope="module", params=BACKENDS)
def store(
    request: pytest.FixtureRequest,
    world: World,
    chain: ChainHandle,
    federated: Federated,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, sa.Engine]]:
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(request.param, tmp_path_factory.mktemp("audit-artifacts"), cleanup)
    engine = index_into(world.ledger.deployment, chain.rpc_url, url)
    yield url, engine
    engine.dispose()
    drop_stores(cleanup)


def run_verify(engine: sa.Engine, chain: ChainHandle, world: World) -> VerifyReport:
    rpc = RpcClient(chain.rpc_url)
    try:
        return verify_store(
            engine, rpc, start_block=int(world.ledger.deployment.raw["block"]), workers=1
        )
    finally:
        rpc.close()


def ids_of(graph: Graph, type_: str) -> set[str]:
    return {n.id.split(":", 1)[1] for n in graph.nodes if n.type == type_}


# --- indexing ---------------------------------------------------------------------------------


def test_registrations_are_indexed_with_their_derivations(
    store: tuple[str, sa.Engine], federated: Federated, world: World
) -> None:
    _, engine = store
    v2 = hexed(federated.models[1])
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM artifact WHERE artifact_id = :k"),
                           {"k": v2}).mappings().one()  # fmt: skip
        parents = {
            p
            for (p,) in conn.execute(
                sa.text("SELECT parent_id FROM artifact_parent WHERE artifact_id = :k"), {"k": v2}
            )
        }
        update = federated.releases[0][1]
        released = conn.execute(
            sa.text("SELECT access_id, agreement_id FROM artifact_release_parent "
                    "WHERE artifact_id = :k"), {"k": hexed(update.result_hash)}).all()  # fmt: skip
    assert row["kind"] == ArtifactKind.MODEL
    assert row["owner_org"] == hexed(world.institute)
    assert row["registrant"] == world.requester.address.lower()
    assert row["metadata_hash"] == hexed(content_id(b"model card v2"))
    assert parents == {hexed(r.result_hash) for r in federated.releases[1]} | {
        hexed(federated.models[0])
    }
    assert released == [(hexed(update.access_id), hexed(update.agreement_id))]


def test_a_store_indexed_before_the_registry_was_audited_catches_up_in_place(
    world: World, chain: ChainHandle, federated: Federated, tmp_path: Path
) -> None:
    deployment = world.ledger.deployment
    head = int(RpcClient(chain.rpc_url).request("eth_blockNumber"), 16)
    start = int(deployment.raw["block"])

    def indexer(url: str, contracts: Mapping[str, str]) -> Indexer:
        engine = create_store_engine(url)
        migrate(engine)
        return Indexer(AuditStore(engine), RpcClient(chain.rpc_url), chain_id=deployment.chain_id,
                       contracts=contracts, start_block=start)  # fmt: skip

    older = {n: a for n, a in deployment.addresses.items() if n in AUDITED_CONTRACTS}
    del older["ArtifactRegistry"]
    old = indexer(f"sqlite:///{tmp_path / 'old.db'}", older)
    old.run(to_block=head)
    assert old.store.count("artifact") == 0
    old.close()
    upgraded = indexer(f"sqlite:///{tmp_path / 'old.db'}", dict(deployment.addresses))
    upgraded.run(to_block=head)
    fresh = indexer(f"sqlite:///{tmp_path / 'fresh.db'}", dict(deployment.addresses))
    fresh.run(to_block=head)
    assert upgraded.store.count("artifact") >= 9
    assert upgraded.store.dump() == fresh.store.dump()
    upgraded.close()
    fresh.close()


# --- provenance -------------------------------------------------------------------------------


def test_the_model_traces_up_to_every_hospital_agreement_signature_and_the_previous_model(
    store: tuple[str, sa.Engine], federated: Federated, world: World
) -> None:
    _, engine = store
    started = time.perf_counter()
    graph = provenance(engine, Kind.ARTIFACT, hexed(federated.models[1]), direction=Direction.UP)
    elapsed = time.perf_counter() - started
    root = graph.node(graph.root)
    assert (root.type, root.attributes["kind"]) == ("model", "MODEL")
    assert ids_of(graph, "model") == {hexed(m) for m in federated.models}
    updates = {hexed(r.result_hash) for refs in federated.releases for r in refs}
    assert ids_of(graph, "artifact") == updates
    for update in updates:
        assert graph.node(f"artifact:{update}").attributes["kind"] == "MODEL_UPDATE"
    accesses = {
        f"{hexed(r.access_id)}@{hexed(r.agreement_id)}" for refs in federated.releases for r in refs
    }
    assert ids_of(graph, "access") == accesses
    assert ids_of(graph, "agreement") == {hexed(a) for a in federated.agreements}
    assert ids_of(graph, "dataset") == {hexed(h.dataset) for h in federated.hospitals}
    organizations = ids_of(graph, "organization")
    assert {hexed(h.hospital) for h in federated.hospitals} <= organizations
    assert hexed(world.institute) in organizations
    signatures = [n for n in graph.nodes if n.type == "signature"]
    assert {n.attributes["agreement_id"] for n in signatures} == ids_of(graph, "agreement")
    assert len(signatures) == 6
    assert len(ids_of(graph, "cohort")) == len(accesses)  # one node per cohort, not per subject
    cohort = next(n for n in graph.nodes if n.type == "cohort")
    assert {"root", "size", "consented_members"} <= set(cohort.attributes)
    edges = {(e.source, e.relation, e.target) for e in graph.edges}
    v2, v1 = (f"artifact:{hexed(m)}" for m in reversed(federated.models))
    assert (v2, "wasDerivedFrom", v1) in edges
    for ref in federated.releases[1]:
        update = f"artifact:{hexed(ref.result_hash)}"
        assert (v2, "wasDerivedFrom", update) in edges
        access = f"access:{hexed(ref.access_id)}@{hexed(ref.agreement_id)}"
        assert (update, "wasGeneratedBy", access) in edges
    assert (v2, "wasAttributedTo", f"organization:{hexed(world.institute)}") in edges
    events = event_positions(engine)
    for edge in graph.edges:
        assert events[(edge.chain.block, edge.chain.tx_index, edge.chain.log_index)] == (
            edge.chain.tx_hash
        )
    assert graph.truncated == []
    # a gross-regression guard only (dul bench measures provenance: p95 in milliseconds); wide
    # enough for a busy machine running the suite on several workers
    assert elapsed < 10.0


def test_limits_and_directions_hold_for_artifacts(
    store: tuple[str, sa.Engine], federated: Federated
) -> None:
    _, engine = store
    v1 = hexed(federated.models[0])
    down = provenance(engine, Kind.ARTIFACT, v1, direction=Direction.DOWN)
    assert ids_of(down, "model") == {v1, hexed(federated.models[1]), hexed(federated.clean_model)}
    assert "agreement" not in {n.type for n in down.nodes}
    small = provenance(engine, Kind.ARTIFACT, hexed(federated.models[1]), direction=Direction.UP,
                       limit=1)  # fmt: skip
    assert graph_root_truncated(small)
    bounded = provenance(engine, Kind.ARTIFACT, hexed(federated.models[1]), max_nodes=5)
    assert len(bounded.nodes) <= 5
    # an access and a released result lead down to what was made from them
    ref = federated.releases[0][0]
    access_down = provenance(engine, Kind.ACCESS, hexed(ref.access_id), direction=Direction.DOWN)
    assert hexed(federated.models[1]) in ids_of(access_down, "model")


def test_artifacts_read_for_a_page_of_releases_give_the_graph_read_one_at_a_time(
    store: tuple[str, sa.Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A downward walk reads the artifacts (and what was derived from them) of a page of
    accesses' releases in a few queries: every graph of the store that walks down (an upward
    walk reads no page of accesses), at a limit that cuts the derivations and at the default,
    is the one read artifact by artifact."""
    _, engine = store
    with engine.connect() as conn:
        roots = [
            (kind, str(key))
            for kind, sql in (
                (Kind.AGREEMENT, "SELECT agreement_id FROM agreement"),
                (Kind.DATASET, "SELECT dataset_id FROM dataset"),
                (Kind.ORGANIZATION, "SELECT org_id FROM organization"),
                (Kind.ARTIFACT, "SELECT result_hash FROM result_release"),
                (Kind.ARTIFACT, "SELECT artifact_id FROM artifact"),
            )
            for (key,) in conn.execute(sa.text(sql))
        ]
    prefetched: list[str] = []
    batched = _Builder.prefetch_artifacts

    def counting(builder: _Builder, keys: list[str]) -> None:
        prefetched.extend(keys)
        batched(builder, keys)

    def graphs() -> list[dict[str, Any]]:
        return [
            provenance(engine, kind, key, direction=direction, limit=limit).model_dump()
            for kind, key in roots
            for direction in (Direction.DOWN, Direction.BOTH)
            for limit in (1, 100)
        ]

    monkeypatch.setattr(_Builder, "prefetch_artifacts", counting)
    read_in_pages = graphs()
    assert prefetched, "no walk read a page of artifacts: the comparison proves nothing"
    monkeypatch.setattr(_Builder, "prefetch_artifacts", lambda builder, keys: None)
    assert read_in_pages == graphs()
    assert any(graph["truncated"] for graph in read_in_pages)


def graph_root_truncated(graph: Graph) -> bool:
    return graph.root in graph.truncated


def event_positions(engine: sa.Engine) -> dict[tuple[int, int, int], str]:
    with engine.connect() as conn:
        return {
            (int(b), int(t), int(i)): str(tx)
            for b, t, i, tx in conn.execute(
                sa.text("SELECT block_number, tx_index, log_index, tx_hash FROM event")
            )
        }


def test_the_exports_of_the_model_parse_back(
    store: tuple[str, sa.Engine], federated: Federated
) -> None:
    _, engine = store
    graph = provenance(engine, Kind.ARTIFACT, hexed(federated.models[1]), direction=Direction.UP)
    document = ProvDocument.deserialize(content=prov_json(graph), format="json")
    records = {str(r.identifier): r for r in document.get_records()}
    assert f"dul:artifact-{hexed(federated.models[1])}" in records
    derivations = [r for r in document.get_records() if r.get_type().localpart == "Derivation"]
    assert len(derivations) >= 8  # v2 <- 3 updates + v1, v1 <- 3 updates
    bundle = Bundle.model_validate_json(fhir_json(graph, block_times(engine, graph_blocks(graph))))
    resources = [e.resource for e in bundle.entry or []]
    kinds = [type(r).__name__ for r in resources]
    assert kinds.count("AuditEvent") == 6
    model = hexed(federated.models[1])
    model_provenance = [
        r for r in resources
        if isinstance(r, Provenance)
        and any(t.identifier is not None and t.identifier.value == model for t in r.target)
    ]  # fmt: skip
    assert len(model_provenance) == 1
    assert len(model_provenance[0].entity or []) == 4  # 3 updates and model v1


def test_the_rest_api_answers_the_artifact_provenance(
    store: tuple[str, sa.Engine],
    federated: Federated,
    world: World,
    chain: ChainHandle,
    tmp_path: Path,
) -> None:
    url, _ = store
    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps(world.ledger.deployment.raw))
    settings = AuditSettings(database_url=url, rpc_url=chain.rpc_url, deployment_path=manifest)
    with audit_client(settings) as client:
        model = hexed(federated.models[1])
        answer = client.get(f"/v1/provenance/artifact/{model}", params={"direction": "up"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["root"] == f"artifact:{model}"
        assert client.get(f"/v1/provenance/artifact/{model}",
                          params={"format": "fhir"}).status_code == 200  # fmt: skip
        missing = client.get(f"/v1/provenance/artifact/0x{'ab' * 32}")
        assert missing.status_code == 404
        assert missing.json()["code"] == "artifact_not_found"


# --- verify and the compliance report ---------------------------------------------------------


EXPECTED = {"artifact_from_revoked_agreement": 2, "artifact_claims_foreign_result": 1}
"""What verify finds on a faithful store of the module's story."""


def flagged(report: VerifyReport, check: str) -> set[str]:
    return {str(f.key) for f in report.findings if f.check == check}


def test_verify_names_only_the_artifacts_made_from_a_revoked_agreements_results(
    store: tuple[str, sa.Engine], federated: Federated, world: World, chain: ChainHandle
) -> None:
    _, engine = store
    report = run_verify(engine, chain, world)
    assert report.findings_by_check == EXPECTED, report.findings
    assert flagged(report, "artifact_from_revoked_agreement") == {
        hexed(federated.late_result),
        hexed(federated.late_model),
    }
    details = {f.key: f.details for f in report.findings}
    assert details[hexed(federated.late_result)]["direct"] is True
    assert details[hexed(federated.late_model)]["direct"] is False  # through the early update
    assert details[hexed(federated.late_model)]["agreement_id"] == hexed(federated.revoked)
    assert report.checked["rows.artifact"] >= 12
    assert report.checked["artifacts"] >= 12


def test_verify_and_the_report_name_an_artifact_registered_under_another_organizations_result(
    store: tuple[str, sa.Engine], federated: Federated, world: World, chain: ChainHandle
) -> None:
    _, engine = store
    claimed = federated.claimed
    report = run_verify(engine, chain, world)
    [finding] = [f for f in report.findings if f.check == "artifact_claims_foreign_result"]
    assert (finding.table, finding.key) == ("artifact", hexed(claimed.result_hash))
    with engine.connect() as conn:

        def position(table: str, column: str) -> Any:
            sql = f"SELECT block_number, tx_index, log_index FROM {table} WHERE {column} = :k"  # noqa: S608 - test literals
            return conn.execute(sa.text(sql), {"k": hexed(claimed.result_hash)}).one()

        registered, released = (
            position("artifact", "artifact_id"),
            position("result_release", "result_hash"),
        )
    assert finding.position == "/".join(str(v) for v in registered)
    assert finding.details == {
        "owner": hexed(SQUATTER_ORG),
        "access_id": hexed(claimed.access_id),
        "agreement_id": hexed(claimed.agreement_id),
        "result_hash": hexed(claimed.result_hash),
        "recipient": hexed(world.institute),
        "released_at": "/".join(str(v) for v in released),
    }
    training = agreement_report(engine, hexed(claimed.agreement_id))
    assert [
        (c.artifact_id, c.kind, c.owner, c.access_id, c.recipient)
        for c in training.results_claimed_by_others
    ] == [
        (hexed(claimed.result_hash), "RESULT", "artifact-audit-ai-co", hexed(claimed.access_id),
         "institute")
    ]  # fmt: skip
    assert training.results_claimed_by_others[0].chain.block == registered[0]
    other = agreement_report(engine, hexed(federated.agreements[1]))
    assert other.results_claimed_by_others == []


def test_the_report_lists_the_artifacts_made_from_an_agreements_results(
    store: tuple[str, sa.Engine], federated: Federated
) -> None:
    _, engine = store
    revoked = agreement_report(engine, hexed(federated.revoked))
    assert revoked.status == "REVOKED"
    assert [a.artifact_id for a in revoked.artifacts] == [
        hexed(federated.early), hexed(federated.late_result), hexed(federated.late_model)
    ]  # fmt: skip
    assert [(a.kind, a.direct, a.after_revocation) for a in revoked.artifacts] == [
        ("MODEL_UPDATE", True, False), ("RESULT", True, True), ("MODEL", False, True)
    ]  # fmt: skip
    assert revoked.derived_artifacts == 3
    assert revoked.artifacts_after_revocation == [
        hexed(federated.late_result), hexed(federated.late_model)
    ]  # fmt: skip
    assert revoked.releases_not_allowed == []
    training = agreement_report(engine, hexed(federated.agreements[1]))
    assert {a.artifact_id for a in training.artifacts} == {
        *(hexed(refs[1].result_hash) for refs in federated.releases),
        *(hexed(m) for m in federated.models),
        hexed(federated.clean_model),
    }
    assert training.artifacts_after_revocation == []


def test_verify_and_the_report_flag_a_release_no_granted_access_allowed(
    store: tuple[str, sa.Engine], federated: Federated, world: World, chain: ChainHandle
) -> None:
    _, engine = store
    tampered = federated.releases[0][1]  # hospital-b's round 1 update, behind both models
    renamed = federated.releases[0][2]  # hospital-c's: its release now names another result
    result, other = hexed(tampered.result_hash), hexed(renamed.result_hash)
    execute = _executor(engine)
    execute("UPDATE result_release SET kind = :k WHERE result_hash = :r",
            k=int(ReleaseKind.IDENTIFIED_EXTRACT), r=result)  # fmt: skip
    execute("UPDATE result_release SET result_hash = :x WHERE result_hash = :r", x="0x" + "ee" * 32,
            r=other)  # fmt: skip
    try:
        report = run_verify(engine, chain, world)
        report_b = agreement_report(engine, hexed(tampered.agreement_id))
    finally:
        execute("UPDATE result_release SET kind = :k WHERE result_hash = :r",
                k=int(ReleaseKind.MODEL_UPDATE), r=result)  # fmt: skip
        execute("UPDATE result_release SET result_hash = :r WHERE result_hash = :x",
                x="0x" + "ee" * 32, r=other)  # fmt: skip
    releases = {f.key for f in report.findings if f.check == "release_not_allowed"}
    assert releases == {hexed(tampered.access_id)}
    named = f"{hexed(tampered.access_id)}@{hexed(tampered.agreement_id)}"
    assert all(named in f.message for f in report.findings if f.check == "release_not_allowed")
    assert flagged(report, "artifact_release_unknown") == {other}
    assert flagged(report, "artifact_from_disallowed_release") == {
        result, *(hexed(m) for m in federated.models), hexed(federated.clean_model)
    }  # fmt: skip
    assert report.findings_by_check["row_differs"] == 2
    assert [(f.check, f.result_hash, f.kind) for f in report_b.releases_not_allowed] == [
        ("release_not_allowed", result, "IDENTIFIED_EXTRACT")
    ]
    assert run_verify(engine, chain, world).findings_by_check == EXPECTED


def _executor(engine: sa.Engine) -> Any:
    def execute(sql: str, **params: object) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    return execute


@pytest.mark.parametrize("backend", BACKENDS)
def test_verify_reads_one_snapshot_while_the_indexer_writes(
    backend: str, world: World, chain: ChainHandle, federated: Federated, tmp_path: Path
) -> None:
    """The checkpoint and the rows verify checks come from one state of the store: the indexer
    writing the last registration after verify read the checkpoint changes nothing."""
    last = federated.last_block
    cleanup: list[tuple[str, str]] = []
    url = make_store_url(backend, tmp_path, cleanup)
    engine = create_store_engine(url)
    migrate(engine)
    deployment = world.ledger.deployment
    indexer = Indexer(
        AuditStore(engine),
        RpcClient(chain.rpc_url),
        chain_id=deployment.chain_id,
        contracts=deployment.addresses,
        start_block=int(deployment.raw["block"]),
    )
    try:
        indexer.run(to_block=last - 1)
        before = indexer.store.count("artifact")
        rpc = RpcClient(chain.rpc_url)
        report = verify_store(
            engine, rpc, start_block=int(deployment.raw["block"]), workers=1,
            after_checkpoint=lambda: indexer.run(to_block=last),
        )  # fmt: skip
        rpc.close()
        assert indexer.store.count("artifact") > before  # the indexer did write meanwhile
        assert report.checkpoint_block == last - 1
        assert set(report.findings_by_check) <= set(EXPECTED), report.findings
    finally:
        indexer.close()
        drop_stores(cleanup)
