"""Patient authorization codes over real HTTP against the real chain: a steward issues a code
(its hash only) or the patient signs one with their own registered key and the gateway relays
it, an insurer's signed request redeems it once — a one-patient access on chain
that redeems the code in the same transaction — and every misuse is DENIED with the fault the
chain would name, or refused before anything is recorded; two concurrent redemptions grant
exactly one, and a gateway restart keeps a reservation still in its outbox."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from eth_hash.auto import keccak
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

from dul import log as dul_log
from dul.chain.testing import ChainHandle, free_port
from dul.cli.steward import app as steward_app
from dul.cohort import leaf_hash
from dul.contracts.typed_data import (
    AccessRequest,
    AgreementTerms,
    AuthorizationRevocation,
    PatientAuthorization,
    agreement_domain,
    consent_registry_domain,
)
from dul.contracts.world import World, derived_signer
from dul.domain import (
    AuthorizationStatus,
    ConsentPolicy,
    Decision,
    Operation,
    OrgKind,
    OrgStatus,
    Role,
    Scenario,
    Tier,
    operations_mask,
    slug_id,
)
from dul.keys import KeyStore
from dul.signing import Signer
from dul.subjects import code_hash, load_subject_key, new_authorization_code, subject_ref
from ledger_gateway.client import (
    GatewayClient,
    GatewayClientError,
    StewardClient,
    sign_redemption,
    sign_request,
    sign_steward_call,
)
from ledger_gateway.consent_flows import PatientAuthorizationIn
from ledger_gateway.models import AccessOut
from ledger_gateway.relay import function
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.testing import GatewayHandle, GatewayProcess, serve
from ledger_gateway.tokens import TokenRole, TokenStore

# Every test but the two gateway processes on one outbox (process start-up and SQLite
# sharing, not the node; two more interpreters on loaded cores) runs on each node.
pytestmark = pytest.mark.integration

INSURER = slug_id("insurer")
ALLOWED = 0b1111


@dataclass(frozen=True)
class Claims:
    """An INSURANCE_CLAIM agreement between the hospital and an insurer over two datasets."""

    agreement: bytes
    other_dataset: bytes
    requester: Signer


def _activate(world: World, terms: AgreementTerms, requester_signer: Signer) -> bytes:
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    domain = agreement_domain(
        world.ledger.chain_id, world.ledger.deployment.address("AgreementRegistry")
    )
    digest = terms.digest(domain)
    for signer in (world.steward, requester_signer):
        world.ledger.transact(
            signer,
            "AgreementRegistry",
            "sign",
            terms.agreement_id,
            signer.address,
            signer.sign_digest(digest),
        )
    return terms.agreement_id


@pytest.fixture(scope="module")
def claims(world: World) -> Claims:
    requester = derived_signer("insurer requester")
    status = world.ledger.call("Membership", "organization", INSURER)[1]
    if status == OrgStatus.NONE:
        tx = world.ledger.transact
        tx(world.operator, "Membership", "registerOrganization", INSURER, OrgKind.INSURER, "Ins")
        tx(
            world.operator,
            "Membership",
            "grantMemberRole",
            INSURER,
            requester.address,
            Role.REQUESTER,
        )
    other = slug_id(f"hospital-a/claims-{os.getpid()}")
    world.ledger.transact(
        world.steward,
        "DatasetRegistry",
        "registerDataset",
        other,
        world.hospital,
        keccak(b"claims"),
        ["a", "b", "c", "d"],
        Tier.PSEUDONYMIZED,
    )
    now = int(time.time())
    terms = AgreementTerms(
        holder=world.hospital,
        requester=INSURER,
        datasets=(world.dataset, other),
        field_masks=(ALLOWED, ALLOWED),
        scenario=Scenario.INSURANCE_CLAIM,
        max_tier=Tier.PSEUDONYMIZED,
        operations=operations_mask(Operation.QUERY, Operation.EXPORT_RESULT),
        valid_from=now - 60,
        valid_until=now + 86_400,
        quota=1_000,
        consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        terms_hash=keccak(b"claims terms"),
        nonce=time.time_ns(),
        deadline=now + 3_600,
    )
    return Claims(_activate(world, terms, requester), other, requester)


@pytest.fixture(scope="module")
def steward(gateway: GatewayHandle) -> Iterator[StewardClient]:
    token = TokenStore(gateway.settings.tokens_path).create(
        f"codes-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    with StewardClient(gateway.url, token) as client:
        yield client


def issued(world: World, **changes: Any) -> tuple[str, bytes]:
    """A fresh code issued to the insurer for a fresh subject: (code, subject)."""
    code, subject = new_authorization_code(), os.urandom(32)
    values: dict[str, Any] = {"grantee": INSURER, "field_mask": 0b0110}
    values.update(changes)
    grantee = values.pop("grantee")
    world.issue_authorization(code_hash(code), subject, grantee, **values)
    return code, subject


def redemption(
    world: World,
    gateway: GatewayHandle,
    claims: Claims,
    code: str,
    ref: bytes | None = None,
    **overrides: Any,
) -> Any:
    values: dict[str, Any] = {
        "request_id": os.urandom(32),
        "agreement_id": claims.agreement,
        "dataset_id": world.dataset,
        "field_mask": 0b0110,
        "tier": Tier.PSEUDONYMIZED,
        "operation": Operation.QUERY,
        "request_hash": keccak(b"claim 4711"),
        "deadline": int(time.time()) + 600,
        "authorization_ref": code_hash(code) if ref is None else ref,
    }
    values.update(overrides)
    return sign_redemption(claims.requester, AccessRequest(**values), gateway.domain, code)


def authorization_status(world: World, code: str) -> AuthorizationStatus:
    return AuthorizationStatus(
        world.ledger.call("ConsentRegistry", "authorization", code_hash(code))[7]
    )


@pytest.mark.every_node
def test_a_code_redeems_once_for_a_one_patient_access_on_chain(
    world: World, gateway: GatewayHandle, claims: Claims, steward: StewardClient
) -> None:
    code, subject = new_authorization_code(), os.urandom(32)
    authorization = (world.hospital, subject, INSURER, world.dataset, 0b0110,
                     Tier.PSEUDONYMIZED, Scenario.INSURANCE_CLAIM, 0,
                     int(time.time()) + 3_600, False, bytes(32))  # fmt: skip
    data = function("ConsentRegistry", "issueAuthorization").encode(code_hash(code), authorization)
    registry = world.ledger.deployment.address("ConsentRegistry")
    raw = sign_steward_call(world.ledger.w3, world.steward, registry, data)
    answer = steward.issue_authorization(raw, wait=True)
    assert (answer.status, answer.code_hash) == ("confirmed", "0x" + code_hash(code).hex())

    body = redemption(world, gateway, claims, code.lower())  # as the patient wrote it
    first = gateway.client.redeem(body)
    assert (first.decision, first.reasons, first.authorization_fault) == ("GRANTED", [], None)
    assert first.cohort is not None
    assert first.cohort.admitted == ["0x" + subject.hex()]
    assert (first.cohort.root, first.cohort.size) == ("0x" + leaf_hash(subject).hex(), 1)
    again = gateway.client.redeem(body)  # the same request again: the same answer
    keep = {"status", "tx_hash", "block_number"}
    assert again.model_dump(exclude=keep) == first.model_dump(exclude=keep)

    second = gateway.client.redeem(redemption(world, gateway, claims, code))
    assert (second.decision, second.reasons) == ("DENIED", ["AUTHORIZATION_INVALID"])
    assert second.authorization_fault == "REDEEMED"
    assert second.cohort is None

    done = gateway.client.get_access(first.access_id, wait=True)
    assert done.status == "confirmed"
    assert done.cohort == first.cohort
    redeemed = world.ledger.contract("ConsentRegistry").events.AuthorizationRedeemed()
    logs = redeemed.get_logs(from_block=0, argument_filters={"codeHash": code_hash(code)})
    assert [bytes(e["args"]["accessId"]) for e in logs] == [bytes.fromhex(first.access_id[2:])]
    assert authorization_status(world, code) == AuthorizationStatus.REDEEMED
    engine = create_engine(gateway.settings.effective_database_url)
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT root, size, leaves FROM cohort_leaves WHERE access_id = :id"),
            {"id": bytes.fromhex(first.access_id[2:])},
        ).one()
    engine.dispose()
    assert (bytes(row.root), row.size, bytes(row.leaves)) == (leaf_hash(subject), 1, subject)
    denied = gateway.client.get_access(second.access_id, wait=True)
    assert (denied.status, denied.authorization_fault) == ("confirmed", "REDEEMED")
    second_id = bytes.fromhex(second.access_id[2:])
    decision = world.ledger.call("AccessLog", "decisionOf", second_id, claims.agreement)
    assert decision == Decision.DENIED


@pytest.mark.every_node
def test_every_misuse_is_denied_with_the_chains_fault(
    world: World, gateway: GatewayHandle, claims: Claims, steward: StewardClient
) -> None:
    expiring, _ = issued(world, expires_at=int(time.time()) + 2)
    cases: list[tuple[Any, str]] = []
    code, _ = issued(world, grantee=world.institute)  # the right hash, the wrong grantee
    cases.append((redemption(world, gateway, claims, code), "WRONG_GRANTEE"))
    code, _ = issued(world)
    cases.append((redemption(world, gateway, claims, code, dataset_id=claims.other_dataset),
                  "DATASET_NOT_IN_SCOPE"))  # fmt: skip
    cases.append((redemption(world, gateway, claims, code, field_mask=0b1110),
                  "FIELDS_NOT_IN_SCOPE"))  # fmt: skip
    code, _ = issued(world, tier=Tier.DEIDENTIFIED)
    cases.append((redemption(world, gateway, claims, code), "TIER_ABOVE_SCOPE"))
    never = new_authorization_code()
    cases.append((redemption(world, gateway, claims, never), "UNKNOWN"))
    revoked, _ = issued(world)
    raw = sign_steward_call(
        world.ledger.w3,
        world.steward,
        world.ledger.deployment.address("ConsentRegistry"),
        function("ConsentRegistry", "revokeAuthorization").encode(code_hash(revoked)),
    )
    assert steward.revoke_authorization(code_hash(revoked), raw, wait=True).status == "confirmed"
    cases.append((redemption(world, gateway, claims, revoked), "REVOKED"))
    expires_at = world.ledger.call("ConsentRegistry", "authorization", code_hash(expiring))[8]
    time.sleep(max(0.0, expires_at + 1.05 - time.time()))
    cases.append((redemption(world, gateway, claims, expiring), "EXPIRED"))
    answers = [gateway.client.redeem(body) for body, _ in cases]
    for answer, (_, fault) in zip(answers, cases, strict=True):
        assert (answer.decision, answer.reasons) == ("DENIED", ["AUTHORIZATION_INVALID"]), fault
        assert answer.authorization_fault == fault
    last = gateway.client.get_access(answers[-1].access_id, wait=True)
    assert last.status == "confirmed"  # denials are recorded like any decision
    assert last.authorization_fault == "EXPIRED"


@pytest.mark.every_node
def test_a_code_that_is_not_the_requests_is_refused_and_nothing_recorded(
    world: World, gateway: GatewayHandle, claims: Claims
) -> None:
    code, _ = issued(world)
    other = new_authorization_code()
    for bad in (other, "NOT-A-CODE"):
        body = redemption(world, gateway, claims, code).model_copy(update={"code": bad})
        with pytest.raises(GatewayClientError) as exc:
            gateway.client.redeem(body)
        assert (exc.value.status, exc.value.code) == (400, "authorization_code_mismatch")
        assert code not in json.dumps(exc.value.problem)
        with pytest.raises(GatewayClientError) as missing:
            gateway.client.get_access(body.request_id)
        assert missing.value.status == 404
    assert authorization_status(world, code) == AuthorizationStatus.ISSUED
    # the code still works
    assert gateway.client.redeem(redemption(world, gateway, claims, code)).decision == "GRANTED"


@pytest.mark.every_node
def test_the_wrong_kind_of_agreement_or_endpoint(
    world: World, gateway: GatewayHandle, claims: Claims
) -> None:
    code, _ = issued(world)
    research = world.activate(world.research_terms())
    body = redemption(world, gateway, claims, code, agreement_id=research, tier=Tier.DEIDENTIFIED)
    with pytest.raises(GatewayClientError) as exc:
        gateway.client.redeem(body)
    assert (exc.value.status, exc.value.code) == (422, "not_an_authorization_agreement")
    # an authorization agreement asked without the code: denied, recorded
    plain = AccessRequest(
        os.urandom(32), claims.agreement, world.dataset, 0b0110, Tier.PSEUDONYMIZED,
        Operation.QUERY, keccak(b"q"), int(time.time()) + 600, code_hash(code),
    )  # fmt: skip
    answer = gateway.client.request_access(
        sign_request(claims.requester, plain, gateway.domain, cohort=[os.urandom(32)])
    )
    assert (answer.decision, answer.reasons) == ("DENIED", ["AUTHORIZATION_INVALID"])
    assert authorization_status(world, code) == AuthorizationStatus.ISSUED


@pytest.mark.every_node
def test_two_concurrent_redemptions_grant_exactly_one(
    world: World, gateway: GatewayHandle, claims: Claims
) -> None:
    code, _ = issued(world)
    bodies = [redemption(world, gateway, claims, code).model_dump() for _ in range(2)]

    async def race() -> list[AccessOut]:
        headers = {"Authorization": f"Bearer {gateway.token}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/authorizations/redeem", json=b) for b in bodies)
            )
        assert [r.status_code for r in replies] == [201, 201]
        return [AccessOut.model_validate(r.json()) for r in replies]

    answers = asyncio.run(race())
    assert sorted(a.decision for a in answers) == ["DENIED", "GRANTED"]
    assert {a.authorization_fault for a in answers} == {None, "REDEEMED"}
    confirmed = [gateway.client.get_access(a.access_id, wait=True) for a in answers]
    assert {a.status for a in confirmed} == {"confirmed"}
    granted = next(a for a in answers if a.decision == "GRANTED")
    status = world.ledger.call("ConsentRegistry", "authorization", code_hash(code))
    assert (status[7], "0x" + bytes(status[10]).hex()) == (
        AuthorizationStatus.REDEEMED,
        granted.access_id,
    )


@pytest.mark.every_node
def test_a_restart_keeps_a_reservation_still_in_the_outbox(
    world: World,
    chain: ChainHandle,
    gateway: GatewayHandle,
    claims: Claims,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
    name = "hospital-a.restart-gateway"
    if name not in {n for n, _ in keys.list()}:
        address = keys.import_key(name, keccak(b"dul tests restart gateway"))
        world.ledger.transact(
            world.operator, "Membership", "grantMemberRole", world.hospital, address, Role.GATEWAY
        )
    settings = GatewaySettings(
        home=chain.home.root,
        org="hospital-a",
        key=name,
        key_passphrase=SecretStr("gateway-tests"),
        rpc_url=chain.rpc_url,
        database_url=f"sqlite:///{tmp_path_factory.mktemp('restart') / 'gateway.db'}",
        port=free_port(),
        batch_latency_ms=600_000,  # the submitter holds the decision back: it stays pending
        deadline_margin_s=5,
    )
    code, _ = issued(world)

    def redeem() -> AccessOut:
        with GatewayClient(f"http://127.0.0.1:{settings.port}", gateway.token) as client:
            return client.redeem(redemption(world, gateway, claims, code))

    with serve(settings):
        first = redeem()
    assert (first.decision, first.status) == ("GRANTED", "pending")
    assert authorization_status(world, code) == AuthorizationStatus.ISSUED  # not on chain yet
    with serve(settings):
        again = redeem()
    assert (again.decision, again.authorization_fault) == ("DENIED", "REDEEMED")
    # and once the submitter may send, the reserved grant is what the chain records
    with (
        serve(settings.model_copy(update={"batch_latency_ms": 20})),
        GatewayClient(f"http://127.0.0.1:{settings.port}", gateway.token) as client,
    ):
        assert client.get_access(first.access_id, wait=True).status == "confirmed"
    assert authorization_status(world, code) == AuthorizationStatus.REDEEMED


@pytest.fixture(scope="module")
def two_processes(
    world: World, chain: ChainHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess, str]]:
    """Two `dul gateway serve` processes sharing one outbox (one SQLite file, one key): the
    reservations they make are the store's, not either process's; and their token."""
    keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
    name = "hospital-a.shared-outbox-gateway"
    if name not in {n for n, _ in keys.list()}:
        address = keys.import_key(name, keccak(b"dul tests shared outbox gateway"))
        world.ledger.transact(
            world.operator, "Membership", "grantMemberRole", world.hospital, address, Role.GATEWAY
        )
    state = tmp_path_factory.mktemp("shared-outbox")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DUL_")},
        **chain.env,  # DUL_HOME, DUL_RPC_URL and the session's DUL_RPC_TOKEN
        "DUL_KEY_PASSPHRASE": "gateway-tests",
        "DUL_GATEWAY_KEY": name,
        "DUL_GATEWAY_STATE_DIR": str(state),
        "DUL_GATEWAY_BATCH_LATENCY_MS": "20",
        "DUL_GATEWAY_DEADLINE_MARGIN_S": "5",
        "DUL_LOG_LEVEL": "WARNING",
    }
    token = TokenStore(state / "tokens.json").create(
        "shared", "hospital-a", TokenRole.ACCESS_SERVICE
    )
    processes = [GatewayProcess(env, free_port(), state / f"gateway-{i}.log") for i in range(2)]
    try:
        for process in processes:
            process.start(timeout=180)  # an interpreter importing everything on loaded cores
        yield processes[0], processes[1], token
    finally:
        for process in processes:
            process.stop()


async def _post_across(
    urls: list[str], token: str, path: str, bodies: list[dict[str, Any]]
) -> list[AccessOut]:
    """POST all bodies at once, body i to urls[i % len(urls)]."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:
        replies = await asyncio.gather(
            *(client.post(urls[i % len(urls)] + path, json=b) for i, b in enumerate(bodies))
        )
    assert [r.status_code for r in replies] == [201] * len(bodies), [r.text for r in replies]
    return [AccessOut.model_validate(r.json()) for r in replies]


