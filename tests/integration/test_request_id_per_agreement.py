"""One request id at two hospitals: two accesses, both recorded, both in the audit trail.

A requester signs the same request id for hospital A's agreement and for hospital B's and asks
both gateways. Each gateway decides before the chain is asked, so both answer GRANTED. When
AccessLog named an access by its request id alone, the second record reverted as a duplicate:
a grant the access service acted on with no record on chain. The chain now names an access by
its agreement and request id (only the holder's gateways record under an agreement), so both
records stand, the audit store keeps both, and provenance shows each under its agreement."""

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
from dul.chain.testing import ChainHandle, free_port
from dul.contracts.typed_data import AccessRequest, access_log_domain
from dul.contracts.world import OMOP_FIELDS, World, derived_signer
from dul.domain import Decision, Operation, OrgKind, Role, Tier, slug_id
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
