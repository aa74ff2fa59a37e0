"""Clinical transfers and break-glass through the real gateway and chain.

Across organizations, identified clinical care needs the patient's code: without one the
gateway denies with AUTHORIZATION_INVALID and the chain, offered the same access as GRANTED,
refuses it with the error of that reason. Under an agreement that allows break-glass, an access
that names one patient and a reason is granted without a code, flagged on chain, and reviewed
by the hospital's steward through `POST /v1/access-requests/{id}/break-glass-review`
(`dul steward break-glass review`), once. No patient reference reaches a transaction or event.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import structlog
from eth_hash.auto import keccak
from typer.testing import CliRunner, Result

from dul import log as dul_log
from dul.chain.testing import ChainHandle
from dul.cli.steward import app as steward_app
from dul.cohort import leaf_hash
from dul.contracts.typed_data import AccessRecord, AccessRequest
from dul.contracts.world import OMOP_FIELDS, World
from dul.domain import (
    BreakGlassOutcome,
    BreakGlassReason,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    Scenario,
    Tier,
    break_glass_ref,
    slug_id,
)
from dul.errors import TransactionError
from dul.keys import KeyStore
from dul.signing import Signer
from ledger_gateway.client import GatewayClientError, StewardClient, sign_request, sign_steward_call
from ledger_gateway.relay import function
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

PASSPHRASE = "gateway-tests"  # the gateway fixture's keystore passphrase
EHR = slug_id("hospital-a/ehr-identified")
PATIENT = keccak(b"break-glass patient: a subject reference, never an identity")
GLASS = break_glass_ref(BreakGlassReason.PATIENT_INCAPACITATED)


@pytest.fixture(scope="module")
def transfer(world: World) -> bytes:
    """Identified clinical care of the hospital's patients by the institute's clinicians
    (another organization), break-glass allowed with a 48-hour review window."""
    held = world.ledger.call("DatasetRegistry", "dataset", EHR)
    if held[0] != world.hospital:
        world.ledger.transact(
            world.steward, "DatasetRegistry", "registerDataset", EHR, world.hospital,
            keccak(b"OMOP CDM 5.4"), list(OMOP_FIELDS), Tier.IDENTIFIED,
        )  # fmt: skip
    terms = replace(
        world.research_terms(quota=20),
        datasets=(EHR,),
        scenario=Scenario.CLINICAL_CARE,
        max_tier=Tier.IDENTIFIED,
        consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        duo_codes=(43,),
        break_glass_review_hours=48,
    )
    return world.activate(terms)


@pytest.fixture(scope="module")
def steward_token(gateway: GatewayHandle) -> str:
    return TokenStore(gateway.settings.tokens_path).create(
        f"break-glass-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )


@pytest.fixture(scope="module")
def steward(gateway: GatewayHandle, steward_token: str) -> Iterator[StewardClient]:
    with StewardClient(gateway.url, steward_token) as client:
        yield client


@pytest.fixture(scope="module")
def cli_env(chain: ChainHandle, gateway: GatewayHandle) -> dict[str, str]:
    keys = KeyStore(chain.home, passphrase=PASSPHRASE, scrypt_n=2**14)
    if "hospital-a.steward" not in {name for name, _ in keys.list()}:
        keys.import_key("hospital-a.steward", keccak(b"dul world steward"))
    token = TokenStore(gateway.settings.tokens_path).create(
        f"break-glass-cli-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    return {
        "DUL_HOME": str(chain.home.root),
        "DUL_RPC_URL": chain.rpc_url,
        "DUL_KEY_PASSPHRASE": PASSPHRASE,
        "DUL_GATEWAY_URL": gateway.url,
        "DUL_GATEWAY_TOKEN": token,
    }


def invoke(env: dict[str, str], *args: str) -> Result:
    saved = structlog.get_config()
    dul_log.configure("WARNING")
    try:
        return CliRunner().invoke(steward_app, list(args), env=env)
    finally:
        structlog.configure(**saved)


def clinical_request(agreement: bytes, ref: bytes = bytes(32)) -> AccessRequest:
    return AccessRequest(
        request_id=os.urandom(32),
        agreement_id=agreement,
        dataset_id=EHR,
        field_mask=0b0110,
        tier=Tier.IDENTIFIED,
        operation=Operation.QUERY,
        request_hash=keccak(b"SELECT * FROM condition_occurrence WHERE person_id = :p"),
        deadline=int(time.time()) + 600,
        authorization_ref=ref,
    )


def recorded_reason(world: World, access_id: str) -> DenyReason:
    events = (
        world.ledger.contract("AccessLog")
        .events.AccessRecorded()
        .get_logs(from_block=0, argument_filters={"accessId": bytes.fromhex(access_id[2:])})
    )
    assert len(events) == 1
    return DenyReason(events[0]["args"]["record"]["reason"])


def break_glass_of(world: World, access: bytes, agreement: bytes) -> Any:
    """`AccessLog.breakGlassOf`: (review due, outcome) of the access (request id, agreement)."""
    return world.ledger.call("AccessLog", "breakGlassOf", access, agreement)


def break_glass_access(world: World, gateway: GatewayHandle, transfer: bytes) -> str:
    body = sign_request(
        world.requester, clinical_request(transfer, GLASS), gateway.domain, cohort=[PATIENT]
    )
    answer = gateway.client.request_access(body, wait=True)
    assert (answer.decision, answer.status) == ("GRANTED", "confirmed"), answer
    assert answer.cohort is not None
    assert answer.cohort.size == 1
    return answer.access_id


def test_a_cross_organization_clinical_access_without_a_code_is_denied_with_the_chains_reason(
    world: World, gateway: GatewayHandle, transfer: bytes
) -> None:
    request = clinical_request(transfer)
    body = sign_request(world.requester, request, gateway.domain, cohort=[PATIENT])
    answer = gateway.client.request_access(body, wait=True)
    assert (answer.decision, answer.reasons) == ("DENIED", ["AUTHORIZATION_INVALID"])
    assert answer.status == "confirmed"
    assert recorded_reason(world, answer.access_id) == DenyReason.AUTHORIZATION_INVALID
    # The chain, offered the same access as GRANTED, refuses it for that reason.
    fresh = replace(request, request_id=os.urandom(32))
    granted = AccessRecord(
        fresh, world.requester.address, fresh.sign(world.requester, gateway.domain),
        Decision.GRANTED, DenyReason.NONE, cohort_root=leaf_hash(PATIENT), cohort_size=1,
    )  # fmt: skip
    with pytest.raises(TransactionError) as refused:
        world.ledger.transact(world.gateway, "AccessLog", "recordAccess", granted.as_abi())
    assert refused.value.code == "AccessLogAuthorizationMissing"


def test_break_glass_is_granted_flagged_and_reviewed_once_through_the_cli(
    world: World, gateway: GatewayHandle, transfer: bytes, cli_env: dict[str, str]
) -> None:
    access = break_glass_access(world, gateway, transfer)
    key = bytes.fromhex(access[2:])
    due, outcome = break_glass_of(world, key, transfer)
    assert due > time.time() + 47 * 3600
    assert outcome == BreakGlassOutcome.NONE

    # Nothing about the patient on chain: the reference is in no input, event data or topic.
    flagged = (
        world.ledger.contract("AccessLog")
        .events.BreakGlassAccess()
        .get_logs(from_block=0, argument_filters={"accessId": key})
    )
    assert flagged[0]["args"]["reason"] == BreakGlassReason.PATIENT_INCAPACITATED
    tx = world.ledger.w3.eth.get_transaction(flagged[0]["transactionHash"])
    receipt = world.ledger.w3.eth.get_transaction_receipt(flagged[0]["transactionHash"])
    assert PATIENT not in bytes(tx["input"])
    assert all(PATIENT not in bytes(entry["data"]) for entry in receipt["logs"])
    assert all(PATIENT not in bytes(t) for entry in receipt["logs"] for t in entry["topics"])

    args = ("break-glass", "review", access, "--finding", "Unconscious on arrival; upheld.",
            "--key", "hospital-a.steward")  # fmt: skip
    result = invoke(cli_env, *args, "--outcome", "upheld", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["status"], shown["outcome"], shown["access_id"]) == (
        "confirmed", "UPHELD", access,
    )  # fmt: skip
    assert shown["finding_hash"] == "0x" + keccak(b"Unconscious on arrival; upheld.").hex()
    assert break_glass_of(world, key, transfer)[1] == BreakGlassOutcome.UPHELD

    again = invoke(cli_env, *args, "--agreement", "0x" + transfer.hex(), "--outcome", "referred")
    assert again.exit_code != 0
    assert "AccessLogBreakGlassReviewed" in again.output
    assert break_glass_of(world, key, transfer)[1] == BreakGlassOutcome.UPHELD


def test_the_cli_refuses_bad_input_with_one_line(cli_env: dict[str, str]) -> None:
    unknown = "0x" + "ab" * 32
    for args, says in (
        ((unknown, "--outcome", "upheld", "--finding", "x"), "no break-glass access"),
        ((unknown, "--outcome", "none", "--finding", "x"), "UPHELD or REFERRED"),
        ((unknown, "--outcome", "maybe", "--finding", "x"), "unknown outcome"),
        ((unknown, "--outcome", "upheld", "--finding", " "), "finding must be"),
        (("0x12", "--outcome", "upheld", "--finding", "x"), "32 bytes"),
        ((unknown, "--agreement", "0x12", "--outcome", "upheld", "--finding", "x"), "32 bytes"),
        (
            (unknown, "--agreement", unknown, "--outcome", "upheld", "--finding", "x"),
            f"no break-glass access under agreement {unknown}",
        ),
    ):
        result = invoke(cli_env, "break-glass", "review", *args)
        assert result.exit_code != 0, args
        assert says in result.output, result.output


def test_the_review_route_relays_only_the_paths_review_of_the_holders_steward(
    world: World, gateway: GatewayHandle, transfer: bytes, steward: StewardClient
) -> None:
    access = break_glass_access(world, gateway, transfer)
    key = bytes.fromhex(access[2:])
    review = function("AccessLog", "reviewBreakGlass")
    address = world.ledger.deployment.address("AccessLog")

    def signed(signer: Signer, access_id: bytes, outcome: int) -> bytes:
        data = review.encode(access_id, transfer, outcome, keccak(b"finding"))
        return sign_steward_call(world.ledger.w3, signer, address, data, gas=300_000)

    other = "0x" + os.urandom(32).hex()
    with pytest.raises(GatewayClientError) as exc:  # another access than the path's
        steward.review_break_glass(other, signed(world.steward, key, 1))
    assert (exc.value.status, exc.value.code) == (422, "wrong_transaction")
    with pytest.raises(GatewayClientError) as exc:  # not the holder's steward: the chain says
        steward.review_break_glass(access, signed(world.partner_steward, key, 1), wait=True)
    assert (exc.value.status, exc.value.code) == (403, "AccessLogUnauthorizedReviewer")
    with pytest.raises(GatewayClientError) as exc:
        steward.review_break_glass(access, signed(world.steward, key, 0), wait=True)
    assert (exc.value.status, exc.value.code) == (409, "AccessLogBreakGlassReviewed")
    with pytest.raises(GatewayClientError) as exc:
        steward.review_break_glass(access, b"\xc0")
    assert (exc.value.status, exc.value.code) == (422, "malformed_transaction")
    assert break_glass_of(world, key, transfer)[1] == BreakGlassOutcome.NONE
    answer = steward.review_break_glass(access, signed(world.steward, key, 2), wait=True)
    assert (answer.status, answer.access_id, answer.function) == (
        "confirmed", access, "reviewBreakGlass",
    )  # fmt: skip
    assert break_glass_of(world, key, transfer)[1] == BreakGlassOutcome.REFERRED


def test_the_review_route_refuses_bad_requests_with_problem_json(
    gateway: GatewayHandle, steward_token: str
) -> None:
    access = "0x" + "ab" * 32
    url = f"{gateway.url}/v1/access-requests/{access}/break-glass-review"
    anonymous = httpx.post(url, json={"signed_transaction": "0x00"})
    assert anonymous.status_code == 401
    headers = {"Authorization": f"Bearer {steward_token}"}
    not_hex = httpx.post(url, headers=headers, json={"signed_transaction": "not hex"})
    assert (not_hex.status_code, not_hex.json()["code"]) == (422, "validation_error")
    bad_id = httpx.post(url.replace(access, "0x12"), headers=headers,
                        json={"signed_transaction": "0x00"})  # fmt: skip
    assert bad_id.status_code == 422
    assert bad_id.headers["content-type"].startswith("application/problem+json")


def test_break_glass_is_denied_for_two_patients_or_where_the_agreement_allows_none(
    world: World, gateway: GatewayHandle, transfer: bytes
) -> None:
    two = sign_request(
        world.requester, clinical_request(transfer, GLASS), gateway.domain,
        cohort=[PATIENT, keccak(b"another patient")],
    )  # fmt: skip
    answer = gateway.client.request_access(two, wait=True)
    assert (answer.decision, answer.reasons) == ("DENIED", ["AUTHORIZATION_INVALID"])
    research = world.activate(world.research_terms())
    body = sign_request(
        world.requester,
        replace(clinical_request(research, GLASS), dataset_id=world.dataset, tier=Tier.AGGREGATE),
        gateway.domain,
        cohort=[PATIENT],
    )
    answer = gateway.client.request_access(body, wait=True)
    assert (answer.decision, answer.reasons) == ("DENIED", ["AUTHORIZATION_INVALID"])
    assert answer.status == "confirmed"