def test_two_processes_on_one_outbox_grant_one_redemption_and_never_exceed_a_quota(
    world: World,
    gateway: GatewayHandle,
    claims: Claims,
    two_processes: tuple[GatewayProcess, GatewayProcess, str],
) -> None:
    first, second, token = two_processes
    urls = [first.url, second.url]
    for _ in range(3):  # three codes, each raced by two requests, one in each process
        code, _ = issued(world)
        bodies = [redemption(world, gateway, claims, code).model_dump() for _ in range(2)]
        answers = asyncio.run(_post_across(urls, token, "/v1/authorizations/redeem", bodies))
        assert sorted(a.decision for a in answers) == ["DENIED", "GRANTED"]
        assert {a.authorization_fault for a in answers} == {None, "REDEEMED"}

    small = world.activate(world.research_terms(quota=5))
    deadline = int(time.time()) + 600
    bodies = [
        sign_request(
            world.requester,
            AccessRequest(os.urandom(32), small, world.dataset, 0b0110, Tier.DEIDENTIFIED,
                          Operation.QUERY, keccak(bytes([i])), deadline),
            gateway.domain,
        ).model_dump()
        for i in range(24)
    ]  # fmt: skip
    answers = asyncio.run(_post_across(urls, token, "/v1/access-requests", bodies))
    granted = [a for a in answers if a.decision == "GRANTED"]
    assert len(granted) == 5
    assert all(a.reasons == ["QUOTA_EXHAUSTED"] for a in answers if a.decision == "DENIED")
    with GatewayClient(first.url, token) as client:
        assert {client.get_access(a.access_id, wait=True).status for a in answers} == {"confirmed"}
    assert world.ledger.call("AccessLog", "accessesUsed", small) == 5


