"""The fast event decoder equals eth-abi (the reference) on every audited event, renders the
same JSON as `json.dumps`, and refuses malformed logs instead of storing garbage."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest
from eth_abi.abi import encode
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.events import (
    AUDITED_CONTRACTS,
    EventDecodeError,
    EventDecoder,
    EventSpec,
    _plain,
    args_json,
)
from audit.store import events_of, prepare, prepare_logs
from dul.contracts.artifacts import load

ADDRESSES = {name: "0x" + f"{n + 1:040x}" for n, name in enumerate(AUDITED_CONTRACTS)}
DECODER = EventDecoder(ADDRESSES)


def all_specs() -> list[EventSpec]:
    return [spec for specs in DECODER.specs.values() for spec in specs.values()]


def value_strategy(param: dict[str, Any]) -> st.SearchStrategy[Any]:
    type_: str = param["type"]
    if type_.endswith("[]"):
        return st.lists(value_strategy({**param, "type": type_[:-2]}), max_size=3)
    if type_ == "tuple":
        return st.tuples(*(value_strategy(c) for c in param["components"]))
    if type_.startswith("uint"):
        return st.integers(0, 2 ** int(type_[4:] or 256) - 1)
    if type_ == "address":
        return st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    if type_ == "bool":
        return st.booleans()
    if type_ == "string":
        return st.text(max_size=12)
    if type_ == "bytes":
        return st.binary(max_size=70)
    if type_.startswith("bytes"):
        size = int(type_[5:])
        return st.binary(min_size=size, max_size=size)
    raise AssertionError(f"no strategy for {type_}")


def log_for(spec: EventSpec, values: dict[str, Any]) -> dict[str, Any]:
    abi = next(e for e in load(spec.contract).abi if e.get("name") == spec.name)
    topics = [spec.topic0]
    data_types, data_values = [], []
    for param in abi["inputs"]:
        type_ = _canonical(param)
        if param["indexed"]:
            topics.append("0x" + encode([type_], [values[param["name"]]]).hex())
        else:
            data_types.append(type_)
            data_values.append(values[param["name"]])
    return {
        "address": ADDRESSES[spec.contract],
        "topics": topics,
        "data": "0x" + encode(data_types, data_values).hex(),
        "blockNumber": "0x10",
        "transactionIndex": "0x2",
        "logIndex": "0x7",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "blockTimestamp": "0x64",
        "removed": False,
    }


def _canonical(param: dict[str, Any]) -> str:
    type_: str = param["type"]
    if type_.startswith("tuple"):
        return "(" + ",".join(_canonical(c) for c in param["components"]) + ")" + type_[5:]
    return type_


@st.composite
def event_and_values(draw: st.DrawFn) -> tuple[EventSpec, dict[str, Any]]:
    spec = draw(st.sampled_from(all_specs()))
    abi = next(e for e in load(spec.contract).abi if e.get("name") == spec.name)
    values = {p["name"]: draw(value_strategy(p)) for p in abi["inputs"]}
    return spec, values


@settings(max_examples=300, deadline=None)
@given(event_and_values())
def test_every_event_decodes_as_eth_abi_would(case: tuple[EventSpec, dict[str, Any]]) -> None:
    spec, values = case
    decoded = DECODER.decode(log_for(spec, values))
    abi = next(e for e in load(spec.contract).abi if e.get("name") == spec.name)
    expected = {p["name"]: _plain(p, _as_decoded(p, values[p["name"]])) for p in abi["inputs"]}
    assert (decoded.contract, decoded.name) == (spec.contract, spec.name)
    assert decoded.args == expected
    assert list(decoded.args) == [p["name"] for p in abi["inputs"]]
    assert json.loads(decoded.args_json) == expected
    assert decoded.args_json == args_json(expected)
    assert decoded.position == (16, 2, 7)
    assert decoded.block_timestamp == 100


def _as_decoded(param: dict[str, Any], value: Any) -> Any:
    """What eth-abi's decoder returns for an encoded value (addresses lowercased later)."""
    type_: str = param["type"]
    if type_.endswith("[]"):
        return [_as_decoded({**param, "type": type_[:-2]}, v) for v in value]
    if type_ == "tuple":
        return tuple(_as_decoded(c, v) for c, v in zip(param["components"], value, strict=True))
    if type_ == "string":
        return value.replace("\x00", "\\x00")  # NUL is kept as an escape (audit.events)
    return value


def test_the_hot_events_take_the_generated_static_path() -> None:
    for contract, event in (("AccessLog", "AccessRecorded"), ("AccessLog", "ResultReleased"),
                            ("AgreementRegistry", "AgreementSuspended"),
                            ("Membership", "MemberRoleGranted")):  # fmt: skip
        assert DECODER.spec_for(contract, event).static_decoder is not None
    for contract, event in (("AgreementRegistry", "AgreementProposed"),
                            ("DatasetRegistry", "DatasetRegistered")):  # fmt: skip
        assert DECODER.spec_for(contract, event).static_decoder is None


