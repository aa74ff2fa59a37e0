"""Consent-bound access over real HTTP against the real chain: the gateway admits only subjects
whose consent covers the agreement now, records the admitted cohort's tree head on chain and its
leaves beside the decision; withdrawals — mined by anyone just before a request, or relayed by
the gateway with the patient's own signature — are honoured by the next decision; the consent
API refuses bad input with the contract's error code before anything is sent."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from eth_hash.auto import keccak
from sqlalchemy import create_engine, text
from typer.testing import CliRunner, Result

from dul import log as dul_log
from dul.chain.testing import ChainHandle
from dul.cli.steward import app as steward_app
from dul.cohort import CohortTree
from dul.consent_terms import ConsentTerms
from dul.contracts.typed_data import (
    AccessRequest,
    ConsentGrant,
    consent_registry_domain,
    consent_withdrawal_digest,
)
from dul.contracts.world import World, derived_signer
from dul.domain import ConsentStatus, Decision, Operation, Scenario, Tier, slug_id
from dul.keys import KeyStore
from dul.signing import Signer
from dul.subjects import load_subject_key, subject_ref
from ledger_gateway.client import (
    GatewayClientError,
    StewardClient,
    sign_request,
    sign_steward_call,
)
from ledger_gateway.consent_flows import ConsentGrantIn
from ledger_gateway.relay import function
from ledger_gateway.settings import GatewaySettings
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [pytest.mark.integration, pytest.mark.every_node]


AHEAD_S = 3
"""How far the node's clock runs ahead of this machine's in the test that sets it so."""


def refs(n: int) -> list[bytes]:
    return [os.urandom(32) for _ in range(n)]


def request(world: World, agreement: bytes, **overrides: Any) -> AccessRequest:
    values: dict[str, Any] = {
        "request_id": os.urandom(32),
        "agreement_id": agreement,
        "dataset_id": world.dataset,
        "field_mask": 0b0110,
        "tier": Tier.PSEUDONYMIZED,
        "operation": Operation.QUERY,
        "request_hash": keccak(b"SELECT count(*) FROM condition_occurrence"),
        "deadline": int(time.time()) + 600,
    }
    values.update(overrides)
    return AccessRequest(**values)


def stored_cohort(settings: GatewaySettings, access_id: str) -> tuple[bytes, int, bytes] | None:
    """What the audit service reads: `SELECT root, size, leaves FROM cohort_leaves …`."""
    engine = create_engine(settings.effective_database_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT root, size, leaves FROM cohort_leaves WHERE access_id = :id"),
                {"id": bytes.fromhex(access_id[2:])},
            ).first()
    finally:
        engine.dispose()
    return None if row is None else (bytes(row.root), int(row.size), bytes(row.leaves))


def recorded(world: World, access_id: str) -> Any:
    """The AccessRecord of an access, from its AccessRecorded event."""
    event = world.ledger.contract("AccessLog").events.AccessRecorded()
    logs = event.get_logs(from_block=0, argument_filters={"accessId": bytes.fromhex(access_id[2:])})
    assert len(logs) == 1
    return logs[0]["args"]["record"]


def consent_status(world: World, consent_id: bytes) -> ConsentStatus:
    return ConsentStatus(world.ledger.call("ConsentRegistry", "consent", consent_id)[3])


def signed(world: World, signer: Signer, name: str, *args: object, gas: int | None = None) -> bytes:
    data = function("ConsentRegistry", name).encode(*args)
    registry = world.ledger.deployment.address("ConsentRegistry")
    return sign_steward_call(world.ledger.w3, signer, registry, data, gas=gas)


def nonce(world: World, signer: Signer) -> int:
    return world.ledger.w3.eth.get_transaction_count(signer.address, "pending")


def problem(exc: pytest.ExceptionInfo[GatewayClientError]) -> tuple[int, str]:
    return exc.value.status, exc.value.code


@pytest.fixture(scope="module")
def agreement(world: World) -> bytes:
    return world.activate(world.cohort_terms())


@pytest.fixture(scope="module")
def steward_token(gateway: GatewayHandle) -> str:
    return TokenStore(gateway.settings.tokens_path).create(
        f"consent-steward-{os.getpid()}", "hospital-a", TokenRole.STEWARD
    )


@pytest.fixture(scope="module")
def steward(gateway: GatewayHandle, steward_token: str) -> Iterator[StewardClient]:
    with StewardClient(gateway.url, steward_token) as client:
        yield client


def ask(world: World, gateway: GatewayHandle, agreement: bytes, cohort: list[bytes] | None) -> Any:
    body = sign_request(world.requester, request(world, agreement), gateway.domain, cohort=cohort)
    return body, gateway.client.request_access(body)


# --------------------------------------------------------------------------- decisions


def test_only_consented_subjects_are_admitted_and_their_tree_is_recorded(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    consented, teaching, unknown = refs(12), refs(3), refs(5)
    world.record_consents(consented, [Scenario.RESEARCH, Scenario.TEACHING])
    world.record_consents(teaching, [Scenario.TEACHING])
    named = [*unknown, *teaching, *consented, consented[0]]  # a duplicate
    body, answer = ask(world, gateway, agreement, named)
    assert answer.decision == "GRANTED"
    admitted = sorted(consented)
    tree = CohortTree.build(admitted)
    assert answer.cohort is not None
    assert answer.cohort.admitted == ["0x" + r.hex() for r in admitted]
    assert (answer.cohort.root, answer.cohort.size) == ("0x" + tree.root.hex(), 12)
    assert answer.cohort.excluded == 8
    # the same request again: the same answer, cohort included
    again = gateway.client.request_access(body)
    assert again.cohort == answer.cohort
    assert again.access_id == answer.access_id
    confirmed = gateway.client.get_access(answer.access_id, wait=True)
    assert confirmed.status == "confirmed"
    assert confirmed.cohort is not None
    assert confirmed.cohort.admitted == answer.cohort.admitted
    record = recorded(world, answer.access_id)
    assert (bytes(record["cohortRoot"]), record["cohortSize"]) == (tree.root, 12)
    assert stored_cohort(gateway.settings, answer.access_id) == (
        tree.root,
        12,
        b"".join(admitted),
    )


def test_an_empty_admitted_cohort_is_denied_consent_missing_on_chain(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    _, answer = ask(world, gateway, agreement, refs(4))
    assert (answer.decision, answer.reasons) == ("DENIED", ["CONSENT_MISSING"])
    assert answer.cohort is not None
    assert (answer.cohort.root, answer.cohort.size, answer.cohort.excluded) == (None, 0, 4)
    _, missing = ask(world, gateway, agreement, None)  # no cohort at all
    assert (missing.decision, missing.reasons) == ("DENIED", ["CONSENT_MISSING"])
    for access in (answer, missing):
        done = gateway.client.get_access(access.access_id, wait=True)
        assert done.status == "confirmed"
        access_id = bytes.fromhex(access.access_id[2:])
        assert world.ledger.call("AccessLog", "decisionOf", access_id, agreement) == Decision.DENIED
        assert recorded(world, access.access_id)["reason"] == 9  # CONSENT_MISSING
        assert stored_cohort(gateway.settings, access.access_id) is None


def test_a_withdrawal_mined_just_before_a_request_is_honoured_by_it(
    world: World, gateway: GatewayHandle, agreement: bytes
) -> None:
    stays, leaves = refs(1)[0], refs(1)[0]
    [_, withdrawn] = world.record_consents([stays, leaves])
    _, before = ask(world, gateway, agreement, [stays, leaves])
    assert before.cohort is not None
    assert before.cohort.size == 2
    # straight to the chain with the steward's key: the gateway relays nothing here
    world.ledger.transact(world.steward, "ConsentRegistry", "withdrawConsent", withdrawn)
    _, after = ask(world, gateway, agreement, [stays, leaves])
    assert after.decision == "GRANTED"
    assert after.cohort is not None
    assert after.cohort.admitted == ["0x" + stays.hex()]
    assert after.cohort.excluded == 1


def test_a_consent_on_a_node_ahead_of_this_clock_is_in_force_at_once(
    world: World, chain: ChainHandle, gateway: GatewayHandle, agreement: bytes,
    steward: StewardClient,
) -> None:  # fmt: skip
    """A node whose clock runs ahead of this machine's (validators differ by seconds): the
    consent starts at its block's time, ahead of the gateway's clock, and is in force for the
    very next decision and listing all the same (judged no earlier than the chain's head).
    About 3 s: the node's clock is set back once this machine's has caught up."""
    chain.node_rpc("evm_setNextBlockTimestamp", hex(int(time.time()) + AHEAD_S))
    try:
        subject = refs(1)[0]
        world.record_consents([subject])
        [shown] = steward.consents(subject).consents
        _, answer = ask(world, gateway, agreement, [subject])
        assert time.time() < shown.valid_from  # all of it before this clock reached the start
        assert shown.in_force
        assert answer.decision == "GRANTED"
        assert answer.cohort is not None
        assert answer.cohort.admitted == ["0x" + subject.hex()]
    finally:
        chain.set_clock_to_wall()


def test_a_named_cohort_under_a_no_consent_agreement_is_recorded_whole(
    world: World, gateway: GatewayHandle
) -> None:
    plain = world.activate(world.research_terms())
    named = refs(3)
    body = sign_request(
        world.requester,
        request(world, plain, tier=Tier.DEIDENTIFIED),
        gateway.domain,
        cohort=named,
    )
    answer = gateway.client.request_access(body, wait=True)
    assert answer.decision == "GRANTED"
    assert answer.cohort is not None
    assert (answer.cohort.size, answer.cohort.excluded) == (3, 0)
    tree = CohortTree.build(named)
    assert bytes(recorded(world, answer.access_id)["cohortRoot"]) == tree.root
    assert stored_cohort(gateway.settings, answer.access_id) == (
        tree.root,
        3,
        b"".join(tree.subjects),
    )


def test_cohort_input_is_validated(world: World, gateway: GatewayHandle, agreement: bytes) -> None:
    body = sign_request(world.requester, request(world, agreement), gateway.domain)
    for bad in (["0x1234"], ["nothex" * 11], [5]):
        with pytest.raises(GatewayClientError) as exc:
            gateway.client._send(
                "POST", "/v1/access-requests", json={**body.model_dump(), "cohort": bad}
            )
        assert problem(exc) == (422, "validation_error")
    too_many = {**body.model_dump(), "cohort": ["0x" + "11" * 32] * 100_001}
    with pytest.raises(GatewayClientError) as exc:
        gateway.client._send("POST", "/v1/access-requests", json=too_many)
    assert problem(exc) == (422, "validation_error")
    old = {**body.model_dump(), "cohort_root": "0x" + "11" * 32, "cohort_size": 3}
    with pytest.raises(GatewayClientError) as exc:  # the access service may not pick the root
        gateway.client._send("POST", "/v1/access-requests", json=old)
    assert problem(exc) == (422, "validation_error")
    with pytest.raises(GatewayClientError) as exc:
        gateway.client.get_access(body.request_id)
    assert exc.value.status == 404  # nothing was recorded


# --------------------------------------------------------------------------- withdrawals


def test_a_patient_withdraws_with_their_own_signature_through_the_gateway(
    world: World, gateway: GatewayHandle, agreement: bytes, steward: StewardClient
) -> None:
    patient = derived_signer(f"patient {os.getpid()} {time.time_ns()}")
    subject = refs(1)[0]
    [consent] = world.record_consents([subject], subject_key=patient.address)
    registry = world.ledger.deployment.address("ConsentRegistry")
    domain = consent_registry_domain(world.ledger.chain_id, registry)
    deadline = int(time.time()) + 600
    digest = consent_withdrawal_digest(domain, consent, deadline)
    assert digest == world.ledger.call("ConsentRegistry", "withdrawalDigest", consent, deadline)

    # forged (another key), expired, or for another subject: refused, nothing changes
    forged = derived_signer("not the patient").sign_digest(digest)
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_withdrawal(subject, consent, deadline, forged)
    assert problem(exc) == (422, "ConsentRegistryInvalidSubjectSignature")
    stale = int(time.time()) - 10
    expired = patient.sign_digest(consent_withdrawal_digest(domain, consent, stale))
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_withdrawal(subject, consent, stale, expired)
    assert problem(exc) == (422, "ConsentRegistrySignatureExpired")
    good = patient.sign_digest(digest)
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_withdrawal(refs(1)[0], consent, deadline, good)
    assert problem(exc) == (422, "wrong_transaction")
    assert consent_status(world, consent) == ConsentStatus.GRANTED
    _, still = ask(world, gateway, agreement, [subject])
    assert still.decision == "GRANTED"

    answer = steward.relay_patient_withdrawal(subject, consent, deadline, good)
    assert (answer.by, answer.consent_id) == ("subject", "0x" + consent.hex())
    # in force before it is mined: the very next decision leaves the patient out
    _, after = ask(world, gateway, agreement, [subject])
    assert (after.decision, after.reasons) == ("DENIED", ["CONSENT_MISSING"])
    listed = steward.consents(subject).consents
    assert [c.status for c in listed] == ["WITHDRAWN"]  # pending or mined by now
    done = steward.relay_patient_withdrawal(subject, consent, deadline, good, wait=True)
    assert done.status == "confirmed"
    assert done.operation_id == answer.operation_id  # one operation, sent once
    assert consent_status(world, consent) == ConsentStatus.WITHDRAWN


def _grant_body(grant: ConsentGrant, signature: bytes) -> ConsentGrantIn:
    t = grant.terms
    return ConsentGrantIn(
        consent_id="0x" + grant.consent_id.hex(),
        subject="0x" + t.subject.hex(),
        scenarios=[s.name for s in Scenario if t.scenarios >> s & 1],
        valid_until=t.valid_until,
        subject_key=t.subject_key,
        deadline=grant.deadline,
        signature="0x" + signature.hex(),
    )


def test_a_patient_grants_with_their_own_signature_through_the_gateway(
    world: World, gateway: GatewayHandle, agreement: bytes, steward: StewardClient
) -> None:
    patient = derived_signer(f"granting patient {os.getpid()} {time.time_ns()}")
    subject = refs(1)[0]
    registry = world.ledger.deployment.address("ConsentRegistry")
    domain = consent_registry_domain(world.ledger.chain_id, registry)
    register = signed(world, world.steward, "registerSubjectKey", world.hospital, subject,
                      patient.address)  # fmt: skip
    assert steward.register_subject_key(subject, register, wait=True).status == "confirmed"
    first = world.ledger.call("ConsentRegistry", "nextConsentId", world.hospital, subject)
    terms = ConsentTerms(world.hospital, subject, 1 << Scenario.RESEARCH,
                         int(time.time()) + 86_400 * 365, subject_key=patient.address)  # fmt: skip
    grant = ConsentGrant(first, terms, int(time.time()) + 600)
    assert grant.digest(domain) == world.ledger.call(
        "ConsentRegistry", "consentGrantDigest", first, terms.as_abi(), grant.deadline
    )
    _, before = ask(world, gateway, agreement, [subject])
    assert (before.decision, before.reasons) == ("DENIED", ["CONSENT_MISSING"])

    # forged, expired: refused with the contract's errors, nothing sent
    forged = grant.sign(derived_signer("not the patient"), domain)
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_consent(_grant_body(grant, forged))
    assert problem(exc) == (422, "ConsentRegistryInvalidSubjectSignature")
    expired = ConsentGrant(first, terms, int(time.time()) - 10)
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_consent(_grant_body(expired, expired.sign(patient, domain)))
    assert problem(exc) == (422, "ConsentRegistrySignatureExpired")
    assert world.ledger.call("ConsentRegistry", "consentIds", world.hospital, subject) == []

    body = _grant_body(grant, grant.sign(patient, domain))
    answer = steward.relay_patient_consent(body, wait=True)
    assert (answer.status, answer.by, answer.consent_id) == (
        "confirmed",
        "subject",
        "0x" + first.hex(),
    )
    again = steward.relay_patient_consent(body, wait=True)  # the same signature: one operation
    assert again.operation_id == answer.operation_id
    [event] = (
        world.ledger.contract("ConsentRegistry").events.ConsentRecorded()
        .get_logs(from_block=answer.block_number, argument_filters={"consentId": first})
    )  # fmt: skip
    assert (event["args"]["recorder"], event["args"]["bySubject"]) == (patient.address, True)
    # the next decision admits the patient, and the gateway lists the consent as theirs
    _, after = ask(world, gateway, agreement, [subject])
    assert after.decision == "GRANTED"
    [listed] = steward.consents(subject).consents
    assert (listed.granted_by, listed.status, listed.subject_key) == (
        "subject",
        "GRANTED",
        patient.address,
    )

    # a signature for the id now taken (a replay with other terms) is stale
    replay = ConsentGrant(first, replace(terms, scenarios=1 << Scenario.TEACHING),
                          int(time.time()) + 600)  # fmt: skip
    with pytest.raises(GatewayClientError) as exc:
        steward.relay_patient_consent(_grant_body(replay, replay.sign(patient, domain)))
    assert problem(exc) == (422, "ConsentRegistryStaleConsentGrant")

    # bad input: a clear 422 before anything is signed or sent
    good = body.model_dump()
    changes: tuple[dict[str, Any], ...] = (
        {"scenarios": []}, {"scenarios": ["SECRET"]}, {"valid_until": 2**64},
        {"signature": "0x12"}, {"extra": 1}, {"studies": ["0x" + "11" * 32] * 17},
        {"disease": "MONDO:0007254"},
    )  # fmt: skip
    for change in changes:
        with pytest.raises(GatewayClientError) as exc:
            steward._send("POST", "/v1/consents/by-patient", json={**good, **change})
        assert problem(exc) == (422, "validation_error"), change


def test_a_steward_withdraws_through_the_gateway(
    world: World, gateway: GatewayHandle, agreement: bytes, steward: StewardClient
) -> None:
    subject, other = refs(2)
    [consent, others] = world.record_consents([subject, other])
    wrong = signed(world, world.steward, "withdrawConsent", others)
    before = nonce(world, world.steward)
    with pytest.raises(GatewayClientError) as exc:  # another subject's consent on this path
        steward.withdraw_consent(subject, wrong)
    assert problem(exc) == (422, "wrong_transaction")
    assert nonce(world, world.steward) == before
    raw = signed(world, world.steward, "withdrawConsent", consent)
    answer = steward.withdraw_consent(subject, raw)
    assert answer.consent_id == "0x" + consent.hex()
    _, after = ask(world, gateway, agreement, [subject, other])
    assert after.cohort is not None
    assert after.cohort.admitted == ["0x" + other.hex()]
    assert steward.withdraw_consent(subject, raw, wait=True).status == "confirmed"
    assert consent_status(world, consent) == ConsentStatus.WITHDRAWN
    assert consent_status(world, others) == ConsentStatus.GRANTED


# --------------------------------------------------------------------------- the consent API


def terms(world: World, subject: bytes, **changes: Any) -> tuple[Any, ...]:
    values: dict[str, Any] = {
        "holder": world.hospital,
        "subject": subject,
        "scenarios": 1 << Scenario.RESEARCH,
        "duo": [42],
        "valid_from": 0,
        "valid_until": int(time.time()) + 86_400,
        "key": "0x" + "00" * 20,
        "disease": bytes(32),
        "studies": [],
        "requesters": [],
    }
    values.update(changes)
    return tuple(values.values())


def test_consents_are_recorded_and_listed_through_the_gateway(
    world: World, steward: StewardClient
) -> None:
    subjects = refs(3)
    batch = [terms(world, s) for s in subjects]
    answer = steward.record_consents(
        signed(world, world.steward, "recordConsents", batch), wait=True
    )
    assert answer.status == "confirmed"
    assert answer.function == "recordConsents"
    assert answer.consent_ids is not None
    assert len(answer.consent_ids) == 3
    listed = steward.consents(subjects[1])
    assert [c.consent_id for c in listed.consents] == [answer.consent_ids[1]]
    shown = listed.consents[0]
    assert (shown.status, shown.in_force, shown.scenarios) == ("GRANTED", True, ["RESEARCH"])
    assert shown.duo_codes == ["DUO:0000042"]
    one = steward.record_consents(
        signed(world, world.steward, "recordConsent", terms(world, refs(1)[0])), wait=True
    )
    assert one.consent_ids is not None
    assert len(one.consent_ids) == 1
    assert steward.consents(refs(1)[0]).consents == []


def test_consents_the_chain_refuses_are_answered_with_its_error_and_not_sent(
    world: World, steward: StewardClient
) -> None:
    subject = refs(1)[0]
    world.record_consents([subject])
    cases: list[tuple[Signer, tuple[Any, ...], tuple[int, str]]] = [
        (
            world.steward,
            terms(world, refs(1)[0], holder=slug_id("nowhere")),
            (403, "wrong_organization"),  # not the token's organization: refused before the chain
        ),
        (
            world.requester,  # no steward of the hospital
            terms(world, refs(1)[0]),
            (403, "ConsentRegistryUnauthorizedSteward"),
        ),
        (world.steward, terms(world, subject), (409, "ConsentRegistryOverlappingConsent")),
        (
            world.steward,
            terms(world, refs(1)[0], valid_from=int(time.time()) - 3_600),
            (422, "ConsentRegistryBackdated"),
        ),
    ]
    for signer, consent_terms, expected in cases:
        raw = signed(world, signer, "recordConsent", consent_terms, gas=500_000)
        before = nonce(world, signer)
        with pytest.raises(GatewayClientError) as exc:
            steward.record_consents(raw)
        assert problem(exc) == expected
        assert nonce(world, signer) == before  # nothing was sent
    assert len(steward.consents(subject).consents) == 1
    other_call = signed(world, world.steward, "withdrawConsent", bytes(32), gas=500_000)
    with pytest.raises(GatewayClientError) as exc:
        steward.record_consents(other_call)  # not the function this path relays
    assert problem(exc) == (422, "wrong_transaction")


def test_consent_endpoints_need_a_steward_token(
    world: World, gateway: GatewayHandle, steward: StewardClient
) -> None:
    with StewardClient(gateway.url, gateway.token) as service:  # an access-service token
        with pytest.raises(GatewayClientError) as exc:
            service.consents(refs(1)[0])
        assert problem(exc) == (403, "forbidden")
        with pytest.raises(GatewayClientError) as exc:
            service.relay_patient_withdrawal(refs(1)[0], refs(1)[0], 0, bytes(65))
        assert problem(exc) == (403, "forbidden")
    with pytest.raises(GatewayClientError) as exc:
        steward._send("GET", "/v1/consents/0x1234")
    assert problem(exc) == (422, "validation_error")
    with pytest.raises(GatewayClientError) as exc:
        steward._send(
            "POST", f"/v1/consents/0x{'11' * 32}/withdraw", json={"consent_id": "0x" + "22" * 32}
        )
    assert problem(exc) == (422, "validation_error")


# --------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def cli_env(
    chain: ChainHandle, gateway: GatewayHandle, steward_token: str, tmp_path_factory: Any
) -> dict[str, str]:
    keys = KeyStore(chain.home, passphrase="gateway-tests", scrypt_n=2**14)
    if "hospital-a.steward" not in {name for name, _ in keys.list()}:
        keys.import_key("hospital-a.steward", keccak(b"dul world steward"))
    return {
        "DUL_HOME": str(chain.home.root),
        "DUL_RPC_URL": chain.rpc_url,
        "DUL_KEY_PASSPHRASE": "gateway-tests",
        "DUL_GATEWAY_URL": gateway.url,
        "DUL_GATEWAY_TOKEN": steward_token,
        "DUL_SUBJECT_KEY": str(tmp_path_factory.mktemp("subject-key") / "hospital-a.subject-key"),
    }


def cli(env: dict[str, str], *args: str) -> Result:
    saved = structlog.get_config()
    dul_log.configure("WARNING")
    try:
        return CliRunner().invoke(steward_app, list(args), env=env)
    finally:
        structlog.configure(**saved)


def test_cli_grant_list_withdraw_with_pseudonyms_that_stay_local(
    world: World, gateway: GatewayHandle, agreement: bytes, cli_env: dict[str, str]
) -> None:
    names = [f"PSN-{os.getpid()}-{i}" for i in range(3)]
    granted = cli(cli_env, "consent", "grant", *names, "--scenario", "RESEARCH",
                  "--duo", "DUO:0000042", "--key", "hospital-a.steward", "--json")  # fmt: skip
    assert granted.exit_code == 0, granted.output
    out = json.loads(granted.stdout)
    key = load_subject_key(Path(cli_env["DUL_SUBJECT_KEY"]))  # created on first use
    refs_ = [subject_ref(key, n) for n in names]
    assert out["subjects"] == ["0x" + r.hex() for r in refs_]
    assert len(out["consent_ids"]) == 3
    listed = cli(cli_env, "consent", "list", names[0], "--json")
    assert listed.exit_code == 0, listed.output
    assert [c["status"] for c in json.loads(listed.stdout)["consents"]] == ["GRANTED"]
    withdrawn = cli(cli_env, "consent", "withdraw", names[0], "--key", "hospital-a.steward",
                    "--json")  # fmt: skip
    assert withdrawn.exit_code == 0, withdrawn.output
    assert json.loads(withdrawn.stdout)["withdrawn"] == [out["consent_ids"][0]]
    _, answer = ask(world, gateway, agreement, refs_)
    assert answer.cohort is not None
    assert answer.cohort.admitted == sorted("0x" + r.hex() for r in refs_[1:])
    again = cli(cli_env, "consent", "withdraw", names[0], "--key", "hospital-a.steward")
    assert again.exit_code == 1
    assert "nothing_to_withdraw" in again.output
    unknown_key = {**cli_env, "DUL_SUBJECT_KEY": cli_env["DUL_SUBJECT_KEY"] + ".missing"}
    missing = cli(unknown_key, "consent", "list", names[0])
    assert missing.exit_code == 1
    assert "subject_key" in missing.output
    assert "Traceback" not in missing.output