@pytest.mark.every_node
def test_cli_issues_a_code_shown_once_that_redeems_and_revokes(
    world: World,
    chain: ChainHandle,
    gateway: GatewayHandle,
    claims: Claims,
    steward: StewardClient,
    tmp_path: Path,
) -> None:
    keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
    if "hospital-a.steward" not in {name for name, _ in keys.list()}:
        keys.import_key("hospital-a.steward", keccak(b"dul world steward"))
    token = TokenStore(gateway.settings.tokens_path).create(
        f"codes-cli-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )
    env = {
        "DUL_HOME": str(chain.home.root),
        "DUL_RPC_URL": chain.rpc_url,
        "DUL_KEY_PASSPHRASE": "gateway-tests",
        "DUL_GATEWAY_URL": gateway.url,
        "DUL_GATEWAY_TOKEN": token,
    }
    key_file = tmp_path / "hospital-a.subject-key"
    made = cli(env, "subject-key", "new", "--subject-key", str(key_file), "--json")
    assert made.exit_code == 0, made.output
    again = cli(env, "subject-key", "new", "--subject-key", str(key_file))
    assert again.exit_code == 1  # a subject key is never replaced
    issued_ = cli(env, "authorization", "issue", "PSN-claim-1", "--grantee", "insurer",
                  "--field", "person.year_of_birth", "--field", "2", "--tier", "PSEUDONYMIZED",
                  "--days", "7", "--subject-key", str(key_file), "--key", "hospital-a.steward",
                  "--json")  # fmt: skip
    assert issued_.exit_code == 0, issued_.output
    out = json.loads(issued_.stdout)
    assert out["code_hash"] == "0x" + code_hash(out["code"]).hex()
    subject = subject_ref(load_subject_key(key_file), "PSN-claim-1")
    assert out["subject"] == "0x" + subject.hex()
    answer = gateway.client.redeem(redemption(world, gateway, claims, out["code"]))
    assert answer.decision == "GRANTED"
    assert answer.cohort is not None
    assert answer.cohort.admitted == [out["subject"]]

    second = cli(env, "authorization", "issue", "PSN-claim-2", "--grantee", "insurer",
                 "--field-mask", "0x6", "--subject-key", str(key_file),
                 "--key", "hospital-a.steward", "--json")  # fmt: skip
    assert second.exit_code == 0, second.output
    code = json.loads(second.stdout)["code"]
    revoked = cli(env, "authorization", "revoke", code, "--key", "hospital-a.steward", "--json")
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(revoked.stdout)["status"] == "confirmed"
    assert authorization_status(world, code) == AuthorizationStatus.REVOKED
    refused = cli(env, "authorization", "revoke", code, "--key", "hospital-a.steward")
    assert refused.exit_code == 1
    assert "ConsentRegistryAuthorizationNotIssued" in refused.output
    assert "Traceback" not in refused.output

    # a multi-use code: every fitting access of the insurer until it expires, until revoked
    multi = cli(env, "authorization", "issue", "PSN-claim-4", "--grantee", "insurer",
                "--field-mask", "0x6", "--multi-use", "--subject-key", str(key_file),
                "--key", "hospital-a.steward", "--json")  # fmt: skip
    assert multi.exit_code == 0, multi.output
    issued_multi = json.loads(multi.stdout)
    assert issued_multi["multi_use"] is True
    multi_code = issued_multi["code"]
    uses = [gateway.client.redeem(redemption(world, gateway, claims, multi_code)) for _ in range(3)]
    assert [u.decision for u in uses] == ["GRANTED"] * 3, uses
    for use in uses:
        assert gateway.client.get_access(use.access_id, wait=True).status == "confirmed"
    stored = world.ledger.call("ConsentRegistry", "authorization", code_hash(multi_code))
    assert (stored[7], stored[9], stored[10]) == (
        AuthorizationStatus.ISSUED,
        True,
        bytes.fromhex(uses[-1].access_id[2:]),
    )
    assert cli(env, "authorization", "revoke", multi_code, "--key", "hospital-a.steward",
               "--json").exit_code == 0  # fmt: skip
    after = gateway.client.redeem(redemption(world, gateway, claims, multi_code))
    assert (after.decision, after.authorization_fault) == ("DENIED", "REVOKED")

    # the patient's own key, registered without a consent, rotated, then removed
    wallet = derived_signer(f"cli patient wallet {os.getpid()}")
    steward_key = ["--subject-key", str(key_file), "--key", "hospital-a.steward"]
    registered = cli(
        env, "patient-key", "PSN-claim-3", "--address", wallet.address, *steward_key, "--json"
    )
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout)["status"] == "confirmed"
    ref = subject_ref(load_subject_key(key_file), "PSN-claim-3")
    on_chain = world.ledger.call("ConsentRegistry", "subjectKeyOf", world.hospital, ref)
    assert on_chain == wallet.address
    removed = cli(env, "patient-key", "PSN-claim-3", "--remove", "--subject-key", str(key_file),
                  "--key", "hospital-a.steward", "--json")  # fmt: skip
    assert removed.exit_code == 0, removed.output
    assert world.ledger.call("ConsentRegistry", "subjectKeyOf", world.hospital, ref) == (
        "0x" + "00" * 20
    )
    for bad in (["--address", "0x12"], ["--address", "0x" + "00" * 20], [],
                ["--address", wallet.address, "--remove"]):  # fmt: skip
        wrong = cli(env, "patient-key", "PSN-claim-3", *bad, "--subject-key", str(key_file),
                    "--key", "hospital-a.steward")  # fmt: skip
        assert wrong.exit_code != 0, bad
        assert "Traceback" not in wrong.output


