"""Every typed-data document the product serves or asks someone to sign, signed by the two
wallet libraries people use — MetaMask's `@metamask/eth-sig-util` (`signTypedData` V4: the
`eth_signTypedData_v4` JSON exactly as served) and ethers v6 (`Wallet.signTypedData` once
`EIP712Domain` is dropped from `types`) — in a real `node` subprocess, submitted through the
product's own route over real HTTP and accepted on the chain; and the same library's signature
over a tampered document refused with its error code:

- the gateway's `GET /v1/agreements/{id}/typed-data` (both parties sign: the agreement is ACTIVE
  on chain) and `POST /v1/access-requests/typed-data` (GRANTED and confirmed);
- the patient page's `POST /api/consents/typed-data` (`ConsentGrant`, relayed and recorded), and
  the documents the page's browser code signs in the registry's domain from `GET /api/session`:
  `Authorization` (a code), `ConsentWithdrawal`, `AuthorizationRevocation` — built here by
  `dul.contracts.typed_data`, whose types the page's own constants must equal (checked);
- a patient token (`PatientToken`, `dul.patient_tokens`), which the audit service accepts;
- an audit checkpoint file (`AuditCheckpoint`), which eth-sig-util's `recoverTypedSignature`
  checks as any EIP-712 tool would.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_hash.auto import keccak

from audit.checkpoints import Checkpoint, sign_checkpoint
from audit.testing import index_into
from dul.chain.testing import ChainHandle
from dul.contracts.typed_data import (
    AUTHORIZATION_REVOCATION_TYPES,
    AUTHORIZATION_TYPES,
    CONSENT_WITHDRAWAL_TYPES,
    AgreementTerms,
    AuthorizationRevocation,
    ConsentWithdrawal,
    PatientAuthorization,
    agreement_domain,
    consent_domain,
)
from dul.contracts.world import World, derived_signer
from dul.domain import (
    ConsentPolicy,
    Operation,
    OrgKind,
    OrgStatus,
    Role,
    Scenario,
    Tier,
    operations_mask,
    slug_id,
)
from dul.patient_tokens import PREFIX, PatientToken, patient_token_domain
from dul.signing import LocalSigner
from ledger_gateway.patient_page.testing import serve_audit_and_page
from ledger_gateway.testing import GatewayHandle
from ledger_gateway.tokens import TokenRole, TokenStore

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("node") is None
        or not (
            Path(__file__).resolve().parents[2] / "node_modules/@metamask/eth-sig-util"
        ).is_dir()
        or not (Path(__file__).resolve().parents[2] / "node_modules/ethers").is_dir(),
        reason="node, @metamask/eth-sig-util or ethers is not installed (npm ci)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
PATIENT_JS = ROOT / "ledger_gateway/patient_page/static/patient.js"
INSURER = slug_id("insurer")

#: Signs stdin's typed data with each library; prints {metamask, ethers, recovered} or the errors.
WALLETS = r"""
const { signTypedData, recoverTypedSignature, SignTypedDataVersion } =
  require("@metamask/eth-sig-util");
const { Wallet } = require("ethers");
const typed = JSON.parse(require("fs").readFileSync(0, "utf8"));
const key = process.argv[1];
const out = {};
try {
  out.metamask = signTypedData({ privateKey: Buffer.from(key.slice(2), "hex"), data: typed,
                                 version: SignTypedDataVersion.V4 });
  out.recovered = recoverTypedSignature({ data: typed, signature: out.metamask,
                                          version: SignTypedDataVersion.V4 });
} catch (error) { out.metamask_error = String(error && error.message || error); }
const types = { ...typed.types };
delete types.EIP712Domain;  // ethers v6 derives the domain type from the domain itself
new Wallet(key).signTypedData(typed.domain, types, typed.message)
  .then((s) => { out.ethers = s; }, (e) => { out.ethers_error = String(e && e.message || e); })
  .then(() => console.log(JSON.stringify(out)));
"""

#: Recovers the signer of a checkpoint file's typed data with eth-sig-util.
RECOVER = r"""
const { recoverTypedSignature, SignTypedDataVersion } = require("@metamask/eth-sig-util");
const file = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(recoverTypedSignature({ data: file.typed_data, signature: file.signature,
                                    version: SignTypedDataVersion.V4 }));
