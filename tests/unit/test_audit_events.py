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