def cli(env: dict[str, str], *args: str) -> Result:
    saved = structlog.get_config()
    dul_log.configure("WARNING")
    try:
        return CliRunner().invoke(steward_app, list(args), env=env)
    finally:
        structlog.configure(**saved)


# --------------------------------------------------------------------------- patient-held codes


def _problem(exc: pytest.ExceptionInfo[GatewayClientError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


def _patient_body(
    world: World, authorization: PatientAuthorization, signature: bytes
) -> PatientAuthorizationIn:
    return PatientAuthorizationIn(
        code_hash="0x" + authorization.code_hash.hex(),
        subject="0x" + authorization.subject.hex(),
        grantee="0x" + authorization.grantee.hex(),
        dataset_id="0x" + authorization.dataset.hex(),
        field_mask=authorization.field_mask,
        tier=authorization.tier.name,
        scenario=authorization.scenario.name,
        expires_at=authorization.expires_at,
        signature="0x" + signature.hex(),
    )


@pytest.mark.every_node
def test_a_patient_signed_code_opens_exactly_one_access_for_its_grantee(
    world: World, gateway: GatewayHandle, claims: Claims, steward: StewardClient
) -> None:
    patient = derived_signer(f"patient wallet {os.getpid()} {time.time_ns()}")
    subject = os.urandom(32)
    registry = world.ledger.deployment.address("ConsentRegistry")
    domain = consent_registry_domain(world.ledger.chain_id, registry)

    # the steward registers the patient's key (no consent needed); another subject's path: 422
    register = function("ConsentRegistry", "registerSubjectKey")
    raw = sign_steward_call(
        world.ledger.w3, world.steward, registry,
        register.encode(world.hospital, subject, patient.address),
    )  # fmt: skip
    with pytest.raises(GatewayClientError) as exc:
        steward.register_subject_key(os.urandom(32), raw)
    assert _problem(exc) == (422, "wrong_transaction")
    assert steward.register_subject_key(subject, raw, wait=True).status == "confirmed"
    assert world.ledger.call("ConsentRegistry", "subjectKeyOf", world.hospital, subject) == (
        patient.address
    )

    def authorization(code: str, **changes: Any) -> PatientAuthorization:
        values: dict[str, Any] = {
            "code_hash": code_hash(code), "holder": world.hospital, "subject": subject,
            "grantee": INSURER, "dataset": world.dataset, "field_mask": 0b0110,
            "tier": Tier.PSEUDONYMIZED, "scenario": Scenario.INSURANCE_CLAIM,
            "expires_at": int(time.time()) + 3_600,
        }  # fmt: skip
        values.update(changes)
        return PatientAuthorization(**values)

    code = new_authorization_code()
    mine = authorization(code)
    onchain = world.ledger.call("ConsentRegistry", "authorizationDigest", mine.code_hash,
                                mine.as_abi())  # fmt: skip
    assert onchain == mine.digest(domain)

    # forged, expired: refused with the contract's errors, nothing stored or sent
    forged = derived_signer("not the patient").sign_digest(mine.digest(domain))
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_authorization(_patient_body(world, mine, forged))
    assert _problem(exc) == (422, "ConsentRegistryInvalidAuthorizationSignature")
    stale = authorization(code, expires_at=int(time.time()) - 3_600)  # past on any clock
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_authorization(
            _patient_body(world, stale, stale.sign(patient, domain))
        )
    assert _problem(exc) == (422, "ConsentRegistryAuthorizationSignatureExpired")
    assert authorization_status(world, code) == AuthorizationStatus.NONE

    body = _patient_body(world, mine, mine.sign(patient, domain))
    relayed = steward.relay_patient_authorization(body, wait=True)
    assert (relayed.status, relayed.action, relayed.by) == ("confirmed", "issue", "subject")
    again = steward.relay_patient_authorization(body, wait=True)  # the same signature: one op
    assert again.operation_id == relayed.operation_id
    issued_logs = (
        world.ledger.contract("ConsentRegistry")
        .events.AuthorizationIssued()
        .get_logs(from_block=0, argument_filters={"codeHash": code_hash(code)})
    )
    [event] = issued_logs
    assert (event["args"]["issuer"], event["args"]["bySubject"]) == (patient.address, True)

    # exactly one access for its grantee: the second use is DENIED with the chain's fault
    first = gateway.client.redeem(redemption(world, gateway, claims, code))
    assert (first.decision, first.authorization_fault) == ("GRANTED", None)
    assert first.cohort is not None
    assert first.cohort.admitted == ["0x" + subject.hex()]
    second = gateway.client.redeem(redemption(world, gateway, claims, code))
    assert (second.decision, second.authorization_fault) == ("DENIED", "REDEEMED")
    assert gateway.client.get_access(first.access_id, wait=True).status == "confirmed"
    assert authorization_status(world, code) == AuthorizationStatus.REDEEMED

    # a code the patient signed for another grantee opens nothing for the insurer
    other = new_authorization_code()
    theirs = authorization(other, grantee=world.institute)
    steward.relay_patient_authorization(
        _patient_body(world, theirs, theirs.sign(patient, domain)), wait=True
    )
    wrong = gateway.client.redeem(redemption(world, gateway, claims, other))
    assert (wrong.decision, wrong.authorization_fault) == ("DENIED", "WRONG_GRANTEE")
    assert authorization_status(world, other) == AuthorizationStatus.ISSUED

    # the patient revokes it with their own key (a forged revocation first: refused)
    deadline = int(time.time()) + 600
    revocation = AuthorizationRevocation(code_hash(other), deadline)
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_revocation(
            code_hash(other), deadline, revocation.sign(derived_signer("nobody"), domain)
        )
    assert _problem(exc) == (422, "ConsentRegistryInvalidAuthorizationSignature")
    revoked = steward.relay_patient_revocation(
        code_hash(other), deadline, revocation.sign(patient, domain), wait=True
    )
    assert (revoked.status, revoked.action) == ("confirmed", "revoke")
    assert authorization_status(world, other) == AuthorizationStatus.REVOKED


@pytest.mark.every_node
def test_patient_code_routes_refuse_bad_input(
    world: World, gateway: GatewayHandle, steward: StewardClient
) -> None:
    good = {
        "code_hash": "0x" + "11" * 32, "subject": "0x" + "22" * 32, "grantee": "0x" + INSURER.hex(),
        "dataset_id": "0x" + world.dataset.hex(), "field_mask": 6, "tier": "PSEUDONYMIZED",
        "scenario": "INSURANCE_CLAIM", "expires_at": int(time.time()) + 600,
        "signature": "0x" + "33" * 65,
    }  # fmt: skip
    for change in ({"field_mask": 0}, {"tier": "SECRET"}, {"scenario": "x"},
                   {"expires_at": 2**64}, {"signature": "0x12"}, {"extra": 1}):  # fmt: skip
        with pytest.raises(GatewayClientError) as exc:
            steward._send("POST", "/v1/authorizations/by-patient", json={**good, **change})
        assert _problem(exc) == (422, "validation_error")
    with pytest.raises(GatewayClientError) as exc:  # a subject without a key
        steward._send("POST", "/v1/authorizations/by-patient", json=good)
    assert _problem(exc) == (422, "ConsentRegistryInvalidAuthorizationSignature")
    with pytest.raises(GatewayClientError) as exc:
        steward._send("POST", "/v1/authorizations/0x12/revoke-by-patient",
                      json={"deadline": 1, "signature": "0x" + "33" * 65})  # fmt: skip
    assert exc.value.status in (400, 422)
    with pytest.raises(GatewayClientError) as exc:
        steward._send(
            "POST",
            f"/v1/authorizations/0x{'44' * 32}/revoke-by-patient",
            json={"deadline": int(time.time()) + 60, "signature": "0x" + "33" * 65},
        )
    assert _problem(exc) == (404, "ConsentRegistryUnknownAuthorization")
    unknown_subject = "0x" + "22" * 32
    with pytest.raises(GatewayClientError) as exc:  # not a transaction at all
        steward._send(
            "POST", f"/v1/consents/{unknown_subject}/key", json={"signed_transaction": "0x12"}
        )
    assert exc.value.status in (400, 422)
