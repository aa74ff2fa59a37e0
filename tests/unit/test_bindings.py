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
from dul.contracts.bindings import canonical_type, event, events, function, functions
from dul.contracts.deployment import CONTRACT_NAMES
from dul.keccak import keccak

ROOT = Path(__file__).resolve().parents[2]


def _items(contract: str, kind: str) -> list[dict[str, Any]]:
    return [item for item in load(contract).abi if item.get("type") == kind]


@pytest.mark.parametrize("contract", CONTRACT_NAMES)
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
# type string or a list of them (inline, or one type a line), eth-utils' own derivations.
_TYPE = r"(?:bytes\d*|uint\d*|int\d*|address|bool|string)"
HAND_WRITTEN = re.compile(
    r"""keccak\(\s*(?:text\s*=\s*|primitive\s*=\s*)?b?["'][A-Za-z_]\w*\("""
    rf"""|["'][A-Za-z_]\w*\([\w\[\],()]*{_TYPE}[\w\[\],()]*\)["']"""
    rf"""|["']\({_TYPE}[,)\[]"""
    rf"""|(?<![\w\])])\[\s*["']{_TYPE}(?:\[\])?["']\s*[,\]]"""
    rf"""|^\s*["']{_TYPE}(?:\[\])?["'],"""
    r"""|\b(?:function_signature_to_4byte_selector|event_signature_to_log_topic"""
    r"""|function_abi_to_4byte_selector|event_abi_to_log_topic)\b"""
)
#: Where the product's code lives: every Python file of the repository but dul/contracts (the
#: binding layer itself) and tests/ (which check the bindings against independent encodings).
SKIPPED = ("dul/contracts/", "tests/", ".venv/", "node_modules/")


def _product_files() -> list[tuple[str, str]]:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if not relative.startswith(SKIPPED):
            files.append((relative, path.read_text()))
    return files


def _known_hex() -> dict[str, str]:
    """Every selector, topic and custom error selector of the packaged contracts, as hex."""
    known: dict[str, str] = {}
    for contract in CONTRACT_NAMES:
        for name, bound in functions(contract).items():
            known[bound.selector.hex()] = f"{contract}.{name}"
        for name, bound_event in events(contract).items():
            known[bound_event.topic.hex()] = f"{contract}.{name} topic"
        for item in _items(contract, "error"):
            signature = f"{item['name']}({','.join(canonical_type(i) for i in item['inputs'])})"
            known[keccak(signature.encode())[:4].hex()] = f"{contract} error {item['name']}"
    return known


def test_no_selector_topic_or_abi_type_is_written_by_hand_outside_dul_contracts() -> None:
    found = []
    known = _known_hex()
    hex_literal = re.compile(r"(?<![0-9a-fA-F])(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{8})(?![0-9a-fA-F])")
    files = _product_files()
    assert any(path.startswith("audit/") for path, _ in files)  # the scan reaches every package
    for relative, text in files:
        for number, line in enumerate(text.splitlines(), start=1):
            if HAND_WRITTEN.search(line):
                found.append(f"{relative}:{number}: {line.strip()}")
            for literal in hex_literal.findall(line):
                if literal.lower() in known:
                    found.append(f"{relative}:{number}: {known[literal.lower()]} spelled out")
    assert not found, "use dul.contracts.bindings instead:\n" + "\n".join(found)


def test_the_pattern_finds_what_it_is_for() -> None:
    assert HAND_WRITTEN.search('X = keccak(b"hasOrgRole(address,bytes32,uint8)")[:4]')
    assert HAND_WRITTEN.search('X = Web3.keccak(text="defaultAdmin()")')
    assert HAND_WRITTEN.search('decode(["uint64"], raw)')
    assert HAND_WRITTEN.search('TYPES = ["(bytes32,bytes32,uint8)"]')
    assert HAND_WRITTEN.search('View("memberOf(address)", ("org:bytes32",))')
    assert HAND_WRITTEN.search("function_signature_to_4byte_selector(sig)")
    assert not HAND_WRITTEN.search("decode(list(binding.data_types), data)")
