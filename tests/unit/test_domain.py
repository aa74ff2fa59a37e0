"""The Python vocabulary must match the Solidity enums value for value."""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import pytest
from eth_abi.abi import encode
from eth_hash.auto import keccak

from dul import domain

SOURCE = Path(__file__).resolve().parents[2] / "solidity/contracts/types/DataUse.sol"


def solidity_enums() -> dict[str, list[str]]:
    text = SOURCE.read_text()
    return {
        name: re.findall(r"\b([A-Z_]+)\b", body)
        for name, body in re.findall(r"enum (\w+) \{([^}]*)\}", text)
    }


@pytest.mark.parametrize("name", sorted(solidity_enums()))
def test_python_enum_matches_solidity(name: str) -> None:
    python_enum = getattr(domain, name)
    assert issubclass(python_enum, IntEnum)
    assert [member.name for member in python_enum] == solidity_enums()[name]
    assert [member.value for member in python_enum] == list(range(len(python_enum)))


def test_every_solidity_enum_is_mirrored() -> None:
    assert len(solidity_enums()) == 17


def test_slug_ids_round_trip_and_refuse_overlong() -> None:
    assert domain.slug_of(domain.slug_id("charite")) == "charite"
    with pytest.raises(ValueError, match="1 to 32 bytes"):
        domain.slug_id("x" * 33)
    with pytest.raises(ValueError, match="1 to 32 bytes"):
        domain.slug_id("")


def test_slug_of_a_hash_is_hex() -> None:
    value = bytes(range(32))
    assert domain.slug_of(value) == "0x" + value.hex()


def test_operations_mask() -> None:
    assert domain.operations_mask(domain.Operation.QUERY, domain.Operation.EXPORT_RESULT) == 0b101


def test_scenario_mask_round_trips() -> None:
    scenario = domain.Scenario
    assert domain.scenario_mask() == 0
    assert domain.scenario_mask(scenario.RESEARCH, scenario.AI_TRAINING) == 0b0110
    assert domain.scenario_mask(*scenario) == 0x1F
    assert domain.scenarios_of(0b10001) == (scenario.CLINICAL_CARE, scenario.INSURANCE_CLAIM)
    assert domain.scenarios_of(0xE0) == ()


def test_consent_id_is_abi_encoded_keccak() -> None:
    holder, subject = domain.slug_id("hospital-a"), bytes(range(32))
    expected = keccak(encode(["bytes32", "bytes32", "uint256"], [holder, subject, 3]))
    assert domain.consent_id(holder, subject, 3) == expected


def test_break_glass_ref_is_the_contracts_tag_and_reason() -> None:
    reason = domain.BreakGlassReason.LIFE_THREATENING_EMERGENCY
    ref = domain.break_glass_ref(reason)
    assert ref == b"DUL:break-glass".ljust(31, b"\0") + b"\x02"
    assert domain.is_break_glass(ref)
    assert domain.break_glass_reason(ref) == reason
    assert domain.break_glass_reason(ref[:31] + b"\x09") == domain.BreakGlassReason.NONE
    assert not domain.is_break_glass(keccak(b"a patient's code"))
    assert not domain.is_break_glass(bytes(32))


def test_required_consent_and_break_glass_rules() -> None:
    s, t, c = domain.Scenario, domain.Tier, domain.ConsentPolicy
    required = domain.required_consent
    assert required(s.CLINICAL_CARE, t.IDENTIFIED, True) == c.PATIENT_AUTHORIZATION
    assert required(s.CLINICAL_CARE, t.IDENTIFIED, False) == c.NONE  # the holder's own care
    assert required(s.CLINICAL_CARE, t.PSEUDONYMIZED, True) == c.NONE
    assert required(s.INSURANCE_CLAIM, t.AGGREGATE, False) == c.PATIENT_AUTHORIZATION
    assert required(s.RESEARCH, t.PSEUDONYMIZED, True) == c.COHORT_CONSENT
    allowed = domain.break_glass_allowed
    assert allowed(s.CLINICAL_CARE, c.PATIENT_AUTHORIZATION, 720)
    assert not allowed(s.CLINICAL_CARE, c.PATIENT_AUTHORIZATION, 721)
    assert not allowed(s.CLINICAL_CARE, c.NONE, 24)
    assert not allowed(s.INSURANCE_CLAIM, c.PATIENT_AUTHORIZATION, 24)
    assert all(allowed(x, p, 0) for x in s for p in c)
