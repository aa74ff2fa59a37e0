"""Artifacts on the real chain: a hospital's gateway grants a training run and releases its model
update; the requester registers the update under its result hash and a model derived from it
with its own key (`dul.artifacts`); refusals come back as the registry's decoded errors and
change nothing."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_hash.auto import keccak
from web3 import Web3

from dul.artifacts import (
    ReleaseRef,
    content_id,
    file_content_id,
    get_artifact,
    register_artifact,
)
from dul.contracts.artifacts import load
from dul.contracts.deploy import verify
from dul.contracts.deployment import Deployment
from dul.contracts.ledger import send
from dul.contracts.typed_data import AccessRequest
from dul.contracts.world import World, derived_signer
from dul.domain import ArtifactKind, Operation, OrgKind, Role, Tier, slug_id
from dul.errors import DeploymentError, TransactionError
from dul.signing import Signer
from ledger_gateway.client import sign_request
from ledger_gateway.testing import GatewayHandle

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

OTHER_ORG = slug_id("artifact-tests-ai-co")


@pytest.fixture(scope="module")
def training(world: World) -> bytes:
    """An active AI-training agreement between the hospital and the institute."""
    return world.activate(world.training_terms(quota=20))


@pytest.fixture(scope="module")
def other_requester(world: World) -> Signer:
    """A requester of another organization, which received none of the institute's releases."""
    signer = derived_signer("artifact-tests-ai-co-requester")
    tx = world.ledger.transact
    tx(world.operator, "Membership", "registerOrganization", OTHER_ORG, OrgKind.AI_COMPANY, "AI Co")
    tx(world.operator, "Membership", "grantMemberRole", OTHER_ORG, signer.address, Role.REQUESTER)
    return signer


def train_and_release(
    world: World, gateway: GatewayHandle, agreement: bytes, update: bytes
) -> ReleaseRef:
    """A TRAIN access at MODEL_PARAMETERS granted through the gateway, and the model update it
    released under its content id, both confirmed on chain."""
    request = AccessRequest(
        request_id=os.urandom(32),
        agreement_id=agreement,
        dataset_id=world.dataset,
        field_mask=0b0001_1110,
        tier=Tier.MODEL_PARAMETERS,
        operation=Operation.TRAIN,
        request_hash=keccak(b"federated round: chest-xray-cnn"),
        deadline=int(time.time()) + 600,
    )
    access = gateway.client.request_access(
        sign_request(world.requester, request, gateway.domain), wait=True
    )
    assert (access.decision, access.status) == ("GRANTED", "confirmed")
    result_hash = content_id(update)
    release = gateway.client.release_result(
        access.access_id, result_hash, "MODEL_UPDATE", len(update), wait=True
    )
    assert release.status == "confirmed"
    return ReleaseRef(request.request_id, agreement, result_hash)


def nonce(world: World, signer: Signer) -> int:
    return world.ledger.w3.eth.get_transaction_count(signer.address)


def test_the_requester_registers_its_update_and_a_model_derived_from_it(
    world: World, gateway: GatewayHandle, training: bytes
) -> None:
    update = b"model update, round 1, hospital-a: " + os.urandom(16)
    release = train_and_release(world, gateway, training, update)
    ledger = world.ledger
    assert ledger.call("AccessLog", "isReleased", *release.as_abi()) is True

    registered = register_artifact(
        ledger, world.requester, content_id(update), ArtifactKind.MODEL_UPDATE, [release]
    )
    assert registered.artifact_id == release.result_hash  # the update's id is its release's hash
    assert registered.owner == world.institute
    assert registered.kind == ArtifactKind.MODEL_UPDATE
    assert registered.releases == (release,)
    assert registered.parents == ()
    assert registered.registrant == world.requester.address

    model = content_id(b"chest-xray-cnn v1: " + os.urandom(16))
    card = content_id(b'{"name": "chest-xray-cnn", "version": 1, "rounds": 1}')
    derived = register_artifact(
        ledger,
        world.requester,
        model,
        ArtifactKind.MODEL,
        parents=[release.result_hash],
        metadata_hash=card,
    )
    assert (derived.parents, derived.releases, derived.metadata_hash) == (
        (release.result_hash,),
        (),
        card,
    )
    stored = get_artifact(ledger, model)
    assert stored is not None
    assert (stored.owner, stored.kind, stored.registrant) == (
        world.institute,
        ArtifactKind.MODEL,
        world.requester.address,
    )
    assert (stored.release_count, stored.parent_count) == (0, 1)
    assert stored.registered_at == ledger.w3.eth.get_block(derived.block_number)["timestamp"]


