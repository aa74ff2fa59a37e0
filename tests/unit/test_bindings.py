"""The contract bindings (dul.contracts.bindings) against eth-utils' own derivation of
selectors and topics from the same ABIs, round trips of their encoders and decoders, and the
rule that no selector, topic or ABI type string is written by hand outside dul/contracts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from eth_abi.abi import encode
from eth_utils.abi import event_abi_to_log_topic, function_abi_to_4byte_selector

from dul.contracts.artifacts import load
from dul.contracts.bindings import event, events, function, functions

CONTRACTS = (
    "Membership",
    "DatasetRegistry",
    "AgreementRegistry",
    "ConsentRegistry",
    "AccessLog",
    "ArtifactRegistry",
)
ROOT = Path(__file__).resolve().parents[2]


def _items(contract: str, kind: str) -> list[dict[str, Any]]:
    return [item for item in load(contract).abi if item.get("type") == kind]


@pytest.mark.parametrize("contract", CONTRACTS)
def test_every_selector_and_topic_is_the_one_eth_utils_derives(contract: str) -> None:
    bound = functions(contract)
    for item in _items(contract, "function"):
        assert bound[item["name"]].selector == function_abi_to_4byte_selector(item)  # type: ignore[arg-type]
    bound_events = events(contract)
    for item in _items(contract, "event"):
        assert bound_events[item["name"]].topic == event_abi_to_log_topic(item)  # type: ignore[arg-type]
    assert set(bound) == {i["name"] for i in _items(contract, "function")}
    assert set(bound_events) == {i["name"] for i in _items(contract, "event")}


def test_a_function_encodes_decodes_its_input_and_decodes_its_output() -> None:
    has_role = function("Membership", "hasOrgRole")
    assert has_role.signature == "hasOrgRole(address,bytes32,uint8)"
    assert not has_role.mutates
    account, org = "0x" + "11" * 20, b"\x22" * 32
    calldata = has_role.encode(account, org, 3)
    assert calldata[:4] == has_role.selector
    assert has_role.decode_input(calldata) == (account, org, 3)
    assert has_role.decode_output(encode(["bool"], [True])) == (True,)
    with pytest.raises(ValueError, match=r"not a call of Membership\.hasOrgRole"):
        has_role.decode_input(function("Membership", "isAuthorizedSender").encode(account))
    assert function("AccessLog", "recordAccesses").mutates


def test_an_event_splits_topics_from_data_and_decodes_both() -> None:
    proposed = event("AgreementRegistry", "AgreementProposed")
    item = next(i for i in _items("AgreementRegistry", "event") if i["name"] == "AgreementProposed")
    assert proposed.names == tuple(i["name"] for i in item["inputs"])
    assert proposed.data_names == tuple(i["name"] for i in item["inputs"] if not i["indexed"])
    assert len(proposed.topic_types) + len(proposed.data_types) == len(proposed.types)
    assert proposed.topic_hex == "0x" + proposed.topic.hex()
    registered = event("DatasetRegistry", "DatasetRegistered")
    assert registered.data_types == ("bytes32", "uint8", "string[]")
    values = (b"\x01" * 32, 3, ("person_id", "birth_year"))
    assert registered.decode_data(encode(list(registered.data_types), list(values))) == values
    topics = [b"\x05" * 32, b"\x06" * 32]
    assert registered.decode_topics(topics) == (b"\x05" * 32, b"\x06" * 32)


def test_unknown_names_are_lookup_errors() -> None:
    with pytest.raises(LookupError, match="AccessLog has no function nothing"):
        function("AccessLog", "nothing")
    with pytest.raises(LookupError, match="AccessLog has no event Nothing"):
        event("AccessLog", "Nothing")


# A selector or topic spelled out: keccak of a signature literal, a signature literal, an ABI
# type string or a list of them (inline, or one type a line).
_TYPE = r"(?:bytes\d*|uint\d*|int\d*|address|bool|string)"
HAND_WRITTEN = re.compile(
    r"""keccak\(\s*b?["'][A-Za-z_]\w*\("""
    rf"""|["'][A-Za-z_]\w*\([\w\[\],()]*{_TYPE}[\w\[\],()]*\)["']"""
    rf"""|["']\({_TYPE}[,)\[]"""
    rf"""|(?<![\w\])])\[\s*["']{_TYPE}(?:\[\])?["']\s*[,\]]"""
    rf"""|^\s*["']{_TYPE}(?:\[\])?["'],"""
)
#: Modules still to move onto the bindings (each a small commit of its own).
PENDING = (
    "audit/bench.py",
    "audit/chain_reads.py",
    "audit/verify_state.py",
)


def test_no_selector_topic_or_abi_type_is_written_by_hand_outside_dul_contracts() -> None:
    found = []
    for package in ("dul", "ledger_gateway", "audit"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("dul/contracts/") or relative in PENDING:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if HAND_WRITTEN.search(line):
                    found.append(f"{relative}:{number}: {line.strip()}")
    assert not found, "use dul.contracts.bindings instead:\n" + "\n".join(found)


def test_the_pattern_finds_what_it_is_for() -> None:
    assert HAND_WRITTEN.search('X = keccak(b"hasOrgRole(address,bytes32,uint8)")[:4]')
    assert HAND_WRITTEN.search('decode(["uint64"], raw)')
    assert HAND_WRITTEN.search('TYPES = ["(bytes32,bytes32,uint8)"]')
    assert not HAND_WRITTEN.search("decode(list(binding.data_types), data)")