def test_wide_integers_are_hex_and_narrow_ones_are_numbers() -> None:
    spec = DECODER.spec_for("AccessLog", "AccessRecorded")
    wide, deadline = 2**200 + 5, 2**64 - 1
    word = [bytes([n]) * 32 for n in range(8)]
    record = (word[1], word[2], word[3], "0x" + "ee" * 20, 1, 0, 2, 0, wide,
              word[4], word[5], 9, word[0], deadline, word[6], word[7], 28)  # fmt: skip
    values = {"accessId": b"\1" * 32, "agreementId": b"\2" * 32, "datasetId": b"\3" * 32,
              "recorder": "0x" + "AB" * 20, "record": record}  # fmt: skip
    args = DECODER.decode(log_for(spec, values)).args
    assert args["record"]["fieldMask"] == hex(2**200 + 5)
    assert args["record"]["deadline"] == 2**64 - 1
    assert args["recorder"] == "0x" + "ab" * 20
    assert args["record"]["sigV"] == 28


def malformed(spec: EventSpec, values: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**log_for(spec, values), **changes}


def test_malformed_logs_are_refused() -> None:
    spec = DECODER.spec_for("AccessLog", "ResultReleased")
    values = {"accessId": b"\1" * 32, "agreementId": b"\2" * 32, "resultHash": b"\3" * 32,
              "kind": 0, "size": 10, "recorder": "0x" + "11" * 20}  # fmt: skip
    good = log_for(spec, values)
    cases = [
        malformed(spec, values, data=good["data"][:-64]),  # short data
        malformed(spec, values, topics=good["topics"][:-1]),  # a topic missing
        malformed(spec, values, address="0x" + "99" * 20),  # not one of ours
        malformed(spec, values, topics=["0x" + "00" * 32, *good["topics"][1:]]),  # unknown topic0
        malformed(spec, values, removed=True),  # reorged away
        # an address word with dirty padding, then a uint8 kind out of range
        malformed(spec, values, data="0x" + "00" * 31 + "01" + "00" * 31 + "0a" + "11" * 32),
        malformed(spec, values, data=good["data"][:2] + "f" * 64 + good["data"][66:]),
    ]
    for case in cases:
        with pytest.raises(EventDecodeError):
            DECODER.decode(case)
    assert DECODER.decode(good).args["size"] == 10


def test_dynamic_events_reject_bad_encodings() -> None:
    spec = DECODER.spec_for("Membership", "OrganizationRegistered")
    good = log_for(spec, {"org": b"\1" * 32, "kind": 1, "name": "Hospital A"})
    assert DECODER.decode(good).args == {"org": "0x" + "01" * 32, "kind": 1, "name": "Hospital A"}
    with pytest.raises(EventDecodeError):
        DECODER.decode({**good, "data": good["data"][:-64]})


_FAULTS = {
    "short data": lambda entry: {**entry, "data": entry["data"][:-64]},
    "topic missing": lambda entry: {**entry, "topics": entry["topics"][:-1]},
    "removed": lambda entry: {**entry, "removed": True},
    "no time": lambda entry: {k: v for k, v in entry.items() if k != "blockTimestamp"},
}


