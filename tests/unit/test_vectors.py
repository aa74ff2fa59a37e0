"""Cross-language vectors: typed data signed in Python with eth-account, which the Hardhat
suite (`solidity/test/vectors.test.js`) verifies on chain.

The committed JSON must equal what Python produces now; regenerate it with
`DUL_WRITE_VECTORS=1 pytest tests/unit/test_vectors.py`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data

from dul.consent_terms import ConsentTerms
from dul.contracts.typed_data import (
    ACCESS_REQUEST_TYPES,
    AccessRequest,
    AgreementTerms,
    AuthorizationRevocation,
    ConsentGrant,
    ConsentWithdrawal,
    PatientAuthorization,
    access_log_domain,
    agreement_domain,
    consent_domain,
)
from dul.domain import (
    ConsentPolicy,
    Operation,
    Scenario,
    Tier,
    consent_id,
    operations_mask,
    slug_id,
)
from dul.signing import typed_data_json

VECTORS = Path(__file__).resolve().parents[2] / "solidity/test/vectors"
KEY = "0x" + "4b" * 32  # a public test key, never used for anything else
# Hardhat's first deployment from its first default account lands here on chain 31337.
VERIFYING_CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def _sign(typed: dict[str, Any]) -> dict[str, Any]:
    signed = Account.sign_message(encode_typed_data(full_message=typed), KEY)
    return {
        "privateKey": KEY,
        "address": Account.from_key(KEY).address,
        **typed,
        "digest": "0x" + bytes(signed.message_hash).hex(),
        "signature": "0x" + bytes(signed.signature).hex(),
    }


def agreement_vector() -> dict[str, Any]:
    terms = AgreementTerms(
        holder=slug_id("hospital-a"),
        requester=slug_id("institute"),
        datasets=(slug_id("hospital-a/omop-cdm"), slug_id("hospital-a/imaging")),
        field_masks=(0b1011, 0b1),
        scenario=Scenario.RESEARCH,
        max_tier=Tier.PSEUDONYMIZED,
        operations=operations_mask(Operation.QUERY, Operation.EXPORT_RESULT),
        valid_from=1_800_000_000,
        valid_until=1_900_000_000,
        quota=500,
        consent_policy=ConsentPolicy.COHORT_CONSENT,
        terms_hash=bytes.fromhex("aa" * 32),
        nonce=2**200 + 7,
        deadline=1_850_000_000,
        duo_codes=(42, 46, 25),
        disease_code=bytes.fromhex("0d" * 32),
        ethics_approval=bytes.fromhex("e7" * 32),
    )
    domain = agreement_domain(31337, VERIFYING_CONTRACT)  # type: ignore[arg-type]
    vector = _sign(terms.typed_data(domain, version=2, previous=bytes.fromhex("11" * 32)))
    assert vector["digest"] == "0x" + terms.digest(domain, 2, bytes.fromhex("11" * 32)).hex()
    return vector


def access_request_vector() -> dict[str, Any]:
    request = AccessRequest(
        request_id=bytes.fromhex("01" * 32),
        agreement_id=bytes.fromhex("02" * 32),
        dataset_id=slug_id("hospital-a/omop-cdm"),
        field_mask=0b110,
        tier=Tier.DEIDENTIFIED,
        operation=Operation.QUERY,
        request_hash=bytes.fromhex("03" * 32),
        deadline=1_850_000_000,
        authorization_ref=bytes.fromhex("04" * 32),
    )
    domain = access_log_domain(31337, VERIFYING_CONTRACT)  # type: ignore[arg-type]
    typed = typed_data_json(
        domain.as_json(), ACCESS_REQUEST_TYPES, "AccessRequest", request.message()
    )
    vector = _sign(typed)
    assert vector["digest"] == "0x" + request.digest(domain).hex()
    return vector


def consent_withdrawal_vector() -> dict[str, Any]:
    withdrawal = ConsentWithdrawal(
        consent_id=consent_id(slug_id("hospital-a"), bytes.fromhex("5e" * 32), 3),
        deadline=1_850_000_000,
    )
    domain = consent_domain(31337, VERIFYING_CONTRACT)  # type: ignore[arg-type]
    vector = _sign(withdrawal.typed_data(domain))
    assert vector["digest"] == "0x" + withdrawal.digest(domain).hex()
    return vector


def authorization_vector() -> dict[str, Any]:
    authorization = PatientAuthorization(
        code_hash=bytes.fromhex("c0" * 32),
        holder=slug_id("hospital-a"),
        subject=bytes.fromhex("5e" * 32),
        grantee=slug_id("insurer"),
        dataset=slug_id("hospital-a/omop-cdm"),
        field_mask=0b111110,
        tier=Tier.IDENTIFIED,
        scenario=Scenario.INSURANCE_CLAIM,
        expires_at=1_850_000_000,
        multi_use=True,
    )
    domain = consent_domain(31337, VERIFYING_CONTRACT)  # type: ignore[arg-type]
    vector = _sign(authorization.typed_data(domain))
    assert vector["digest"] == "0x" + authorization.digest(domain).hex()
    signer = authorization.signer_of(bytes.fromhex(vector["signature"][2:]), domain)
    assert signer == vector["address"]
    return vector


def consent_grant_vector() -> dict[str, Any]:
    """A specific consent the patient grants, as the patient page serves it to their wallet."""
    holder, subject = slug_id("hospital-a"), bytes.fromhex("5e" * 32)
    grant = ConsentGrant(
        consent_id=consent_id(holder, subject, 2),
        terms=ConsentTerms(
            holder=holder,
            subject=subject,
            scenarios=0b0110,
            valid_until=1_900_000_000,
            duo_codes=(7, 42),
            subject_key=Account.from_key(KEY).address,
            disease_code=b"MONDO:0007254".ljust(32, b"\0"),
            studies=tuple(sorted((b"\xa1" * 32, b"\x1a" * 32))),
            requesters=(slug_id("institute"),),
        ),
        deadline=1_850_000_000,
    )
    domain = consent_domain(31337, VERIFYING_CONTRACT)  # type: ignore[arg-type]
    vector = _sign(grant.typed_data(domain))
    assert vector["digest"] == "0x" + grant.digest(domain).hex()
    assert grant.signer_of(bytes.fromhex(vector["signature"][2:]), domain) == vector["address"]
    return vector


def authorization_revocation_vector() -> dict[str, Any]:
    revocation = AuthorizationRevocation(code_hash=bytes.fromhex("c0" * 32), deadline=1_850_000_000)
    domain = consent_domain(31337, VERIFYING_CONTRACT)  # type: ignore[arg-type]
    vector = _sign(revocation.typed_data(domain))
    assert vector["digest"] == "0x" + revocation.digest(domain).hex()
    return vector


def test_committed_vectors_match_python() -> None:
    produced = {
        "agreement-signature.json": agreement_vector(),
        "access-request-signature.json": access_request_vector(),
        "consent-withdrawal-signature.json": consent_withdrawal_vector(),
        "consent-grant-signature.json": consent_grant_vector(),
        "authorization-signature.json": authorization_vector(),
        "authorization-revocation-signature.json": authorization_revocation_vector(),
    }
    for name, vector in produced.items():
        path = VECTORS / name
        text = json.dumps(vector, indent=2, sort_keys=True) + "\n"
        if os.environ.get("DUL_WRITE_VECTORS") == "1":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert path.exists(), f"{path} missing: run DUL_WRITE_VECTORS=1 pytest {__file__}"
        assert json.loads(path.read_text()) == json.loads(text), f"{name} drifted from Python"


WALLETS = r"""
const { signTypedData, SignTypedDataVersion } = require("@metamask/eth-sig-util");
const { Wallet } = require("ethers");
const vector = JSON.parse(require("fs").readFileSync(0, "utf8"));
const typed = { types: vector.types, domain: vector.domain, primaryType: vector.primaryType,
                message: vector.message };
