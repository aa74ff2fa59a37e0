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
    assert len(solidity_enums()) == 15


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
