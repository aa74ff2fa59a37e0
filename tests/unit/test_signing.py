"""Signing and EIP-712: our fast path must agree byte for byte with eth-account, and refuse the
signatures OpenZeppelin's ECDSA refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dul.signing import (
    SECP256K1_N,
    InvalidPrivateKeyError,
    InvalidSignatureError,
    LocalSigner,
    Signer,
    TypedDataError,
    Types,
    checksum_address,
    domain_separator,
    encode_type,
    recover,
    sign_typed,
    struct_hash,
    struct_hasher,
    typed_data_digest,
    typed_data_json,
    typed_digest,
)

# The example of EIP-712 itself, with the digest and signature the EIP publishes.
MAIL_TYPES: Types = {
    "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
    "Mail": [
        {"name": "from", "type": "Person"},
        {"name": "to", "type": "Person"},
        {"name": "contents", "type": "string"},
    ],
}
MAIL = {
    "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
    "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
    "contents": "Hello, Bob!",
}
MAIL_CONTRACT = ChecksumAddress(to_checksum_address("0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"))
MAIL_DOMAIN = {
    "name": "Ether Mail",
    "version": "1",
    "chainId": 1,
    "verifyingContract": MAIL_CONTRACT,
}
COW_KEY = keccak(b"cow")

# A shape like the ledger's agreement: every atomic kind, arrays, a nested struct array.
AGREEMENT_TYPES: Types = {
    "Agreement": [
        {"name": "id", "type": "bytes32"},
        {"name": "holder", "type": "address"},
        {"name": "datasets", "type": "bytes32[]"},
        {"name": "fields", "type": "uint256[]"},
        {"name": "codes", "type": "uint32[]"},
        {"name": "tier", "type": "uint8"},
        {"name": "validUntil", "type": "uint64"},
        {"name": "terms", "type": "string"},
    ],
}


def test_eip712_reference_vector() -> None:
    assert encode_type("Mail", MAIL_TYPES) == (
        "Mail(Person from,Person to,string contents)Person(string name,address wallet)"
    )
    ds = domain_separator("Ether Mail", "1", 1, MAIL_CONTRACT)
    assert ds.hex() == "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
    sh = struct_hash("Mail", MAIL_TYPES, MAIL)
    assert sh.hex() == "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
    digest = typed_digest(ds, sh)
    assert digest.hex() == "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    signer = LocalSigner(COW_KEY)
    assert signer.address == "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    sig = sign_typed(signer, ds, sh)
    assert sig[64] == 28
    assert sig[:32].hex() == "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    assert sig[32:64].hex() == "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
    assert recover(digest, sig) == signer.address


SHAPES: list[tuple[str, Types, dict[str, Any]]] = [
    ("Mail", MAIL_TYPES, MAIL),
    (
        "Group",
        {
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Group": [
                {"name": "members", "type": "Person[]"},
                {"name": "pair", "type": "Person[2]"},
                {"name": "grid", "type": "uint16[][]"},
                {"name": "flags", "type": "bool[3]"},
            ],
        },
        {
            "members": [
                {"name": "a", "wallet": "0x" + "11" * 20},
                {"name": "b", "wallet": "0x" + "22" * 20},
            ],
            "pair": [
                {"name": "c", "wallet": "0x" + "33" * 20},
                {"name": "d", "wallet": "0x" + "44" * 20},
            ],
            "grid": [[1, 2], [], [65535]],
            "flags": [True, False, True],
        },
    ),
    (
        "Atoms",
        {
            "Atoms": [
                {"name": "b", "type": "bool"},
                {"name": "i8", "type": "int8"},
                {"name": "i256", "type": "int256"},
                {"name": "u256", "type": "uint256"},
                {"name": "b1", "type": "bytes1"},
                {"name": "b20", "type": "bytes20"},
                {"name": "dyn", "type": "bytes"},
                {"name": "s", "type": "string"},
                {"name": "empty", "type": "string[]"},
            ]
        },
        {
            "b": False,
            "i8": -128,
            "i256": -(2**255),
            "u256": 2**256 - 1,
            "b1": b"\xff",
            "b20": "0x" + "ab" * 20,
            "dyn": b"\x00\x01" * 40,
            "s": "Zürich ✓ 患者",
            "empty": [],
        },
    ),
    (
        "Agreement",
        AGREEMENT_TYPES,
        {
            "id": b"\x07" * 32,
            "holder": "0x" + "aa" * 20,
            "datasets": [b"\x01" * 32, b"\x02" * 32],
            "fields": [0, 1, 2**200],
            "codes": [46, 25],
            "tier": 3,
            "validUntil": 2**64 - 1,
            "terms": "",
        },
    ),
]


@pytest.mark.parametrize(("primary", "types", "message"), SHAPES, ids=[s[0] for s in SHAPES])
def test_struct_hash_matches_eth_account(
    primary: str, types: Types, message: dict[str, Any]
) -> None:
    reference = encode_typed_data(MAIL_DOMAIN, dict(types), message)
    assert struct_hash(primary, types, message) == reference.body
    assert struct_hasher(primary, types)(message) == reference.body


def _agreement_messages() -> st.SearchStrategy[dict[str, Any]]:
    b32 = st.binary(min_size=32, max_size=32)
    return st.fixed_dictionaries(
        {
            "id": b32,
            "holder": st.binary(min_size=20, max_size=20).map(checksum_address),
            "datasets": st.lists(b32, max_size=5),
            "fields": st.lists(st.integers(0, 2**256 - 1), max_size=5),
            "codes": st.lists(st.integers(0, 2**32 - 1), max_size=5),
            "tier": st.integers(0, 255),
            "validUntil": st.integers(0, 2**64 - 1),
            "terms": st.text(max_size=40),
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=_agreement_messages(),
    key=st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k) < SECP256K1_N),
    chain_id=st.integers(1, 2**64),
    contract=st.binary(min_size=20, max_size=20).map(checksum_address),
)
def test_fast_path_equals_eth_account(
    message: dict[str, Any], key: bytes, chain_id: int, contract: ChecksumAddress
) -> None:
    domain = {"name": "DataUseLedger", "version": "1", "chainId": chain_id}
    domain["verifyingContract"] = contract
    reference = encode_typed_data(domain, dict(AGREEMENT_TYPES), message)
    ds = domain_separator("DataUseLedger", "1", chain_id, contract)
    sh = struct_hash("Agreement", AGREEMENT_TYPES, message)
    assert (ds, sh) == (reference.header, reference.body)

    signer = LocalSigner(key)
    ours = signer.sign_digest(typed_digest(ds, sh))
    theirs = Account.sign_message(reference, key)
    assert ours == bytes(theirs.signature)
    assert recover(typed_digest(ds, sh), ours) == signer.address
    assert Account.recover_message(reference, signature=ours) == signer.address


def test_typed_data_json_is_what_wallets_and_eth_account_sign() -> None:
    message = SHAPES[3][2]
    typed = typed_data_json(MAIL_DOMAIN, AGREEMENT_TYPES, "Agreement", message)
    round_tripped = json.loads(json.dumps(typed))  # plain JSON: no bytes, no big numbers
    assert round_tripped == typed
    assert typed["types"]["EIP712Domain"] == [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ]
    assert typed["domain"]["chainId"] == 1
    assert typed["message"]["fields"] == ["0", "1", str(2**200)]
    assert typed["message"]["id"] == "0x" + "07" * 32
    assert typed["message"]["holder"] == to_checksum_address("0x" + "aa" * 20)
    expected = typed_digest(
        domain_separator("Ether Mail", "1", 1, MAIL_CONTRACT),
        struct_hash("Agreement", AGREEMENT_TYPES, message),
    )
    assert typed_data_digest(typed) == expected
    reference = encode_typed_data(full_message=round_tripped)
    assert keccak(b"\x19\x01" + reference.header + reference.body) == expected


def test_typed_data_json_refuses_a_message_the_ledger_would_not_accept() -> None:
    without_terms = {k: v for k, v in SHAPES[3][2].items() if k != "terms"}
    with pytest.raises(TypedDataError, match=r"Agreement\.terms is missing"):
        typed_data_json(MAIL_DOMAIN, AGREEMENT_TYPES, "Agreement", without_terms)
    with pytest.raises(TypedDataError, match="unknown EIP712Domain fields"):
        typed_data_json({"name": "x", "chain": 1}, AGREEMENT_TYPES, "Agreement", SHAPES[3][2])


@pytest.mark.parametrize(
    ("type_", "value", "match"),
    [
        ("uint8", 256, "out of range for uint8"),
        ("uint8", -1, "out of range for uint8"),
        ("int8", 128, "out of range for int8"),
        ("uint256", True, "got a bool"),
        ("uint256", "twelve", "expects an integer"),
        ("bool", 1, "True or False"),
        ("bytes32", b"\x01" * 31, "exactly 32 bytes"),
        ("bytes32", "0xzz", "expects bytes"),
        ("bytes", 5, "expects bytes"),
        ("string", b"x", "expects a str"),
        ("address", "0x1234", "not an address"),
        ("address", "0xcD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826", "bad EIP-55 checksum"),
        ("uint256[]", 5, "expects a list"),
        ("uint256[2]", [1], "expects 2 items"),
        ("uint7", 1, "unknown type"),
        ("bytes33", b"", "unknown type"),
        ("Nope", {}, "unknown type"),
    ],
)
def test_bad_values_are_refused_clearly(type_: str, value: object, match: str) -> None:
    types: Types = {"T": [{"name": "v", "type": type_}]}
    with pytest.raises(TypedDataError, match=match):
        struct_hash("T", types, {"v": value})


def test_integers_as_strings_hash_like_integers() -> None:
    types: Types = {"T": [{"name": "a", "type": "uint256"}, {"name": "b", "type": "int16"}]}
    assert struct_hash("T", types, {"a": "1000", "b": "-7"}) == struct_hash(
        "T", types, {"a": 1000, "b": -7}
    )
    assert struct_hash("T", types, {"a": "0x3e8", "b": -7}) == struct_hash(
        "T", types, {"a": 1000, "b": -7}
    )


def test_malformed_types_and_messages() -> None:
    with pytest.raises(TypedDataError, match="types must map"):
        struct_hash("T", {"T": ["uint256 a"]}, {})  # type: ignore[list-item]
    with pytest.raises(TypedDataError, match="unknown struct type"):
        struct_hash("Missing", MAIL_TYPES, {})
    with pytest.raises(TypedDataError, match="expects an object"):
        struct_hash("Mail", MAIL_TYPES, {**MAIL, "from": "Cow"})
    with pytest.raises(TypedDataError, match="duplicate field"):
        struct_hash("T", {"T": [{"name": "a", "type": "bool"}] * 2}, {"a": True})
    with pytest.raises(TypedDataError, match="needs types"):
        typed_data_digest({"types": {}})


def test_recursive_struct_types_hash() -> None:
    types: Types = {
        "Node": [{"name": "label", "type": "string"}, {"name": "children", "type": "Node[]"}]
    }
    leaf: dict[str, Any] = {"label": "leaf", "children": []}
    tree: dict[str, Any] = {"label": "root", "children": [leaf]}
    leaf_hash = struct_hash("Node", types, leaf)
    type_hash = keccak(b"Node(string label,Node[] children)")
    assert struct_hash("Node", types, tree) == keccak(
        type_hash + keccak(b"root") + keccak(leaf_hash)
    )


# ----------------------------------------------------------------------------- signatures


def _signed() -> tuple[LocalSigner, bytes, bytes]:
    signer = LocalSigner(COW_KEY)
    digest = keccak(b"access request")
    return signer, digest, signer.sign_digest(digest)


def test_signatures_are_low_s_with_v_27_or_28() -> None:
    signer = LocalSigner(COW_KEY)
    for i in range(50):
        sig = signer.sign_digest(keccak(i.to_bytes(4)))
        assert len(sig) == 65
        assert sig[64] in (27, 28)
        assert int.from_bytes(sig[32:64]) <= SECP256K1_N // 2


def test_malleable_twin_is_refused() -> None:
    _, digest, sig = _signed()
    s = int.from_bytes(sig[32:64])
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32) + bytes((55 - sig[64],))
    # The twin is a valid secp256k1 signature by the same key; the ledger must not accept it.
    assert Account._recover_hash(digest, signature=twin) == _signed()[0].address
    with pytest.raises(InvalidSignatureError, match="malleable") as err:
        recover(digest, twin)
    assert err.value.code == "signature_invalid_s"


@pytest.mark.parametrize("v", [0, 1, 26, 29, 255])
def test_bad_v_is_refused(v: int) -> None:
    _, digest, sig = _signed()
    with pytest.raises(InvalidSignatureError, match="v must be 27 or 28") as err:
        recover(digest, sig[:64] + bytes((v,)))
    assert err.value.code == "signature_invalid_v"


def test_bad_lengths_and_ranges_are_refused() -> None:
    _, digest, sig = _signed()
    with pytest.raises(InvalidSignatureError) as err:
        recover(digest, sig[:64])
    assert err.value.code == "signature_invalid_length"
    with pytest.raises(InvalidSignatureError) as err:
        recover(digest[:31], sig)
    assert err.value.code == "digest_invalid"
    for r in (0, SECP256K1_N, 2**256 - 1):
        with pytest.raises(InvalidSignatureError) as err:
            recover(digest, r.to_bytes(32) + sig[32:])
        assert err.value.code == "signature_invalid"
    with pytest.raises(InvalidSignatureError) as err:
        recover(digest, sig[:32] + bytes(32) + sig[64:])
    assert err.value.code == "signature_invalid"


def test_tampered_digest_recovers_someone_else() -> None:
    signer, digest, sig = _signed()
    assert recover(keccak(digest), sig) != signer.address


def test_local_signer_is_a_signer_and_hides_its_key() -> None:
    signer = LocalSigner("0x" + COW_KEY.hex())  # type: ignore[arg-type]
    assert isinstance(signer, Signer)
    assert COW_KEY.hex() not in repr(signer)
    assert signer.address in repr(signer)
    with pytest.raises(InvalidSignatureError):
        signer.sign_digest(b"short")


@pytest.mark.parametrize(
    "key", [b"", b"\x00" * 32, SECP256K1_N.to_bytes(32), b"\x01" * 31, "0xnothex" + "0" * 58]
)
def test_invalid_private_keys_are_refused_without_echo(key: bytes | str) -> None:
    with pytest.raises(InvalidPrivateKeyError) as err:
        LocalSigner(key)  # type: ignore[arg-type]
    text = str(err.value)
    assert (key.hex() if isinstance(key, bytes) else key) not in text or not key
    assert err.value.code == "invalid_private_key"


def test_sign_transaction_matches_eth_account() -> None:
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": 7,
        "to": "0x" + "12" * 20,
        "value": 0,
        "gas": 100_000,
        "maxFeePerGas": 0,
        "maxPriorityFeePerGas": 0,
        "data": "0x1234",
    }
    raw = LocalSigner(COW_KEY).sign_transaction(tx)
    assert isinstance(raw, bytes)
    assert raw == bytes(Account.sign_transaction(tx, COW_KEY).raw_transaction)
    assert Account.recover_transaction(raw) == LocalSigner(COW_KEY).address


def test_checksum_address_matches_eth_utils() -> None:
    for i in range(200):
        raw = keccak(i.to_bytes(4))[:20]
        assert checksum_address(raw) == to_checksum_address(raw)


def test_legacy_transactions_are_signed_as_eth_account_signs_them() -> None:
    """The gateway's own legacy (EIP-155) transactions are RLP-encoded and signed without
    eth-account: the bytes are eth-account's, at the edges of every field (zero, one byte
    below 0x80, a 56-byte string, a ~140 kB batch), and what it does not take as plain
    values still goes to eth-account."""
    signer = LocalSigner(COW_KEY)
    to = [checksum_address(bytes([b]) * 20) for b in (0x12, 0xAB, 0xCD, 0xEF)]
    cases = [
        {"to": to[0], "data": b"", "gas": 0, "gasPrice": 0, "nonce": 0, "chainId": 1},
        {"to": to[1], "data": b"\x7f", "gas": 21_000, "gasPrice": 1,
         "nonce": 0x7F, "chainId": 31337, "value": 0},
        {"to": to[2], "data": bytes(range(56)), "gas": 2**24, "gasPrice": 0,
         "nonce": 0x80, "chainId": 2**32 - 1, "value": 10**18},
        {"to": to[3], "data": "0x" + "ab" * (256 * 544 + 68),
         "gas": 15_000_000, "gasPrice": 0, "nonce": 123_456, "chainId": 1337, "value": 0},
    ]  # fmt: skip
    for tx in cases:
        raw = signer.sign_transaction(tx)
        assert raw == bytes(Account.sign_transaction(tx, COW_KEY).raw_transaction), tx
        assert Account.recover_transaction(raw) == signer.address
    no_chain = {"to": to[0], "data": b"", "gas": 1, "gasPrice": 0, "nonce": 0}
    assert signer.sign_transaction(no_chain) == bytes(
        Account.sign_transaction(no_chain, COW_KEY).raw_transaction
    )
    lower = {**cases[1], "to": to[1].lower()}  # eth-account refuses it: so does the signer
    with pytest.raises(TypeError):
        Account.sign_transaction(lower, COW_KEY)
    with pytest.raises(TypeError):
        signer.sign_transaction(lower)