const metamask = signTypedData({ privateKey: Buffer.from(vector.privateKey.slice(2), "hex"),
                                 data: typed, version: SignTypedDataVersion.V4 });
const types = { ...typed.types };
delete types.EIP712Domain;  // ethers v6 derives it from the domain
new Wallet(vector.privateKey).signTypedData(typed.domain, types, typed.message)
  .then((ethers) => console.log(JSON.stringify({ metamask, ethers })));
"""


@pytest.mark.skipif(
    shutil.which("node") is None
    or not (VECTORS.parents[2] / "node_modules/@metamask/eth-sig-util").is_dir(),
    reason="node or @metamask/eth-sig-util is not installed (npm ci)",
)
@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.glob("*-signature.json")))
def test_wallet_libraries_sign_each_vector_as_python_does(name: str) -> None:
    """MetaMask's eth-sig-util (the JSON as is) and ethers v6 (without `EIP712Domain`) sign
    every committed vector to its signature: a wallet signs what the contracts verify."""
    done = subprocess.run(
        [str(shutil.which("node")), "-e", WALLETS], input=(VECTORS / name).read_text(),
        capture_output=True, text=True, cwd=VECTORS.parents[2], timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    signed = json.loads(done.stdout)
    expected = json.loads((VECTORS / name).read_text())["signature"]
    assert signed == {"metamask": expected, "ethers": expected}
