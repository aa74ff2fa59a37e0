"""One request id at two hospitals: two accesses, both recorded, both in the audit trail.

A requester signs the same request id for hospital A's agreement and for hospital B's and asks
both gateways. Each gateway decides before the chain is asked, so both answer GRANTED. When
AccessLog named an access by its request id alone, the second record reverted as a duplicate:
a grant the access service acted on with no record on chain. The chain now names an access by
its agreement and request id (only the holder's gateways record under an agreement), so both
records stand, the audit store keeps both, and provenance shows each under its agreement.

The same holds for what is made from their results: the same federated round at two hospitals,
named by one request id and returning the same update, is two releases, and a model derived from
both is registered (ArtifactRegistry orders releases by agreement, access and result hash), indexed
and traced to both agreements."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import sqlalchemy as sa
from eth_hash.auto import keccak
from pydantic import SecretStr

from audit.auth import AuditRole
from audit.provenance import AmbiguousIdError, Kind, provenance
from audit.settings import AuditSettings
from audit.testing import audit_client, drop_stores, index_into, make_store_url
from audit.verify import verify_store
from dul.artifacts import ReleaseRef, content_id, register_artifact
from dul.chain.rpc import RpcClient
from dul.chain.testing import ChainHandle, free_port
from dul.contracts.typed_data import AccessRequest, access_log_domain
from dul.contracts.world import OMOP_FIELDS, World, derived_signer
from dul.domain import ArtifactKind, Decision, Operation, OrgKind, Role, Tier, slug_id
from dul.keys import KeyStore
from ledger_gateway.client import GatewayClient, sign_request
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.testing import GatewayHandle, serve
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration]


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


@dataclass
class HospitalB:
    world: World
    agreement: bytes
    gateway: GatewayHandle


@pytest.fixture(scope="module")
def hospital_b(
    world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HospitalB]:
    """A second hospital with its own dataset, an agreement with the same institute, and its
    own gateway service (its own key and outbox)."""
    slug = f"reqid-b-{uuid.uuid4().hex[:8]}"
    b = replace(world, hospital=slug_id(slug), dataset=slug_id(f"{slug}/omop"),
                steward=derived_signer(f"{slug}.steward"))  # fmt: skip
    tx = world.ledger.transact
    tx(world.operator, "Membership", "registerOrganization", b.hospital, OrgKind.HOSPITAL, "B")
    tx(world.operator, "Membership", "grantMemberRole", b.hospital, b.steward.address, Role.STEWARD)
    tx(b.steward, "DatasetRegistry", "registerDataset", b.dataset, b.hospital,
       keccak(b"OMOP CDM 5.4"), list(OMOP_FIELDS), Tier.PSEUDONYMIZED)  # fmt: skip
    keys = KeyStore(chain.home, passphrase="reqid-tests", scrypt_n=2**14)
    address = keys.import_key(f"{slug}.gateway", keccak(slug.encode()))
    tx(world.operator, "Membership", "grantMemberRole", b.hospital, address, Role.GATEWAY)
    agreement = b.activate(b.research_terms())
    settings = GatewaySettings(
        home=chain.home.root,
        org=slug,
        key=f"{slug}.gateway",
        key_passphrase=SecretStr("reqid-tests"),
        rpc_url=chain.rpc_url,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('gateway-b') / 'gateway.db'}",
        port=free_port(),
        batch_latency_ms=20,
        deadline_margin_s=5,
    )
    token = TokenStore(settings.tokens_path).create(f"reqid-{settings.port}", slug,
                                                    TokenRole.ACCESS_SERVICE)  # fmt: skip
    with serve(settings) as url, GatewayClient(url, token) as client:
        domain = access_log_domain(
            world.ledger.chain_id, world.ledger.deployment.address("AccessLog")
        )
        yield HospitalB(b, agreement, GatewayHandle(url, token, client, domain, settings))


def request(world: World, agreement: bytes, request_id: bytes) -> AccessRequest:
    return AccessRequest(
        request_id=request_id,
        agreement_id=agreement,
        dataset_id=world.dataset,
        field_mask=0b0110,
        tier=Tier.DEIDENTIFIED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT count(*) FROM condition_occurrence"),
        deadline=int(time.time()) + 600,
    )


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    cleanup: list[tuple[str, str]] = []
    yield make_store_url("sqlite", tmp_path, cleanup)
    drop_stores(cleanup)


def test_one_request_id_granted_at_two_hospitals_is_recorded_twice_and_audited_twice(
    world: World,
    chain: ChainHandle,
    gateway: GatewayHandle,
    hospital_b: HospitalB,
    store_url: str,
    tmp_path: Path,
) -> None:
    agreement_a = world.activate(world.research_terms())
    agreement_b, b = hospital_b.agreement, hospital_b.world
    reused = os.urandom(32)
    at_a = sign_request(world.requester, request(world, agreement_a, reused), gateway.domain)
    at_b = sign_request(world.requester, request(b, agreement_b, reused), gateway.domain)

    answers = [gateway.client.request_access(at_a),
               hospital_b.gateway.client.request_access(at_b)]  # fmt: skip
    # Both gateways grant before the chain is asked: the access services act on both.
    assert [a.decision for a in answers] == ["GRANTED", "GRANTED"]
    settled = [
        gateway.client.get_access(answers[0].access_id, wait=True),
        hospital_b.gateway.client.get_access(answers[1].access_id, wait=True),
    ]
    assert [s.status for s in settled] == ["confirmed", "confirmed"], settled
    for agreement in (agreement_a, agreement_b):
        decision = world.ledger.call("AccessLog", "decisionOf", reused, agreement)
        assert decision == Decision.GRANTED
    assert world.ledger.call("AccessLog", "accessesUsed", agreement_b) == 1

    engine = index_into(world.ledger.deployment, chain.rpc_url, store_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT agreement_id, recorder FROM access_event WHERE access_id = :k "
                        "ORDER BY agreement_id"), {"k": hexed(reused)},
            ).all()  # fmt: skip
            quarantined = conn.execute(
                sa.text("SELECT count(*) FROM quarantined_event")
            ).scalar_one()
        assert sorted(str(r[0]) for r in rows) == sorted([hexed(agreement_a), hexed(agreement_b)])
        assert quarantined == 0
        for agreement in (agreement_a, agreement_b):
            key = f"{hexed(reused)}@{hexed(agreement)}"
            graph = provenance(engine, Kind.ACCESS, key)
            assert graph.root == f"access:{key}"
            root = next(n for n in graph.nodes if n.id == graph.root)
            assert root.attributes["decision"] == "GRANTED"
            assert root.attributes["agreement_id"] == hexed(agreement)
            assert f"agreement:{hexed(agreement)}" in {n.id for n in graph.nodes}
            under = provenance(engine, Kind.AGREEMENT, hexed(agreement))
            assert f"access:{key}" in {n.id for n in under.nodes}
        with pytest.raises(AmbiguousIdError) as ambiguous:
            provenance(engine, Kind.ACCESS, hexed(reused))
        assert ambiguous.value.code == "ambiguous_access"
    finally:
        engine.dispose()

    # Over HTTP: the regulator is told the id names two accesses and how to name each; hospital
    # B, a party of its own agreement only, sees its own access under the bare id and never A's.
    manifest = tmp_path / "deployment.json"
    manifest.write_text(json.dumps(world.ledger.deployment.raw))
    settings = AuditSettings(database_url=store_url, rpc_url=chain.rpc_url,
                             deployment_path=manifest, index_behind_blocks=10_000_000,
                             index_behind_s=31_536_000)  # fmt: skip
    with audit_client(settings) as regulator:
        response = regulator.get(f"/v1/provenance/access/{hexed(reused)}")
        assert response.status_code == 409, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["code"] == "ambiguous_access"
        for agreement in (agreement_a, agreement_b):
            assert f"{hexed(reused)}@{hexed(agreement)}" in problem["detail"]
    slug_b = hospital_b.gateway.settings.org
    with audit_client(settings, AuditRole.ORGANIZATION, slug_b) as at_b_audit:
        own = at_b_audit.get(f"/v1/provenance/access/{hexed(reused)}").json()
        assert own["root"] == f"access:{hexed(reused)}@{hexed(agreement_b)}"
        other = at_b_audit.get(f"/v1/provenance/access/{hexed(reused)}@{hexed(agreement_a)}")
        assert (other.status_code, other.json()["code"]) == (403, "out_of_scope")


def train(world: World, gateway: GatewayHandle, agreement: bytes, round_id: bytes,
          update: bytes) -> ReleaseRef:  # fmt: skip
    """A TRAIN access of `round_id` under `agreement` granted by `gateway`, and `update`
    released from it, both confirmed."""
    training = replace(request(world, agreement, round_id), tier=Tier.MODEL_PARAMETERS,
                       operation=Operation.TRAIN)  # fmt: skip
    access = gateway.client.request_access(
        sign_request(world.requester, training, gateway.domain), wait=True
    )
    assert (access.decision, access.status) == ("GRANTED", "confirmed"), access
    released = gateway.client.release_result(
        access.access_id, content_id(update), "MODEL_UPDATE", len(update), wait=True
    )
    assert released.status == "confirmed", released
    return ReleaseRef(round_id, agreement, content_id(update))


def test_a_model_from_one_round_at_two_hospitals_with_the_same_update_is_registered_and_traced(
    world: World,
    chain: ChainHandle,
    gateway: GatewayHandle,
    hospital_b: HospitalB,
    store_url: str,
) -> None:
    b = hospital_b.world
    training_a = world.activate(world.training_terms())
    training_b = b.activate(b.training_terms())
    round_id = os.urandom(32)
    # Both hospitals start from the same global model and return the same update (a converged
    # round): one request id and one result hash, released under two agreements.
    update = b"chest-xray-cnn round 7 update: " + os.urandom(16)
    releases = [train(world, gateway, training_a, round_id, update),
                train(b, hospital_b.gateway, training_b, round_id, update)]  # fmt: skip
    for ref in releases:
        assert world.ledger.call("AccessLog", "isReleased", *ref.as_abi()) is True

    model = content_id(b"chest-xray-cnn v7: " + os.urandom(16))
    registered = register_artifact(
        world.ledger, world.requester, model, ArtifactKind.MODEL, reversed(releases)
    )
    assert registered.releases == tuple(sorted(releases, key=ReleaseRef.key))

    engine = index_into(world.ledger.deployment, chain.rpc_url, store_url)
    try:
        with engine.connect() as conn:
            stored = conn.execute(
                sa.text("SELECT access_id, agreement_id, result_hash FROM artifact_release_parent "
                        "WHERE artifact_id = :m ORDER BY agreement_id"), {"m": hexed(model)},
            ).all()  # fmt: skip
        assert [tuple(r) for r in stored] == sorted(
            (hexed(round_id), hexed(agreement), hexed(content_id(update)))
            for agreement in (training_a, training_b)
        )
        graph = provenance(engine, Kind.ARTIFACT, hexed(model))
        root = f"artifact:{hexed(model)}"
        derived = [
            e for e in graph.edges if e.source == root and e.attributes.get("role") == "release"
        ]
        assert sorted(e.attributes["agreement_id"] for e in derived) == sorted(
            [hexed(training_a), hexed(training_b)]
        )
        ids = {n.id for n in graph.nodes}
        for agreement in (training_a, training_b):
            assert f"access:{hexed(round_id)}@{hexed(agreement)}" in ids
            assert f"agreement:{hexed(agreement)}" in ids
        model_node = next(n for n in graph.nodes if n.id == graph.root)
        assert model_node.attributes["derived_from_releases"] == 2

        rpc = RpcClient(chain.rpc_url)
        try:
            report = verify_store(
                engine, rpc, start_block=int(world.ledger.deployment.raw["block"]), workers=1
            )
        finally:
            rpc.close()
        tables = ("artifact", "artifact_release_parent")
        about_artifacts = [
            f for f in report.findings if f.check.startswith("artifact") or f.table in tables
        ]
        assert about_artifacts == []
    finally:
        engine.dispose()
