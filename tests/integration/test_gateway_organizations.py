"""Gateway authorization is exact: a steward token speaks for one organization, and every steward
and consent endpoint checks that organization against what the call touches (the holder of the
agreement, dataset, consent or authorization code; a party of an agreement that is signed or
read). A steward token of another organization gets 403 `wrong_organization` at each of them, and
nothing is sent; the holder's own token, on the same calls, goes through.

Real gateway over HTTP on the session chain; the transactions are signed by the holder's steward,
as a token holder who got hold of such bytes would post them."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest
from eth_hash.auto import keccak
from hexbytes import HexBytes
from web3.exceptions import TransactionNotFound

from dul.contracts.typed_data import consent_registry_domain, consent_withdrawal_digest
from dul.contracts.world import World, derived_signer
from dul.domain import Scenario, Tier
from dul.signing import Signer
from ledger_gateway.client import GatewayClientError
from ledger_gateway.relay import function
from ledger_gateway.steward_client import StewardClient, sign_steward_call
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


def token(gateway: GatewayHandle, org: str, role: TokenRole = TokenRole.STEWARD) -> str:
    store = TokenStore(gateway.settings.tokens_path)
    return store.create(f"orgs-{org}-{role}-{os.getpid()}-{time.time_ns()}", org, role)


@pytest.fixture(scope="module")
def holder(gateway: GatewayHandle) -> Iterator[StewardClient]:
    with StewardClient(gateway.url, token(gateway, "hospital-a")) as client:
        yield client


@pytest.fixture(scope="module")
def outsider(gateway: GatewayHandle) -> Iterator[StewardClient]:
    """A steward token of another hospital, on hospital-a's gateway."""
    with StewardClient(gateway.url, token(gateway, "hospital-b")) as client:
        yield client


@pytest.fixture(scope="module")
def requester(gateway: GatewayHandle) -> Iterator[StewardClient]:
    """A steward token of the agreements' requester (a party, not the holder)."""
    with StewardClient(gateway.url, token(gateway, "institute")) as client:
        yield client


def signed(world: World, signer: Signer, contract: str, name: str, *args: object) -> bytes:
    data = function(contract, name).encode(*args)
    address = world.ledger.deployment.address(contract)
    return sign_steward_call(world.ledger.w3, signer, address, data)


def refused(call: Callable[[], Any]) -> GatewayClientError:
    with pytest.raises(GatewayClientError) as exc:
        call()
    assert (exc.value.status, exc.value.code) == (403, "wrong_organization"), exc.value.problem
    assert exc.value.problem["status"] == 403
    assert exc.value.problem["title"] == "Forbidden"
    return exc.value


def not_sent(world: World, raw: bytes) -> None:
    with pytest.raises(TransactionNotFound):
        world.ledger.w3.eth.get_transaction(HexBytes(keccak(raw)))


def test_agreement_endpoints_refuse_another_organizations_steward(
    world: World, holder: StewardClient, outsider: StewardClient, requester: StewardClient
) -> None:
    agreement_bytes = world.activate(world.research_terms())
    agreement = "0x" + agreement_bytes.hex()
    # propose (terms held by hospital-a)
    terms = world.research_terms()
    proposal = signed(world, world.steward, "AgreementRegistry", "propose", terms.as_abi())
    error = refused(lambda: outsider.propose(proposal))
    assert "hospital-b" in error.problem["detail"]
    assert "hospital-a" in error.problem["detail"]
    refused(lambda: requester.propose(proposal))  # a party, but not the holder
    not_sent(world, proposal)
    # reads and signatures: parties only
    refused(lambda: outsider.get_agreement(agreement))
    refused(lambda: outsider.typed_data(agreement))
    assert requester.get_agreement(agreement).holder == "hospital-a"
    proposed = "0x" + terms.agreement_id.hex()
    assert holder.propose(proposal, wait=True).status == "confirmed"
    refused(lambda: outsider.sign_agreement(proposed, world.steward))
    assert holder.sign_agreement(proposed, world.steward, wait=True).status == "confirmed"
    # the requester's steward relays its own party's signature
    signature = requester.sign_agreement(proposed, world.partner_steward, wait=True)
    assert signature.agreement_status == "ACTIVE"
    # lifecycle: the holder's only
    reason = keccak(b"organizations test")
    steps: tuple[tuple[Literal["suspend", "resume", "revoke"], tuple[bytes, ...]], ...] = (
        ("suspend", (reason,)),
        ("resume", ()),
        ("revoke", (reason,)),
    )
    for step, args in steps:
        raw = signed(world, world.steward, "AgreementRegistry", step, agreement_bytes, *args)
        for other in (outsider, requester):
            with pytest.raises(GatewayClientError) as exc:
                other.lifecycle(step, agreement, raw)
            assert (exc.value.status, exc.value.code) == (403, "wrong_organization")
        not_sent(world, raw)
        assert holder.lifecycle(step, agreement, raw, wait=True).status == "confirmed"