def test_another_organizations_requester_cannot_use_the_release(
    world: World, gateway: GatewayHandle, training: bytes, other_requester: Signer
) -> None:
    update = b"model update, round 1, hospital-a: " + os.urandom(16)
    release = train_and_release(world, gateway, training, update)
    before = nonce(world, other_requester)
    with pytest.raises(TransactionError) as caught:
        register_artifact(
            world.ledger, other_requester, release.result_hash, ArtifactKind.MODEL_UPDATE, [release]
        )
    assert caught.value.code == "ArtifactRegistryReleaseNotReceived"
    assert caught.value.details["error_args"] == {
        "accessId": release.access_id,
        "recipient": world.institute,
        "owner": OTHER_ORG,
    }
    assert get_artifact(world.ledger, release.result_hash) is None
    assert nonce(world, other_requester) == before
    # The organization that received it still can.
    register_artifact(
        world.ledger, world.requester, release.result_hash, ArtifactKind.MODEL_UPDATE, [release]
    )


def test_an_unknown_parent_is_refused_and_nothing_changes(
    world: World, gateway: GatewayHandle, training: bytes
) -> None:
    update = b"model update, round 2, hospital-a: " + os.urandom(16)
    release = train_and_release(world, gateway, training, update)
    register_artifact(
        world.ledger, world.requester, release.result_hash, ArtifactKind.MODEL_UPDATE, [release]
    )
    unknown = content_id(b"a model nobody registered")
    model = content_id(b"chest-xray-cnn v2: " + os.urandom(16))
    before = nonce(world, world.requester)
    with pytest.raises(TransactionError) as caught:
        register_artifact(
            world.ledger,
            world.requester,
            model,
            ArtifactKind.MODEL,
            parents=[release.result_hash, unknown],
        )
    assert caught.value.code == "ArtifactRegistryUnknownParent"
    assert caught.value.details["error_args"] == {"parent": unknown}
    assert get_artifact(world.ledger, model) is None
    assert nonce(world, world.requester) == before


def test_a_release_never_made_and_a_non_requester_are_refused(
    world: World, training: bytes
) -> None:
    ghost = ReleaseRef(os.urandom(32), training, content_id(b"never released"))
    model = content_id(b"orphan model " + os.urandom(16))
    with pytest.raises(TransactionError) as unknown:
        register_artifact(world.ledger, world.requester, model, ArtifactKind.MODEL, [ghost])
    assert unknown.value.code == "ArtifactRegistryUnknownRelease"
    assert unknown.value.details["error_args"] == {
        "accessId": ghost.access_id,
        "agreementId": training,
        "resultHash": ghost.result_hash,
    }
    with pytest.raises(TransactionError) as gateway_key:
        register_artifact(world.ledger, world.gateway, model, ArtifactKind.MODEL, [ghost])
    assert gateway_key.value.code == "ArtifactRegistryUnauthorizedRegistrant"
    assert gateway_key.value.details["error_args"] == {"account": world.gateway.address.lower()}
    assert get_artifact(world.ledger, model) is None


def test_the_client_sorts_sets_and_refuses_repeats_before_sending(world: World) -> None:
    parent = content_id(b"p")
    with pytest.raises(ValueError, match="named twice"):
        register_artifact(
            world.ledger,
            world.requester,
            content_id(b"x"),
            ArtifactKind.MODEL,
            parents=[parent, parent],
        )
    release = ReleaseRef(bytes(32), bytes(32), parent)
    with pytest.raises(ValueError, match="named twice"):
        register_artifact(
            world.ledger,
            world.requester,
            content_id(b"x"),
            ArtifactKind.MODEL,
            releases=[release, release],
        )
    with pytest.raises(ValueError, match="32 bytes"):
        ReleaseRef(b"short", bytes(32), bytes(32))


def test_content_ids_are_sha256(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    (tmp_path / "model.bin").write_bytes(data)
    assert content_id(b"abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert file_content_id(tmp_path / "model.bin") == content_id(data)


def test_verify_refuses_an_artifact_registry_wired_to_another_access_log(
    world: World, tmp_path: Path
) -> None:
    w3 = world.ledger.w3
    deployment = world.ledger.deployment
    creation = (
        load("ArtifactRegistry").bytecode
        + encode(
            ["address", "address", "address"],
            [
                deployment.address("Membership"),
                deployment.address("AgreementRegistry"),
                deployment.address("ConsentRegistry"),  # not the AccessLog
            ],
        ).hex()
    )
    receipt = send(w3, world.operator, {"data": creation}, label="deploy ArtifactRegistry")
    raw = dict(deployment.raw)
    contracts = {k: dict(v) for k, v in raw["contracts"].items()}
    contracts["ArtifactRegistry"]["address"] = Web3.to_checksum_address(
        receipt["contractAddress"] or ""
    )
    (tmp_path / "d.json").write_text(json.dumps({**raw, "contracts": contracts}))
    with pytest.raises(DeploymentError, match="AccessLog") as caught:
        verify(w3, Deployment.load(tmp_path / "d.json"))
    assert caught.value.code == "artifact_registry_miswired"