def _redeeming_access() -> tuple[EventSpec, dict[str, Any]]:
    """An AccessRecorded that redeemed a code with a cohort of one (a page's `redeeming`)."""
    spec = DECODER.spec_for("AccessLog", "AccessRecorded")
    word = [bytes([n]) * 32 for n in range(1, 9)]
    record = (word[0], word[1], word[2], "0x" + "ee" * 20, 1, 0, 2, 0, 6, word[3], word[4], 1,
              word[5], 1_800_000_000, word[6], word[7], 27)  # fmt: skip
    return spec, {"accessId": word[0], "agreementId": word[1], "datasetId": word[2],
                  "recorder": "0x" + "ab" * 20, "record": record}  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(event_and_values(), st.just(_redeeming_access())),
            st.integers(0, 2),
            st.sampled_from([None, None, None, *_FAULTS]),
        ),
        max_size=8,
    ),
    st.booleans(),
)
def test_a_page_prepared_from_its_logs_equals_one_prepared_from_its_events(
    cases: list[tuple[tuple[EventSpec, dict[str, Any]], int, str | None]], swapped: bool
) -> None:
    """The indexer's straight path from logs to rows (`prepare_logs`) gives the rows, blocks
    and redeemed codes `prepare` gives from the decoded events, refuses the same logs with the
    same errors, and says when the logs were not in chain order."""
    logs = []
    for n, ((spec, values), block, fault) in enumerate(sorted(cases, key=lambda c: c[1])):
        entry = {**log_for(spec, values), "blockNumber": hex(16 + block), "logIndex": hex(n),
                 "blockHash": f"0x{block:064x}", "blockTimestamp": hex(100 + block)}  # fmt: skip
        logs.append(_FAULTS[fault](entry) if fault else entry)
    if swapped and len(logs) > 1:
        logs[0], logs[-1] = logs[-1], logs[0]
    events, errors = [], []
    for entry in logs:
        try:
            events.append(DECODER.decode(entry))
        except (EventDecodeError, ValueError, KeyError, TypeError) as exc:
            errors.append((entry, f"{type(exc).__name__}: {exc}"))
    try:
        expected = prepare(events)
    except ValueError as exc:  # arrays of unequal length the contract never emits: alike
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            prepare_logs(DECODER, list(logs))
        return
    prepared, failed, ordered = prepare_logs(DECODER, list(logs))
    assert prepared.rows == expected.rows
    assert prepared.blocks == expected.blocks
    assert prepared.redeeming == expected.redeeming
    assert prepared.count == len(events)
    assert [(entry, f"{type(exc).__name__}: {exc}") for entry, exc in failed] == errors
    positions = [(ev.block_number, ev.log_index) for ev in events]
    assert ordered == (positions == sorted(positions))
    unstamped = [replace(ev, block_timestamp=None) for ev in events_of(prepared)]
    assert unstamped == [replace(ev, block_timestamp=None) for ev in events]


def _outcome(decode: Any, topics: list[str], data: str) -> Any:
    try:
        return decode(topics, data)
    except Exception as exc:  # the kind and text of any refusal are compared
        return type(exc).__name__, str(exc)


_STATIC_WITH_DATA = [s for s in all_specs() if s.static_values is not None and s.static_words]
_CHARACTERS = "0123456789abcdefABCDEF0000000000gxz _\u0130\n"
_EDGES = (0, 23, 24, 47, 48, 55, 56, 61, 62, 63)
"""Hex positions within a word where a padding ends or a value starts (address 24, uint64 48,
uint32 56, uint8 62)."""


