"""Decoded chain errors and the sign prompt read in names, not enum numbers or bit masks."""

from __future__ import annotations

from eth_abi.abi import encode
from eth_hash.auto import keccak

from dul.cli.steward import summary
from dul.contracts.reverts import decode_revert
from dul.domain import ConsentPolicy, Scenario, slug_id


def test_enum_arguments_are_named() -> None:
    selector = keccak(b"AgreementRegistryConsentPolicyMismatch(uint8,uint8,uint8)")[:4]
    data = selector + encode(["uint8"] * 3, [1, 1, 0])
    decoded = decode_revert(data)
    assert decoded is not None
    assert decoded.args == {"scenario": 1, "required": 1, "given": 0}  # values stay numbers
    assert decoded.describe() == (
        "AgreementRegistryConsentPolicyMismatch(scenario="
        f"{Scenario(1).name}, required={ConsentPolicy(1).name}, given={ConsentPolicy(0).name})"
    )


def test_an_out_of_range_enum_value_prints_as_a_number() -> None:
    selector = keccak(b"AgreementRegistryConsentPolicyMismatch(uint8,uint8,uint8)")[:4]
    decoded = decode_revert(selector + encode(["uint8"] * 3, [1, 1, 200]))
    assert decoded is not None
    assert decoded.describe().endswith("given=200)")


def test_the_sign_prompt_names_fields_when_it_cannot_read_the_ledger() -> None:
    message = {
        "id": "0x" + "ab" * 32, "version": "1", "holder": "0x" + slug_id("hospital-a").hex(),
        "requester": "0x" + slug_id("institute").hex(), "scenario": "0", "duoCodes": ["42"],
        "maxTier": "2", "operations": "1", "validFrom": "0", "validUntil": "86400",
        "quota": "5", "consentPolicy": "0", "termsHash": "0x" + "00" * 32, "deadline": "60",
        "datasets": ["0x" + slug_id("hospital-a/omop").hex()], "fieldMasks": ["6"],
    }  # fmt: skip
    lines = summary(message)
    assert "dataset     hospital-a/omop: field indices 1, 2" in lines
    assert not any("0x6" in line for line in lines)