"""


def node(script: str, stdin: str, *args: str) -> str:
    done = subprocess.run(
        [str(shutil.which("node")), "-e", script, *args],
        input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def wallet_sign(typed: dict[str, Any], key: bytes) -> str:
    """The document's signature by MetaMask's and by ethers' code: both must sign it as served
    (no error), agree with each other, and recover to the key's address."""
    out = json.loads(node(WALLETS, json.dumps(typed), "0x" + key.hex()))
    assert "metamask_error" not in out, f"eth-sig-util cannot sign it: {out['metamask_error']}"
    assert "ethers_error" not in out, f"ethers v6 cannot sign it: {out['ethers_error']}"
    assert out["metamask"] == out["ethers"], out
    assert out["recovered"].lower() == Account.from_key(key).address.lower()
    signature: str = out["metamask"]
    return signature


def tampered(typed: dict[str, Any], **message: Any) -> dict[str, Any]:
    """The same document with some message values changed (what a wallet would be tricked into
    signing instead)."""
    return {**typed, "message": {**typed["message"], **message}}


def problem(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    code: str = answer.json()["code"]
    return code


def until(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def secret_of(seed: str) -> bytes:
    """The private key of `derived_signer(seed)` (a test key, derived the same way)."""
    key = keccak(f"dul world {seed}".encode())
    assert LocalSigner(key).address == derived_signer(seed).address
    return key


def hexed(value: bytes) -> str:
    return "0x" + value.hex()


# --------------------------------------------------------------------------- the gateway


def gateway_call(
    gateway: GatewayHandle, method: str, path: str, token: str, body: Any = None, **params: str
) -> httpx.Response:
    return httpx.request(method, gateway.url + path, json=body, params=params, timeout=60,
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip


@pytest.fixture(scope="module")
def steward_tokens(gateway: GatewayHandle) -> dict[str, str]:
    store = TokenStore(gateway.settings.tokens_path)
    return {
        org: store.create(f"wallets-{org}-{os.getpid()}", org, TokenRole.STEWARD)
        for org in ("hospital-a", "institute")
    }


def test_agreement_typed_data_signed_by_both_wallets_activates_the_agreement(
    gateway: GatewayHandle, world: World, steward_tokens: dict[str, str]
) -> None:
    terms: AgreementTerms = world.research_terms(nonce=2**200 + time.time_ns())  # > 2^53
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    agreement = hexed(terms.agreement_id)
    path = f"/v1/agreements/{agreement}/typed-data"
    typed = gateway_call(gateway, "GET", path, steward_tokens["hospital-a"]).json()
    assert typed["primaryType"] == "Agreement"
    assert isinstance(typed["domain"]["chainId"], int)
    assert typed["message"]["nonce"] == str(terms.nonce)  # exact, not a float

    # a signature over other terms (a higher quota) is refused before anything is sent
    forged = wallet_sign(tampered(typed, quota=str(terms.quota + 1)), secret_of("steward"))
    refused = gateway_call(gateway, "POST", f"/v1/agreements/{agreement}/signatures",
                           steward_tokens["hospital-a"],
                           {"signer": world.steward.address, "signature": forged})  # fmt: skip
    assert problem(refused, 422) == "bad_signature"

    for org, seed, signer in (("hospital-a", "steward", world.steward),
                              ("institute", "partner-steward", world.partner_steward)):  # fmt: skip
        served = gateway_call(gateway, "GET", path, steward_tokens[org]).json()
        assert served == typed  # each party is shown the same document
        body = {"signer": signer.address, "signature": wallet_sign(served, secret_of(seed))}
        added = gateway_call(gateway, "POST", f"/v1/agreements/{agreement}/signatures",
                             steward_tokens[org], body, wait="confirmed")  # fmt: skip
        assert added.status_code in (200, 201, 202), added.text
        assert added.json()["status"] == "confirmed", added.text
    assert world.ledger.call("AgreementRegistry", "status", terms.agreement_id) == 2  # ACTIVE
    assert set(world.ledger.call("AgreementRegistry", "signers", terms.agreement_id)) == {
        world.steward.address,
        world.partner_steward.address,
    }
    shown = gateway_call(gateway, "GET", f"/v1/agreements/{agreement}", steward_tokens["institute"])
    assert shown.json()["status"] == "ACTIVE", shown.text


def access_body(typed: dict[str, Any], requester: str, signature: str) -> dict[str, Any]:
    m = typed["message"]
    return {
        "request_id": m["requestId"], "agreement_id": m["agreementId"],
        "dataset_id": m["datasetId"], "field_mask": int(m["fieldMask"]),
        "tier": ("AGGREGATE", "MODEL_PARAMETERS", "DEIDENTIFIED")[int(m["tier"])],
        "operation": ("QUERY", "TRAIN", "EXPORT_RESULT")[int(m["operation"])],
        "request_hash": m["requestHash"], "authorization_ref": m["authorizationRef"],
        "deadline": int(m["deadline"]), "requester": requester, "signature": signature,
    }  # fmt: skip


def test_access_request_typed_data_signed_by_both_wallets_is_granted_on_chain(
    gateway: GatewayHandle, world: World
) -> None:
    agreement = hexed(world.activate(world.research_terms()))
    draft = {"agreement_id": agreement, "dataset_id": hexed(world.dataset),
             "fields": ["person.year_of_birth"], "tier": "DEIDENTIFIED", "operation": "QUERY",
             "request_hash": hexed(keccak(b"SELECT 1"))}  # fmt: skip
    served = gateway_call(gateway, "POST", "/v1/access-requests/typed-data", gateway.token, draft)
    assert served.status_code == 200, served.text
    typed = served.json()
    key = secret_of("requester")

    # signed over a wider field mask, posted with the served one: refused, nothing recorded
    forged = wallet_sign(tampered(typed, fieldMask=str(int(typed["message"]["fieldMask"]) | 1)),
                         key)  # fmt: skip
    refused = gateway_call(gateway, "POST", "/v1/access-requests", gateway.token,
                           access_body(typed, world.requester.address, forged))  # fmt: skip
    assert problem(refused, 422) == "bad_signature"

    body = access_body(typed, world.requester.address, wallet_sign(typed, key))
    answer = gateway_call(gateway, "POST", "/v1/access-requests", gateway.token, body,
                          wait="confirmed")  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["decision"] == "GRANTED"
    assert answer.json()["status"] == "confirmed"
    recorded = world.ledger.call(
        "AccessLog", "decisionOf", bytes.fromhex(body["request_id"][2:]),
        bytes.fromhex(body["agreement_id"][2:]),
    )  # fmt: skip
    assert recorded, "the chain holds no decision for the request"


# --------------------------------------------------------------------------- the patient page


@dataclass
class Patient:
    page: str
    audit: str
    token: str
    subject: bytes
    key: bytes
    claims: bytes

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.request(method, self.page + path, json=body, timeout=60, headers=headers)


def _claims_agreement(world: World) -> bytes:
    """An INSURANCE_CLAIM agreement with an insurer, opened only by the patient's codes."""
    insurer = derived_signer("insurer requester")
    if world.ledger.call("Membership", "organization", INSURER)[1] == OrgStatus.NONE:
        tx = world.ledger.transact
        tx(world.operator, "Membership", "registerOrganization", INSURER, OrgKind.INSURER, "Ins")
        tx(world.operator, "Membership", "grantMemberRole", INSURER, insurer.address,
           Role.REQUESTER)  # fmt: skip
    now = int(time.time())
    terms = AgreementTerms(
        holder=world.hospital, requester=INSURER, datasets=(world.dataset,),
        field_masks=(0b1111,), scenario=Scenario.INSURANCE_CLAIM, max_tier=Tier.PSEUDONYMIZED,
        operations=operations_mask(Operation.QUERY), valid_from=now - 60,
        valid_until=now + 86_400, quota=100, consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        terms_hash=keccak(b"claims, wallets"), nonce=time.time_ns(), deadline=now + 3_600,
    )  # fmt: skip
    world.ledger.transact(world.steward, "AgreementRegistry", "propose", terms.as_abi())
    digest = terms.digest(
        agreement_domain(
            world.ledger.chain_id, world.ledger.deployment.address("AgreementRegistry")
        )
    )
    for signer in (world.steward, insurer):
        world.ledger.transact(signer, "AgreementRegistry", "sign", terms.agreement_id,
                              signer.address, signer.sign_digest(digest))  # fmt: skip
    return terms.agreement_id


@pytest.fixture(scope="module")
def patient(
    world: World, chain: ChainHandle, gateway: GatewayHandle,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Patient]:  # fmt: skip
    """A patient whose key is on record at hospital A (named by a steward's consent), a claims
    agreement offered for codes, the audit service and the patient page served."""
    subject, key = os.urandom(32), os.urandom(32)
    world.record_consents([subject], [Scenario.TEACHING], subject_key=LocalSigner(key).address)
    claims = _claims_agreement(world)
    root = tmp_path_factory.mktemp("wallets")
    store = f"sqlite:///{root / 'audit.db'}"
    index_into(world.ledger.deployment, chain.rpc_url, store).dispose()
    with serve_audit_and_page(world, chain, gateway, store, subject, [claims]) as served:
        yield Patient(served.url, served.audit_url, served.token, subject, key, claims)


def registry_domain(patient: Patient) -> tuple[Any, dict[str, Any]]:
    session = patient.call("GET", "/api/session")
    assert session.status_code == 200, session.text
    data = session.json()
    return consent_domain(data["chain_id"], data["consent_registry"]), data


def test_the_page_signs_with_the_types_the_ledger_defines() -> None:
    """The page builds three documents itself (domain from /api/session): its type constants
    must be the ones `dul.contracts.typed_data` serves and the contract hashes."""
    script = PATIENT_JS.read_text()
    for constant, types in (("WITHDRAWAL_TYPES", CONSENT_WITHDRAWAL_TYPES),
                            ("REVOCATION_TYPES", AUTHORIZATION_REVOCATION_TYPES),
                            ("AUTHORIZATION_TYPES", AUTHORIZATION_TYPES)):  # fmt: skip
        found = re.search(rf"const {constant} = (\{{.*?\}});\n", script, re.DOTALL)
        assert found, f"{constant} is not in the page"
        as_json = node(f"console.log(JSON.stringify({found.group(1)}))", "")
        assert json.loads(as_json) == types, constant
    assert 'const DOMAIN_NAME = "DataUseLedger.ConsentRegistry";' in script


def test_consent_grant_served_by_the_page_signed_by_both_wallets_is_recorded(
    patient: Patient, world: World
) -> None:
    served = patient.call("POST", "/api/consents/typed-data", {"scenarios": ["RESEARCH"],
                                                               "years": 1})  # fmt: skip
    assert served.status_code == 200, served.text
    typed = served.json()
    assert typed["types"]["EIP712Domain"]  # served as MetaMask signs it
    m = typed["message"]
    grant = {"consent_id": m["consentId"], "scenarios": ["RESEARCH"],
             "valid_until": int(m["validUntil"]), "subject_key": m["subjectKey"],
             "deadline": int(m["deadline"])}  # fmt: skip

    # signed for more scenarios than are posted: the chain's own refusal, nothing sent
    forged = wallet_sign(tampered(typed, scenarios=str(int(m["scenarios"]) | 0b100)), patient.key)
    refused = patient.call("POST", "/api/consents", {**grant, "signature": forged})
    assert problem(refused, 422) == "ConsentRegistryInvalidSubjectSignature"

    answer = patient.call("POST", "/api/consents", {**grant, "signature":
                                                    wallet_sign(typed, patient.key)})  # fmt: skip
    assert answer.status_code in (200, 201, 202), answer.text
    consent_id = bytes.fromhex(m["consentId"][2:])
    recorded = until(lambda: world.ledger.call("ConsentRegistry", "consent", consent_id)[3] == 1,
                     "the consent on chain")  # fmt: skip
    assert recorded
    onchain = world.ledger.call("ConsentRegistry", "consent", consent_id)
    assert onchain[1] == patient.subject
    assert onchain[2] == 1 << Scenario.RESEARCH
    assert onchain[6] == LocalSigner(patient.key).address


def test_withdrawal_signed_by_both_wallets_withdraws_on_chain(
    patient: Patient, world: World
) -> None:
    (consent_id,) = world.record_consents([patient.subject], [Scenario.AI_TRAINING],
                                          subject_key=LocalSigner(patient.key).address)  # fmt: skip
    domain, _ = registry_domain(patient)
    deadline = int(time.time()) + 600
    typed = ConsentWithdrawal(consent_id, deadline).typed_data(domain)
    path = f"/api/consents/{hexed(consent_id)}/withdraw"

    forged = wallet_sign(tampered(typed, deadline=str(deadline + 1)), patient.key)
    refused = patient.call("POST", path, {"deadline": deadline, "signature": forged})
    assert problem(refused, 422) == "ConsentRegistryInvalidSubjectSignature"
    assert world.ledger.call("ConsentRegistry", "consent", consent_id)[3] == 1  # still GRANTED

    answer = patient.call(
        "POST", path, {"deadline": deadline, "signature": wallet_sign(typed, patient.key)}
    )
    assert answer.status_code in (200, 201, 202), answer.text
    until(lambda: world.ledger.call("ConsentRegistry", "consent", consent_id)[3] == 2,
          "the withdrawal on chain")  # fmt: skip


def test_code_and_its_cancellation_signed_by_both_wallets_are_recorded(
    patient: Patient, world: World
) -> None:
    domain, session = registry_domain(patient)
    (offer,) = [o for o in session["offers"] if o["agreement_id"] == hexed(patient.claims)]
    code_hash = keccak(os.urandom(16))
    expires_at = int(time.time()) + 86_400
    authorization = PatientAuthorization(
        code_hash=code_hash, holder=world.hospital, subject=patient.subject,
        grantee=bytes.fromhex(offer["grantee_id"][2:]),
        dataset=bytes.fromhex(offer["dataset_id"][2:]), field_mask=int(offer["field_mask"]),
        tier=Tier(offer["tier_value"]), scenario=Scenario(offer["scenario_value"]),
        expires_at=expires_at, multi_use=False,
    )  # fmt: skip
    typed = authorization.typed_data(domain)
    body = {"agreement_id": offer["agreement_id"], "dataset_id": offer["dataset_id"],
            "code_hash": hexed(code_hash), "expires_at": expires_at,
            "multi_use": False}  # fmt: skip

    forged = wallet_sign(tampered(typed, multiUse=True), patient.key)
    refused = patient.call("POST", "/api/codes", {**body, "signature": forged})
    assert problem(refused, 422) == "ConsentRegistryInvalidAuthorizationSignature"

    answer = patient.call("POST", "/api/codes", {**body, "signature":
                                                 wallet_sign(typed, patient.key)})  # fmt: skip
    assert answer.status_code in (200, 201, 202), answer.text
    until(lambda: world.ledger.call("ConsentRegistry", "authorization", code_hash)[7] == 1,
          "the code ISSUED on chain")  # fmt: skip

    deadline = int(time.time()) + 600
    revocation = AuthorizationRevocation(code_hash, deadline).typed_data(domain)
    path = f"/api/codes/{hexed(code_hash)}/revoke"
    forged = wallet_sign(tampered(revocation, deadline=str(deadline - 1)), patient.key)
    refused = patient.call("POST", path, {"deadline": deadline, "signature": forged})
    assert problem(refused, 422) == "ConsentRegistryInvalidAuthorizationSignature"
    answer = patient.call(
        "POST", path, {"deadline": deadline, "signature": wallet_sign(revocation, patient.key)}
    )
    assert answer.status_code in (200, 201, 202), answer.text
    until(lambda: world.ledger.call("ConsentRegistry", "authorization", code_hash)[7] == 3,
          "the code REVOKED on chain")  # fmt: skip


# --------------------------------------------------------------------------- patient tokens


def token_from(unsigned: PatientToken, signature: str) -> str:
    raw = (unsigned.subject + unsigned.holder + unsigned.issued_at.to_bytes(8, "big")
           + unsigned.expires_at.to_bytes(8, "big") + bytes.fromhex(signature[2:]))  # fmt: skip
    return PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_patient_token_signed_by_both_wallets_opens_the_report(
    patient: Patient, world: World
) -> None:
    membership = world.ledger.deployment.address("Membership")
    domain = patient_token_domain(world.ledger.chain_id, membership)
    now = int(time.time())
    unsigned = PatientToken(patient.subject, world.hospital, now, now + 600)
    typed = unsigned.typed_data(domain)
    report = f"{patient.audit}/v1/subjects/{hexed(patient.subject)}/accesses"

    signature = wallet_sign(typed, secret_of("steward"))
    token = token_from(unsigned, signature)
    assert token == unsigned.signed(world.steward, domain).encode()
    opened = httpx.get(report, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert opened.status_code == 200, opened.text
    assert patient.call("GET", "/api/session", token=token).status_code == 200

    # the steward signed a later expiry than the token carries: not the steward's token
    forged = wallet_sign(tampered(typed, expiresAt=str(now + 3_000)), secret_of("steward"))
    refused = httpx.get(report, headers={"Authorization": f"Bearer {token_from(unsigned, forged)}"},
                        timeout=60)  # fmt: skip
    assert problem(refused, 401) == "credential_invalid"


# --------------------------------------------------------------------------- audit checkpoints


def test_checkpoint_file_is_checked_by_eth_sig_util_and_signed_alike_by_both_wallets() -> None:
    key = keccak(b"dul tests checkpoint signer")
    signer = LocalSigner(key)
    checkpoint = Checkpoint(
        chain_id=31337, block_number=2**40, block_hash=hexed(keccak(b"block")),
        store_digest=hexed(keccak(b"store")), taken_at=1_800_000_000,
        signer=str(signer.address),
    )  # fmt: skip
    document = sign_checkpoint(checkpoint, signer)
    assert node(RECOVER, json.dumps(document)).lower() == str(signer.address).lower()
    assert wallet_sign(document["typed_data"], key) == document["signature"]
    other = {**document, "typed_data": tampered(document["typed_data"], blockNumber="1")}
    assert node(RECOVER, json.dumps(other)).lower() != str(signer.address).lower()