@st.composite
def static_event_and_data(draw: st.DrawFn) -> tuple[EventSpec, list[str], str]:
    """A static event's lowercased topics and data hex, valid or with a few characters
    changed (padding made dirty, digits that are not hex, letters lowercasing cannot reach)."""
    spec = draw(st.sampled_from(_STATIC_WITH_DATA))
    abi = next(e for e in load(spec.contract).abi if e.get("name") == spec.name)
    values = {p["name"]: draw(value_strategy(p)) for p in abi["inputs"]}
    entry = log_for(spec, values)
    data = list(entry["data"][2:])
    for _ in range(draw(st.integers(0, 3))):  # at the edges of every padding the ABI has
        word = draw(st.integers(0, len(data) // 64 - 1))
        at = draw(st.one_of(st.sampled_from(_EDGES), st.integers(0, 63)))
        data[word * 64 + at] = draw(st.sampled_from(_CHARACTERS))
    return spec, [t.lower() for t in entry["topics"]], "".join(data)


@settings(max_examples=400, deadline=None)
@given(static_event_and_data())
def test_the_generated_static_decoders_read_the_words_as_word_by_word_statements_do(
    case: tuple[EventSpec, list[str], str],
) -> None:
    """The data words cut by one regular expression (the fast path) give what the statements
    reading one word at a time give, value for value, or the same refusal (the same error
    type and text): on valid encodings, full-range uint256 values among them, and on data
    with dirty padding or characters that are not hex."""
    spec, topics, data = case
    for name in ("decode", "values"):
        fast = spec.static_values if name == "values" else spec.static_decoder
        slow = fast.__globals__[f"_slow_{name}"]  # type: ignore[union-attr]
        assert _outcome(fast, topics, data) == _outcome(slow, topics, data)


def test_the_fast_path_matches_every_static_event_and_edge_values() -> None:
    """Every static event with data takes the regular expression on a valid encoding
    (nothing falls back unnoticed), including the widest and narrowest values."""
    for spec in _STATIC_WITH_DATA:
        abi = next(e for e in load(spec.contract).abi if e.get("name") == spec.name)
        for extreme in (min, max):
            values = {p["name"]: _extreme(p, extreme) for p in abi["inputs"]}
            entry = log_for(spec, values)
            assert spec.static_values is not None
            match = spec.static_values.__globals__["_match"]
            assert match(entry["data"][2:]) is not None, spec.name
            decoded = DECODER.decode(entry)
            expected = {p["name"]: _plain(p, _as_decoded(p, values[p["name"]]))
                        for p in abi["inputs"]}  # fmt: skip
            assert decoded.args == expected
            assert decoded.args_json == args_json(expected)  # the f-string renders as json.dumps


def _extreme(param: dict[str, Any], pick: Any) -> Any:
    type_: str = param["type"]
    if type_ == "tuple":
        return tuple(_extreme(c, pick) for c in param["components"])
    if type_.startswith("uint"):
        return pick(0, 2 ** int(type_[4:] or 256) - 1)
    if type_ == "address":
        return "0x" + pick("00", "ff") * 20
    if type_ == "bool":
        return pick(False, True)
    if type_.startswith("bytes"):
        return pick(b"\0", b"\xff") * int(type_[5:])
    raise AssertionError(f"no extreme for {type_}")


def test_every_padding_edge_of_every_static_event_is_refused_as_word_by_word() -> None:
    """Each word's padding edges and value digits, set to each kind of character, in every
    static event: the fast path's answer or refusal is the word-by-word statements'."""
    for spec in _STATIC_WITH_DATA:
        abi = next(e for e in load(spec.contract).abi if e.get("name") == spec.name)
        entry = log_for(spec, {p["name"]: _extreme(p, max) for p in abi["inputs"]})
        topics, data = [t.lower() for t in entry["topics"]], entry["data"][2:]
        assert spec.static_values is not None
        assert spec.static_decoder is not None
        for word in range(len(data) // 64):
            for at in _EDGES:
                for character in "0fAg \u0130":
                    n = word * 64 + at
                    changed = data[:n] + character + data[n + 1 :]
                    for fast, name in ((spec.static_values, "values"),
                                       (spec.static_decoder, "decode")):  # fmt: skip
                        slow = fast.__globals__[f"_slow_{name}"]
                        assert _outcome(fast, topics, changed) == _outcome(slow, topics, changed)


def test_addresses_and_topics_in_any_case_name_the_same_event() -> None:
    """The node's text is looked up as it is first: checksummed or uppercase text, and an
    address that is not a string, are answered exactly as lowercasing everything answered
    them."""
    spec, values = _redeeming_access()
    good = log_for(spec, values)
    expected = DECODER.decode(good)
    checksummed = {**good, "address": good["address"].upper().replace("0X", "0x"),
                   "topics": [good["topics"][0].upper(), *good["topics"][1:]]}  # fmt: skip
    assert DECODER.decode(checksummed) == expected
    address, contract, found = DECODER.spec_of(checksummed)
    assert (address, contract, found) == (good["address"], "AccessLog", spec)
    for wrong, message in (([good["address"]], "unexpected address"), (7, "unexpected address")):
        with pytest.raises(EventDecodeError, match=message):
            DECODER.spec_of({**good, "address": wrong})
    with pytest.raises(EventDecodeError, match="declares no event"):
        DECODER.spec_of({**good, "topics": ["0x" + "00" * 32, *good["topics"][1:]]})


def test_hashes_repeated_from_log_to_log_are_lowercased_as_each_alone() -> None:
    """`prepare_logs` keeps the previous log's lowercased block and transaction hash for the
    next that names the same text: the rows equal those of logs decoded one by one, whatever
    the case, the order, and other events between them."""
    spec, values = _redeeming_access()
    other = DECODER.spec_for("AccessLog", "ResultReleased")
    release = log_for(other, {"accessId": b"\1" * 32, "agreementId": b"\2" * 32,
                              "resultHash": b"\3" * 32, "kind": 0, "size": 10,
                              "recorder": "0x" + "11" * 20})  # fmt: skip
    hashes = ["0x" + "ab" * 32, "0x" + "AB" * 32, "0x" + "cd" * 32]
    logs = []
    for n, (block, tx, kind) in enumerate([(0, 0, "a"), (0, 0, "a"), (0, 1, "r"), (0, 1, "a"),
                                           (1, 1, "a"), (1, 2, "a"), (2, 2, "r"), (2, 2, "a"),
                                           (2, 0, "a"), (1, 0, "r"), (2, 0, "a")]):  # fmt: skip
        entry = log_for(spec, values) if kind == "a" else dict(release)
        logs.append({**entry, "blockNumber": hex(16 + block), "logIndex": hex(n),
                     "blockHash": hashes[block], "transactionHash": hashes[tx]})  # fmt: skip
    events = [DECODER.decode(entry) for entry in logs]
    prepared, failed, ordered = prepare_logs(DECODER, list(logs))
    assert (failed, ordered) == ([], False)  # a log of block 1 after block 2's
    assert prepared.rows == prepare(events).rows
    assert prepared.blocks == prepare(events).blocks
