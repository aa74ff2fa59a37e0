"""The permissioned endpoint's policy without servers: methods, senders, membership cache."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings
from hypothesis import strategies as st

from dul.chain.rpc_filter import (
    INVALID_REQUEST,
    LOCAL_ANSWERS,
    PARSE_ERROR,
    UNAUTHORIZED,
    MethodClass,
    RawTx,
    TxDecodeError,
    classify_method,
    creation_refusal,
    decode_raw_transaction,
    parse_hex_bytes,
    replay_refusal,
    request_id_of,
    request_shape_error,
    sender_refusal,
)
from dul.chain.rpc_proxy import (
    BadRequestError,
    MembershipOracle,
    parse_body,
)
from dul.chain.upstream import UpstreamError
from dul.contracts.bindings import function
from dul.json_depth import MAX_JSON_DEPTH
from dul.rpc_proxy import sender_check

ALICE: LocalAccount = Account.from_key("0x" + "a1" * 32)
TO = "0x000000000000000000000000000000000000dEaD"  # checksummed, as eth-account wants

# --- methods -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [
        "anvil_mine",
        "anvil_setBalance",
        "anvil_impersonateAccount",
        "evm_mine",
        "evm_snapshot",
        "evm_revert",
        "hardhat_setCode",
        "debug_traceTransaction",
        "personal_sign",
        "admin_nodeInfo",
        "miner_start",
        "txpool_content",
        "eth_sendTransaction",
        "eth_sign",
        "eth_signTransaction",
        "eth_signTypedData",
        "eth_signTypedData_v4",
        "eth_coinbase",
        "eth_subscribe",
        "",
        "ETH_BLOCKNUMBER",
    ],
)
def test_refuses_everything_outside_the_allowlist(method: str) -> None:
    assert classify_method(method) is MethodClass.REFUSED


@pytest.mark.parametrize(
    "method",
    [
        "eth_blockNumber",
        "eth_call",
        "eth_getLogs",
        "eth_chainId",
        "net_version",
        "web3_clientVersion",
    ],
)
def test_forwards_standard_reads(method: str) -> None:
    assert classify_method(method) is MethodClass.FORWARD


def test_checks_senders_of_raw_transactions_and_answers_accounts_locally() -> None:
    assert classify_method("eth_sendRawTransaction") is MethodClass.SEND
    assert classify_method("eth_sendRawTransactionSync") is MethodClass.SEND
    assert classify_method("eth_accounts") is MethodClass.LOCAL


def test_fee_methods_answer_the_nodes_zero_price() -> None:
    for method in ("eth_gasPrice", "eth_maxPriorityFeePerGas"):
        assert classify_method(method) is MethodClass.LOCAL
        assert LOCAL_ANSWERS[method] == "0x0"
    assert classify_method("eth_feeHistory") is MethodClass.FORWARD


V = {"jsonrpc": "2.0"}
BAD_ID = "id must be null, a string or an integer within 64 bits"
NO_V = 'request must have "jsonrpc": "2.0"'


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ([], "request must be a JSON object"),
        ("eth_blockNumber", "request must be a JSON object"),
        ({**V, "id": 1}, "request has no method"),
        ({**V, "id": 1, "method": 5}, "request has no method"),
        ({**V, "id": 1, "method": "eth_call", "params": "x"}, "params must be an array or object"),
        ({"id": 1, "method": "eth_blockNumber"}, NO_V),
        ({"jsonrpc": "1.0", "id": 1, "method": "eth_blockNumber"}, NO_V),
        ({**V, "id": {"a": 1}, "method": "eth_chainId"}, BAD_ID),
        ({**V, "id": [1], "method": "eth_chainId"}, BAD_ID),
        ({**V, "id": True, "method": "eth_chainId"}, BAD_ID),
        ({**V, "id": 1.5, "method": "eth_chainId"}, BAD_ID),
        ({**V, "id": 2**63, "method": "eth_chainId"}, BAD_ID),
        ({**V, "id": -(2**63), "method": "eth_chainId"}, None),
        ({**V, "id": None, "method": "eth_chainId"}, None),
        ({**V, "method": "eth_chainId"}, None),
        ({**V, "id": "x", "method": "eth_blockNumber"}, None),
        ({**V, "id": 1, "method": "eth_call", "params": []}, None),
    ],
)  # fmt: skip
def test_request_shape(item: object, problem: str | None) -> None:
    assert request_shape_error(item) == problem


def test_an_invalid_id_is_answered_with_null() -> None:
    assert request_id_of({"id": 7}) == 7
    assert request_id_of({"id": 10**30}) is None
    assert request_id_of({"id": {"nested": 1}}) is None
    assert request_id_of([1]) is None


# --- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"[" * 100_000 + b"]" * 100_000, f"nests deeper than {MAX_JSON_DEPTH} levels"),
        (b"{" + b'"a":{' * 50_000 + b"}" * 50_001, f"nests deeper than {MAX_JSON_DEPTH} levels"),
        (b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1), "nests deeper than"),
        (b'{"id":"\xff"}', "not UTF-8"),
        ("\ufeff{}".encode(), "not JSON"),
        ('{"a":"\u00e9"}'.encode("utf-16"), "not UTF-8"),
        (b'{"id":NaN}', "not JSON"),
        (b'{"id":-Infinity}', "not JSON"),
        (b'{"id":1e999}', "out of range"),
        (b'{"id":' + b"9" * 5000 + b"}", "not JSON"),
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        ((b"[" * 20 + b"}") * 2, "unpaired brackets"),
        (b'["\\\\"' + b"[" * 40 + b"]" * 40 + b"]", "nests deeper than"),
    ],
)
def test_malformed_bodies_are_parse_errors(body: bytes, fragment: str) -> None:
    # py_ecc (imported by eth-account) raises the recursion limit to 100,000 in this
    # process, deep enough for a deep body to overflow the C stack in `json.loads`.
    with pytest.raises(BadRequestError) as caught:
        parse_body(body)
    assert caught.value.code == PARSE_ERROR
    assert fragment in str(caught.value)


def test_a_body_at_the_depth_limit_parses() -> None:
    deep = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert parse_body(deep) is not None
    wide = json.dumps([[{"a": [1]}] for _ in range(1000)]).encode()
    assert len(parse_body(wide)) == 1000
    # Brackets and escapes inside strings are not structure.
    quoted = json.dumps({"a": "[" * 100 + '\\"{' * 50, "b": ["]]}}"] * 40}).encode()
    assert parse_body(quoted)["a"].startswith("[[")


# --- sender recovery ----------------------------------------------------------------------


def _sign(tx: dict[str, Any], account: LocalAccount = ALICE) -> bytes:
    return bytes(account.sign_transaction(tx).raw_transaction)


LEGACY = {"to": TO, "value": 0, "gas": 21000, "gasPrice": 0, "nonce": 0, "chainId": 31337}
ACCESS_LIST = {
    **LEGACY,
    "type": 1,
    "accessList": [{"address": TO, "storageKeys": ["0x" + "00" * 32]}],
}
DYNAMIC = {
    "to": TO,
    "value": 0,
    "gas": 50_000,
    "maxFeePerGas": 0,
    "maxPriorityFeePerGas": 0,
    "nonce": 7,
    "chainId": 31337,
    "type": 2,
    "data": b"\x01" * 300,
}


@pytest.mark.parametrize(
    ("tx", "tx_type"),
    [
        (LEGACY, 0),
        ({k: v for k, v in LEGACY.items() if k != "chainId"}, 0),  # pre-EIP-155
        (ACCESS_LIST, 1),
        (DYNAMIC, 2),
        ({**DYNAMIC, "to": b""}, 2),
        ({**LEGACY, "to": b"", "data": b"\x60\x00" * 40_000}, 0),  # long RLP lengths
    ],
)
def test_recovers_the_sender_like_eth_account(tx: dict[str, Any], tx_type: int) -> None:
    raw = _sign(tx)
    decoded = decode_raw_transaction(raw)
    assert decoded.sender == Account.recover_transaction(raw).lower() == ALICE.address.lower()
    assert decoded.tx_type == tx_type
    assert decoded.to == (None if tx["to"] == b"" else TO.lower())
    assert decoded.nonce == tx["nonce"]


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32).filter(
        lambda b: 0 < int.from_bytes(b, "big") < 2**256 - 2**129
    ),
    nonce=st.integers(min_value=0, max_value=2**64 - 1),
    gas=st.integers(min_value=21_000, max_value=2**63),
    value=st.integers(min_value=0, max_value=2**256 - 1),
    data=st.binary(max_size=200),
    chain_id=st.integers(min_value=1, max_value=2**40),
    tx_type=st.sampled_from([0, 1, 2]),
    create=st.booleans(),
)
def test_recovery_matches_eth_account_on_arbitrary_transactions(
    key: bytes,
    nonce: int,
    gas: int,
    value: int,
    data: bytes,
    chain_id: int,
    tx_type: int,
    create: bool,
) -> None:
    account: LocalAccount = Account.from_key(key)
    tx: dict[str, Any] = {
        "to": b"" if create else TO,
        "value": value,
        "gas": gas,
        "nonce": nonce,
        "chainId": chain_id,
        "data": data,
    }
    if tx_type == 2:
        tx.update(type=2, maxFeePerGas=value, maxPriorityFeePerGas=0)
    else:
        tx["gasPrice"] = value
        if tx_type == 1:
            tx.update(type=1, accessList=[])
    raw = _sign(tx, account)
    decoded = decode_raw_transaction(raw)
    assert decoded.sender == account.address.lower()
    assert decoded.sender == Account.recover_transaction(raw).lower()
    assert decoded.nonce == nonce


def _legacy_with_leading_zero_nonce() -> bytes:
    """Nonce 0 as the one-byte string 0x00 instead of the canonical empty string 0x80."""
    raw = _sign(LEGACY)
    assert raw[0] == 0xF8  # long-list header with one length byte...
    assert raw[2] == 0x80  # ...then the nonce
    return raw[:2] + b"\x00" + raw[3:]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "empty"),
        (b"\x80", "not a transaction envelope"),
        (b"\x03" + _sign(DYNAMIC)[1:], "type 3"),
        (b"\x04" + _sign(DYNAMIC)[1:], "type 4"),
        (b"\x00" + _sign(LEGACY), "type 0"),
        (_sign(LEGACY) + b"\x00", "single RLP list"),
        (_sign(LEGACY)[:-5], "truncated|single RLP list"),
        (_sign(DYNAMIC)[:1] + b"\xc3\x01\x02\x03", "must have 12 fields"),
        (_legacy_with_leading_zero_nonce(), "field 0 is not a canonical integer"),
    ],
)
def test_rejects_malformed_or_unaccepted_transactions(raw: bytes, problem: str) -> None:
    with pytest.raises(TxDecodeError, match=problem):
        decode_raw_transaction(raw)


def test_rejects_a_zero_signature() -> None:
    raw = bytearray(_sign(LEGACY))
    # r and s are the last two 32-byte items (0xa0 prefix each): zero them out
    raw[-32:] = b"\x00" * 32
    with pytest.raises(TxDecodeError):
        decode_raw_transaction(bytes(raw))


@pytest.mark.parametrize("value", [None, 5, "", "abc", "0xzz", "0x0"])
def test_parse_hex_bytes_rejects_non_hex(value: object) -> None:
    with pytest.raises(TxDecodeError):
        parse_hex_bytes(value)


# --- the sender decision ------------------------------------------------------------------

OPERATOR = "0x" + "0f" * 20
MEMBER = "0x" + "0e" * 20
OPERATORS = frozenset({OPERATOR})


def _tx(sender: str, to: str | None = TO) -> RawTx:
    return RawTx(sender=sender, to=to, tx_type=2, nonce=0, chain_id=31337)


def test_operator_may_send_and_create() -> None:
    assert sender_refusal(_tx(OPERATOR), OPERATORS, is_member=False) is None
    assert sender_refusal(_tx(OPERATOR, None), OPERATORS, is_member=False) is None


def test_member_may_send_but_not_create() -> None:
    assert sender_refusal(_tx(MEMBER), OPERATORS, is_member=True) is None
    refusal = sender_refusal(_tx(MEMBER, None), OPERATORS, is_member=True)
    assert refusal is not None
    assert refusal.code == UNAUTHORIZED
    assert "contract creation is reserved to the operator" in refusal.message
    assert "dul chain up" in refusal.message  # says how to trust the right operator
    assert creation_refusal(_tx(MEMBER, None), OPERATORS) == refusal


def test_stranger_is_refused_with_its_address() -> None:
    refusal = sender_refusal(_tx(MEMBER), OPERATORS, is_member=False)
    assert refusal is not None
    assert refusal.error() == {
        "code": UNAUTHORIZED,
        "message": f"transaction sender {MEMBER} is not a member of the data space",
    }


def test_without_an_operator_nobody_creates() -> None:
    assert sender_refusal(_tx(OPERATOR, None), frozenset(), is_member=True) is not None


def test_invalid_request_code_is_standard() -> None:
    assert INVALID_REQUEST == -32600


# --- membership oracle (MockTransport instead of a node) ----------------------------------

MEMBERSHIP = "0x" + "cc" * 20


class FakeMembership:
    """An in-memory `Upstream` answering `isAuthorizedSender` from a set, counting calls."""

    def __init__(self, members: set[str]) -> None:
        self.members = members
        self.calls = 0
        self.fail = False

    async def aclose(self) -> None:
        pass

    async def post(self, content: bytes) -> tuple[int, bytes]:
        self.calls += 1
        await asyncio.sleep(0.01)
        if self.fail:
            raise UpstreamError("node down")
        body = json.loads(content)
        assert body["method"] == "eth_call"
        call = body["params"][0]
        assert call["to"] == MEMBERSHIP
        assert call["data"][2:10] == function("Membership", "isAuthorizedSender").selector.hex()
        address = "0x" + call["data"][-40:]
        result = "0x" + ("1" if address in self.members else "0").rjust(64, "0")
        return 200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": result}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write_manifest(path: Path, operator: str | None, membership: str | None) -> None:
    data: dict[str, Any] = {"operator": operator}
    if membership is not None:
        data["contracts"] = {"Membership": {"address": membership}}
    path.write_text(json.dumps(data))


def _oracle(fake: FakeMembership, manifest: Path, clock: Clock) -> MembershipOracle:
    return MembershipOracle(
        upstream=fake,
        sender_check=sender_check(),
        deployment_path=manifest,
        static_operator=None,
        ttl=2.0,
        clock=clock,
    )


def test_membership_is_cached_for_the_ttl(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.json"
    _write_manifest(manifest, OPERATOR, MEMBERSHIP)
    fake, clock = FakeMembership({MEMBER}), Clock()
    oracle = _oracle(fake, manifest, clock)

    async def scenario() -> None:
        assert await oracle.is_member(MEMBER) is True
        assert await oracle.is_member(OPERATOR) is False
        assert await oracle.is_member(MEMBER) is True
        assert fake.calls == 2
        fake.members.clear()
        clock.now += 2.5
        assert await oracle.is_member(MEMBER) is False
        assert fake.calls == 3

    asyncio.run(scenario())
    assert oracle.operators() == frozenset({OPERATOR})


def test_concurrent_lookups_share_one_call(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.json"
    _write_manifest(manifest, OPERATOR, MEMBERSHIP)
    fake = FakeMembership({MEMBER})
    oracle = _oracle(fake, manifest, Clock())

    async def scenario() -> list[bool]:
        return await asyncio.gather(*(oracle.is_member(MEMBER) for _ in range(50)))

    assert asyncio.run(scenario()) == [True] * 50
    assert fake.calls == 1


def test_no_deployment_means_only_the_static_operator(tmp_path: Path) -> None:
    fake = FakeMembership({MEMBER})
    oracle = _oracle(fake, tmp_path / "missing.json", Clock())
    oracle.static_operator = OPERATOR
    assert asyncio.run(oracle.is_member(MEMBER)) is False
    assert fake.calls == 0
    assert oracle.operators() == frozenset({OPERATOR})


def test_a_new_manifest_clears_the_cache(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.json"
    _write_manifest(manifest, OPERATOR, None)
    fake = FakeMembership({MEMBER})
    oracle = _oracle(fake, manifest, Clock())
    assert asyncio.run(oracle.is_member(MEMBER)) is False
    _write_manifest(manifest, MEMBER, MEMBERSHIP)
    assert asyncio.run(oracle.is_member(MEMBER)) is True
    assert oracle.operators() == frozenset({MEMBER})


def test_a_half_written_manifest_keeps_the_previous_view(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.json"
    _write_manifest(manifest, OPERATOR, MEMBERSHIP)
    oracle = _oracle(FakeMembership(set()), manifest, Clock())
    assert oracle.operators() == frozenset({OPERATOR})
    manifest.write_text('{"operator": ')
    assert oracle.operators() == frozenset({OPERATOR})
    assert oracle.membership_address == MEMBERSHIP


def test_a_failing_node_fails_closed(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.json"
    _write_manifest(manifest, OPERATOR, MEMBERSHIP)
    fake = FakeMembership({MEMBER})
    fake.fail = True
    assert asyncio.run(_oracle(fake, manifest, Clock()).is_member(MEMBER)) is False


def test_the_chain_id_of_each_envelope_is_read() -> None:
    account = Account.create()
    base = {"to": "0x" + "11" * 20, "value": 0, "gas": 21_000, "nonce": 3}
    unprotected = account.sign_transaction({**base, "gasPrice": 0})
    eip155 = account.sign_transaction({**base, "gasPrice": 0, "chainId": 31337})
    typed = account.sign_transaction(
        {**base, "chainId": 7, "type": 2, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
    )
    signed = (unprotected, eip155, typed)
    decoded = [decode_raw_transaction(bytes(t.raw_transaction)) for t in signed]
    assert [tx.chain_id for tx in decoded] == [None, 31337, 7]
    assert all(tx.sender == account.address.lower() for tx in decoded)
    refusal = replay_refusal(decoded[0])
    assert refusal is not None
    assert "pre-EIP-155" in refusal.message
    assert replay_refusal(decoded[1]) is None
    assert replay_refusal(decoded[2]) is None