def test_dataset_registration_refuses_another_organizations_steward(
    world: World, holder: StewardClient, outsider: StewardClient
) -> None:
    dataset = keccak(f"orgs dataset {time.time_ns()}".encode())
    fields = ["person.year_of_birth"]
    args = (dataset, world.hospital, keccak(b"schema"), fields, Tier.DEIDENTIFIED)
    raw = signed(world, world.steward, "DatasetRegistry", "registerDataset", *args)
    refused(lambda: outsider.register_dataset(raw))
    not_sent(world, raw)
    assert holder.register_dataset(raw, wait=True).status == "confirmed"


def test_consent_endpoints_refuse_another_organizations_steward(
    world: World, holder: StewardClient, outsider: StewardClient
) -> None:
    subject, other = keccak(os.urandom(32)), keccak(os.urandom(32))
    patient = derived_signer(f"orgs patient {time.time_ns()}")
    until = int(time.time()) + 86_400
    terms: list[tuple[object, ...]] = [
        (world.hospital, subject, 1 << Scenario.RESEARCH, [42], 0, until, patient.address,
         bytes(32), [], [])
    ]  # fmt: skip
    record = signed(world, world.steward, "ConsentRegistry", "recordConsents", terms)
    refused(lambda: outsider.record_consents(record))
    not_sent(world, record)
    assert holder.record_consents(record, wait=True).status == "confirmed"
    [consent] = world.record_consents([other], subject_key=patient.address)
    [mine] = [c.consent_id for c in holder.consents(subject).consents]

    refused(lambda: outsider.consents(subject))
    withdraw = signed(
        world, world.steward, "ConsentRegistry", "withdrawConsent", bytes.fromhex(mine[2:])
    )
    refused(lambda: outsider.withdraw_consent(subject, withdraw))
    not_sent(world, withdraw)
    registry = world.ledger.deployment.address("ConsentRegistry")
    domain = consent_registry_domain(world.ledger.chain_id, registry)
    deadline = int(time.time()) + 600
    by_patient = patient.sign_digest(consent_withdrawal_digest(domain, consent, deadline))
    refused(lambda: outsider.relay_patient_withdrawal(other, consent, deadline, by_patient))
    assert [c.status for c in holder.consents(other).consents] == ["GRANTED"]
    assert holder.withdraw_consent(subject, withdraw, wait=True).status == "confirmed"
    done = holder.relay_patient_withdrawal(other, consent, deadline, by_patient, wait=True)
    assert done.status == "confirmed"


def test_authorization_endpoints_refuse_another_organizations_steward(
    world: World, holder: StewardClient, outsider: StewardClient
) -> None:
    code_hash = keccak(f"orgs code {time.time_ns()}".encode())
    authorization = (world.hospital, keccak(os.urandom(32)), world.institute, world.dataset,
                     0b1111, Tier.PSEUDONYMIZED, Scenario.INSURANCE_CLAIM, 0,
                     int(time.time()) + 86_400, False, bytes(32))  # fmt: skip
    issue = signed(world, world.steward, "ConsentRegistry", "issueAuthorization", code_hash,
                   authorization)  # fmt: skip
    refused(lambda: outsider.issue_authorization(issue))
    not_sent(world, issue)
    assert holder.issue_authorization(issue, wait=True).status == "confirmed"
    revoke = signed(world, world.steward, "ConsentRegistry", "revokeAuthorization", code_hash)
    refused(lambda: outsider.revoke_authorization(code_hash, revoke))
    not_sent(world, revoke)
    assert holder.revoke_authorization(code_hash, revoke, wait=True).status == "confirmed"


def test_an_access_service_token_is_refused_at_steward_endpoints_and_vice_versa(
    world: World, gateway: GatewayHandle, holder: StewardClient
) -> None:
    agreement = "0x" + world.activate(world.research_terms()).hex()
    with StewardClient(gateway.url, gateway.token) as service:
        with pytest.raises(GatewayClientError) as exc:
            service.typed_data(agreement)
        assert (exc.value.status, exc.value.code) == (403, "forbidden")
        assert service.get_agreement(agreement).holder == "hospital-a"  # its own holder's
    with pytest.raises(GatewayClientError) as exc:
        holder._send("GET", "/v1/access-requests/0x" + "ab" * 32)
    assert (exc.value.status, exc.value.code) == (403, "forbidden")
    other = token(gateway, "hospital-b", TokenRole.ACCESS_SERVICE)
    with StewardClient(gateway.url, other) as foreign, pytest.raises(GatewayClientError) as exc:
        foreign._send("GET", "/v1/access-requests/0x" + "ab" * 32)
    assert (exc.value.status, exc.value.code) == (403, "forbidden")
