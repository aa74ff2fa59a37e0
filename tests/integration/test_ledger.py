"""The deployed contracts through the real permissioned endpoint: deploy, membership, an
agreement signed with Python keys, access records, and decoded custom errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_hash.auto import keccak
from web3 import Web3

from dul.chain.testing import ChainHandle
from dul.contracts.artifacts import load
from dul.contracts.deploy import deploy, verify
from dul.contracts.deployment import Deployment
from dul.contracts.ledger import send
from dul.contracts.typed_data import (
    AccessRecord,
    AccessRequest,
    access_log_domain,
    agreement_domain,
)
from dul.contracts.world import World, derived_signer
from dul.domain import AgreementStatus, Decision, DenyReason, Operation, Tier, slug_id
from dul.errors import ChainError, DeploymentError, TransactionError

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def request_for(world: World, agreement: bytes, **overrides: object) -> AccessRequest:
    values: dict[str, object] = {
        "request_id": keccak(str(time.time_ns()).encode()),
        "agreement_id": agreement,
        "dataset_id": world.dataset,
        "field_mask": 0b0110,
        "tier": Tier.DEIDENTIFIED,
        "operation": Operation.QUERY,
        "request_hash": keccak(b"SELECT count(*) FROM condition_occurrence"),
        "deadline": int(time.time()) + 600,
    }
    values.update(overrides)
    return AccessRequest(**values)  # type: ignore[arg-type]


def record(
    world: World,
    request: AccessRequest,
    decision: Decision = Decision.GRANTED,
    reason: DenyReason = DenyReason.NONE,
) -> AccessRecord:
    domain = access_log_domain(world.ledger.chain_id, world.ledger.deployment.address("AccessLog"))
    return AccessRecord(
        request, world.requester.address, request.sign(world.requester, domain), decision, reason
    )


def test_deploy_again_verifies_and_changes_nothing(chain: ChainHandle, world: World) -> None:
    w3 = world.ledger.w3
    nonce = w3.eth.get_transaction_count(world.operator.address)
    again, new = deploy(w3, world.operator, chain.home.deployment)
    assert new is False
    assert again.addresses == world.ledger.deployment.addresses
    assert w3.eth.get_transaction_count(world.operator.address) == nonce


def test_verify_names_a_contract_whose_code_differs(world: World, tmp_path: Path) -> None:
    raw = dict(world.ledger.deployment.raw)
    contracts = {k: dict(v) for k, v in raw["contracts"].items()}
    contracts["Membership"]["address"] = contracts["AccessLog"]["address"]
    (tmp_path / "d.json").write_text(json.dumps({**raw, "contracts": contracts}))
    with pytest.raises(DeploymentError, match="Membership") as caught:
        verify(world.ledger.w3, Deployment.load(tmp_path / "d.json"))
    assert caught.value.code == "code_mismatch"


def test_verify_refuses_a_deployment_of_another_chain(world: World, tmp_path: Path) -> None:
    (tmp_path / "d.json").write_text(json.dumps({**world.ledger.deployment.raw, "chain_id": 1}))
    with pytest.raises(DeploymentError) as caught:
        verify(world.ledger.w3, Deployment.load(tmp_path / "d.json"))
    assert caught.value.code == "wrong_chain"


def test_deploy_binds_the_access_log_as_the_only_redeemer(world: World) -> None:
    ledger = world.ledger
    access_log = ledger.deployment.address("AccessLog")
    assert ledger.call("ConsentRegistry", "accessLog") == access_log
    assert ledger.call("AccessLog", "CONSENTS") == ledger.deployment.address("ConsentRegistry")
    with pytest.raises(TransactionError) as caught:
        ledger.transact(world.operator, "ConsentRegistry", "bindAccessLog", world.gateway.address)
    assert caught.value.code == "ConsentRegistryAccessLogBindingRefused"
    assert caught.value.details["error_args"] == {"caller": world.operator.address.lower()}


def test_verify_refuses_a_consent_registry_not_bound_to_the_access_log(
    world: World, tmp_path: Path
) -> None:
    w3 = world.ledger.w3
    membership = world.ledger.deployment.address("Membership")
    datasets = world.ledger.deployment.address("DatasetRegistry")
    creation = (
        load("ConsentRegistry").bytecode
        + encode(["address", "address"], [membership, datasets]).hex()
    )
    receipt = send(w3, world.operator, {"data": creation}, label="deploy ConsentRegistry")
    raw = dict(world.ledger.deployment.raw)
    contracts = {k: dict(v) for k, v in raw["contracts"].items()}
    contracts["ConsentRegistry"]["address"] = receipt["contractAddress"]
    (tmp_path / "d.json").write_text(json.dumps({**raw, "contracts": contracts}))
    with pytest.raises(DeploymentError, match="ConsentRegistry") as caught:
        verify(w3, Deployment.load(tmp_path / "d.json"))
    assert caught.value.code == "access_log_unbound"


def test_consent_registry_errors_decode_into_their_names(world: World) -> None:
    terms: tuple[object, ...] = (
        world.hospital, keccak(b"subject"), 0b10, [42], 0, 2**64 - 1, "0x" + "00" * 20,
        bytes(32), [], [],
    )  # fmt: skip
    with pytest.raises(TransactionError) as caught:
        world.ledger.transact(world.gateway, "ConsentRegistry", "recordConsent", terms)
    assert caught.value.code == "ConsentRegistryUnauthorizedSteward"
    assert caught.value.details["error_args"] == {
        "account": world.gateway.address.lower(),
        "holder": world.hospital,
    }


def test_agreement_signed_in_python_activates_on_chain(world: World) -> None:
    terms = world.research_terms()
    agreement = world.activate(terms)
    registry = world.ledger
    domain = agreement_domain(registry.chain_id, registry.deployment.address("AgreementRegistry"))
    assert registry.call("AgreementRegistry", "digest", agreement) == terms.digest(domain)
    assert registry.call("AgreementRegistry", "status", agreement) == AgreementStatus.ACTIVE
    assert registry.call("AgreementRegistry", "signers", agreement) == [
        world.steward.address,
        world.partner_steward.address,
    ]


def test_signature_for_another_chain_is_refused(world: World) -> None:
    terms = world.research_terms()
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    wrong = agreement_domain(1, world.ledger.deployment.address("AgreementRegistry"))
    with pytest.raises(TransactionError) as caught:
        world.ledger.transact(
            world.steward,
            "AgreementRegistry",
            "sign",
            terms.agreement_id,
            world.steward.address,
            world.steward.sign_digest(terms.digest(wrong)),
        )
    assert caught.value.code == "AgreementRegistryInvalidSignature"
    assert (
        world.ledger.call("AgreementRegistry", "status", terms.agreement_id)
        == AgreementStatus.PROPOSED
    )


def test_access_records_are_checked_on_chain(world: World) -> None:
    agreement = world.activate(world.research_terms(quota=10))
    granted = record(world, request_for(world, agreement))
    world.ledger.transact(world.gateway, "AccessLog", "recordAccess", granted.as_abi())
    assert (
        world.ledger.call("AccessLog", "decisionOf", granted.request.request_id, agreement)
        == Decision.GRANTED
    )
    assert world.ledger.call("AccessLog", "accessesUsed", agreement) == 1

    with pytest.raises(TransactionError) as duplicate:
        world.ledger.transact(world.gateway, "AccessLog", "recordAccess", granted.as_abi())
    assert duplicate.value.code == "AccessLogDuplicateRequest"

    over_tier = record(world, request_for(world, agreement, tier=Tier.PSEUDONYMIZED))
    with pytest.raises(TransactionError) as refused:
        world.ledger.transact(world.gateway, "AccessLog", "recordAccess", over_tier.as_abi())
    assert refused.value.code == "AccessLogTierAboveCeiling"
    assert refused.value.details["error_args"]["requested"] == Tier.PSEUDONYMIZED

    denied = record(world, over_tier.request, Decision.DENIED, DenyReason.TIER_ABOVE_CEILING)
    world.ledger.transact(world.gateway, "AccessLog", "recordAccess", denied.as_abi())
    assert world.ledger.call("AccessLog", "accessesUsed", agreement) == 1


def test_only_the_holders_gateway_records(world: World) -> None:
    agreement = world.activate(world.research_terms())
    granted = record(world, request_for(world, agreement))
    with pytest.raises(TransactionError) as caught:
        world.ledger.transact(world.steward, "AccessLog", "recordAccess", granted.as_abi())
    assert caught.value.code == "AccessLogUnauthorizedRecorder"


def test_a_batch_of_accesses_is_one_transaction(world: World) -> None:
    agreement = world.activate(world.research_terms())
    records = [
        record(world, request_for(world, agreement, request_id=keccak(bytes([i])))).as_abi()
        for i in range(50)
    ]
    receipt = world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", records)
    assert len(receipt["logs"]) == 50
    assert world.ledger.call("AccessLog", "accessesUsed", agreement) == 50


def test_the_endpoint_admits_members_and_refuses_others(world: World) -> None:
    stranger = derived_signer("stranger")
    with pytest.raises(ChainError) as refused:
        world.ledger.transact(stranger, "Membership", "isAuthorizedSender", stranger.address)
    assert refused.value.code == "tx_refused"
    assert "not a member" in refused.value.message
    # A member's transaction goes through the same endpoint (a refused call costs nothing).
    assert world.ledger.call("Membership", "isAuthorizedSender", world.gateway.address) is True


def test_suspending_an_organization_disables_its_members(world: World) -> None:
    ledger = world.ledger
    ledger.transact(world.operator, "Membership", "suspendOrganization", world.institute)
    try:
        assert ledger.call("Membership", "isAuthorizedSender", world.requester.address) is False
        assert (
            ledger.call("Membership", "hasOrgRole", world.requester.address, world.institute, 1)
            is False
        )
        with pytest.raises(TransactionError) as caught:
            ledger.transact(
                world.steward, "AgreementRegistry", "propose", world.research_terms().as_abi()
            )
        assert caught.value.code == "AgreementRegistryInvalidRequester"
    finally:
        ledger.transact(world.operator, "Membership", "reinstateOrganization", world.institute)


def test_unknown_organization_id_is_a_decoded_error(world: World) -> None:
    with pytest.raises(TransactionError) as caught:
        world.ledger.transact(
            world.operator,
            "Membership",
            "grantMemberRole",
            slug_id("nowhere"),
            Web3.to_checksum_address("0x" + "ab" * 20),
            0,
        )
    assert caught.value.code == "MembershipUnknownOrganization"


@pytest.mark.parametrize("decision", [Decision.GRANTED, Decision.DENIED])
def test_a_request_signed_to_live_forever_is_refused_by_the_access_log(
    world: World, decision: Decision
) -> None:
    """A deadline of 2^64 - 1 is past AccessLog's fixed ceiling (block time + 90 days), granted
    or denied: the revert decodes into its stable code and nothing is recorded."""
    agreement = world.activate(world.research_terms(quota=5))
    reason = DenyReason.NONE if decision == Decision.GRANTED else DenyReason.POLICY_OTHER
    record = world.access_record(agreement, decision, reason, deadline=2**64 - 1)
    with pytest.raises(TransactionError) as caught:
        world.ledger.transact(world.gateway, "AccessLog", "recordAccesses", [record.as_abi()])
    assert caught.value.code == "AccessLogDeadlineTooFar"
    args = caught.value.details["error_args"]
    assert args["deadline"] == 2**64 - 1
    assert args["latest"] - int(time.time()) <= 90 * 86_400 + 60
    assert world.ledger.call("AccessLog", "MAX_REQUEST_LIFETIME") == 90 * 86_400
    request_id = record.request.request_id
    assert (
        world.ledger.call("AccessLog", "decisionOf", request_id, record.request.agreement_id)
        == Decision.NONE
    )
