"""Signing: the `Signer` seam and fast EIP-712 hashing.

Every agreement signature and every access-request signature goes through here, on the gateway's
hot path, so the EIP-712 digest is computed by hand (keccak + precompiled type encoders) and signed
and recovered with libsecp256k1 (coincurve's build; recovery calls it directly, `dul.recovery`):
about 10x faster than eth-account's typed-data path, and cross-checked against it in the tests.
Legacy transactions (the submitter's) are RLP-encoded and signed here; others by eth-account,
imported only then (it costs ~0.6 s to import).

`Signer` is a Protocol so that a KMS or Web3Signer backend can replace `LocalSigner` (a key held
in this process, unlocked from a keystore by `dul.keys.KeyStore`).

Errors (all `DulError`, each with a stable code):

    DulError
    └── SigningError             signing_error
        ├── InvalidPrivateKeyError    invalid_private_key
        ├── InvalidSignatureError     signature_invalid_length | signature_invalid_v |
        │                        signature_invalid_s | signature_invalid | digest_invalid
        └── TypedDataError       typed_data_invalid
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import coincurve
from eth_typing import ChecksumAddress, HexAddress, HexStr

from dul.errors import DulError
from dul.keccak import keccak
from dul.recovery import signer_address

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

__all__ = [
    "DOMAIN_FIELDS",
    "InvalidPrivateKeyError",
    "InvalidSignatureError",
    "LocalSigner",
    "Signer",
    "SigningError",
    "TypedDataError",
    "Types",
    "checksum_address",
    "domain_separator",
    "domain_type",
    "encode_type",
    "recover",
    "sign_typed",
    "struct_hash",
    "struct_hasher",
    "typed_data_digest",
    "typed_data_json",
    "typed_digest",
]

# secp256k1 group order; OpenZeppelin's ECDSA rejects s in the upper half (malleable twins).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
_N_BYTES = SECP256K1_N.to_bytes(32, "big")
_HALF_N_BYTES = SECP256K1_HALF_N.to_bytes(32, "big")
_ZERO_WORD = bytes(32)

Types = Mapping[str, Sequence[Mapping[str, str]]]
"""EIP-712 struct definitions: type name -> ordered [{"name": ..., "type": ...}]."""

# The EIP712Domain fields in the order the standard lists them (the order wallets use).
DOMAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)


class SigningError(DulError):
    code = "signing_error"


class InvalidPrivateKeyError(SigningError):
    code = "invalid_private_key"


class InvalidSignatureError(SigningError):
    """A signature the chain would refuse too (OpenZeppelin ECDSA rules)."""

    code = "signature_invalid"


class TypedDataError(SigningError):
    """Types or message that do not form valid EIP-712 data (never a half-computed digest)."""

    code = "typed_data_invalid"


@runtime_checkable
class Signer(Protocol):
    """What the ledger needs from a key, so a KMS / Web3Signer backend can stand in for it."""

    @property
    def address(self) -> ChecksumAddress: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a 32-byte digest: 65 bytes r || s || v, low s, v in {27, 28}."""
        ...

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        """Sign a transaction dict (web3 field names): the raw signed transaction bytes."""
        ...


# --------------------------------------------------------------------------- addresses


def checksum_address(raw: bytes) -> ChecksumAddress:
    """EIP-55 form of a 20-byte address (2x faster than eth_utils, which re-validates)."""
    hex_addr = raw.hex()
    mask = keccak(hex_addr.encode("ascii")).hex()[: len(hex_addr)]
    digits = [c.upper() if m > "7" else c for c, m in zip(hex_addr, mask, strict=True)]
    return ChecksumAddress(HexAddress(HexStr("0x" + "".join(digits))))


# Recovered signers repeat (a few requesters sign many requests): skip the checksum keccak.
_checksum_cached = functools.lru_cache(maxsize=4096)(checksum_address)

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _address_bytes(value: object) -> bytes:
    """20 address bytes from a hex string (mixed case must be a valid checksum) or raw bytes."""
    if isinstance(value, bytes | bytearray):
        if len(value) != 20:
            raise TypedDataError(f"an address is 20 bytes, got {len(value)}")
        return bytes(value)
    if isinstance(value, str):
        return _parse_address(value)
    raise TypedDataError(f"not an address: {value!r}")


@functools.lru_cache(maxsize=4096)  # the same few accounts recur in every request
def _parse_address(value: str) -> bytes:
    if not _HEX_ADDRESS.fullmatch(value):
        raise TypedDataError(f"not an address: {value!r}")
    raw = bytes.fromhex(value[2:])
    body = value[2:]
    if body != body.lower() and body != body.upper() and checksum_address(raw) != value:
        raise TypedDataError(f"address {value} has a bad EIP-55 checksum")
    return raw


# --------------------------------------------------------------------------- keys and signatures


class LocalSigner:
    """A private key held in this process. Its repr never shows the key."""

    __slots__ = ("_account", "_address", "_key")

    def __init__(self, private_key: bytes | HexStr) -> None:
        try:
            secret = (
                bytes.fromhex(private_key.removeprefix("0x"))
                if isinstance(private_key, str)
                else bytes(private_key)
            )
            if len(secret) != 32:
                raise ValueError("length")
            self._key = coincurve.PrivateKey(secret)
        except ValueError:
            # Never echo the value: it may be a real key with a typo in it.
            raise InvalidPrivateKeyError(
                "a private key is 32 bytes (64 hex digits) in the range 1..n-1"
            ) from None
        self._address = checksum_address(keccak(self._key.public_key.format(False)[1:])[-20:])
        self._account: LocalAccount | None = None

    @property
    def address(self) -> ChecksumAddress:
        return self._address

    def sign_digest(self, digest: bytes) -> bytes:
        if len(digest) != 32:
            raise InvalidSignatureError("a digest is 32 bytes", code="digest_invalid")
        sig = self._key.sign_recoverable(digest, hasher=None)  # libsecp256k1: s is always low
        return sig[:64] + bytes((sig[64] + 27,))

    def sign_transaction(self, tx: Mapping[str, Any]) -> bytes:
        legacy = _legacy_fields(tx)
        if legacy is not None:
            return self._sign_legacy(*legacy)
        if self._account is None:  # built on first use: most signers only sign digests
            from eth_account import Account  # ~0.6 s to import: rarely needed

            self._account = Account.from_key(self._key.secret)
        return bytes(self._account.sign_transaction(dict(tx)).raw_transaction)

    def _sign_legacy(self, fields: list[bytes], chain_id: int) -> bytes:
        """An EIP-155 legacy transaction (what the gateway's submitter sends, ~140 kB of
        calldata each), RLP-encoded here: eth-account took ~2.3 ms a transaction, most of it
        building rlp objects and hashing the calldata twice through pycryptodome; this is the
        two keccaks and one signature. A test holds it to eth-account byte for byte."""
        unsigned = _rlp_list([*fields, _rlp_int(chain_id), _rlp_int(0), _rlp_int(0)])
        sig = self._key.sign_recoverable(keccak(unsigned), hasher=None)
        v = sig[64] + 35 + 2 * chain_id
        r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")
        return _rlp_list([*fields, _rlp_int(v), _rlp_int(r), _rlp_int(s)])

    def __repr__(self) -> str:
        return f"LocalSigner(address={self._address})"


_LEGACY_KEYS = frozenset(("to", "data", "gas", "gasPrice", "nonce", "chainId", "value"))


def _rlp_bytes(value: bytes) -> bytes:
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _rlp_length(len(value), 0x80) + value


def _rlp_int(value: int) -> bytes:
    return _rlp_bytes(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _rlp_length(length: int, offset: int) -> bytes:
    if length <= 55:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size


def _rlp_list(items: Sequence[bytes]) -> bytes:
    payload = b"".join(items)
    return _rlp_length(len(payload), 0xC0) + payload


def _legacy_fields(tx: Mapping[str, Any]) -> tuple[list[bytes], int] | None:
    """The RLP items (nonce, gasPrice, gas, to, value, data) and chain id of a legacy
    transaction given as plain values; None for anything else (typed transactions, no chain
    id, a contract creation, values as strings), which eth-account signs."""
    if (
        not tx.keys() <= _LEGACY_KEYS
        or not {"to", "gas", "gasPrice", "nonce", "chainId"} <= tx.keys()
    ):
        return None
    numbers = [tx["nonce"], tx["gasPrice"], tx["gas"], tx.get("value", 0), tx["chainId"]]
    if any(type(n) is not int or n < 0 or n >= 1 << 256 for n in numbers):
        return None
    data = tx.get("data", b"")
    if isinstance(data, str):
        if not data.startswith("0x"):
            return None
        try:
            data = bytes.fromhex(data[2:])
        except ValueError:
            return None
    if not isinstance(data, bytes | bytearray):
        return None
    address = tx["to"]
    if not isinstance(address, str) or not _HEX_ADDRESS.fullmatch(address):
        return None
    to = bytes.fromhex(address[2:])
    if _checksum_cached(to) != address:  # eth-account takes checksummed addresses only
        return None
    nonce, gas_price, gas, value, chain_id = numbers
    fields = [_rlp_int(nonce), _rlp_int(gas_price), _rlp_int(gas), _rlp_bytes(to)]
    return [*fields, _rlp_int(value), _rlp_bytes(bytes(data))], chain_id


def recover(digest: bytes, signature: bytes) -> ChecksumAddress:
    """The signer of `digest`, refusing what OpenZeppelin's ECDSA.recover refuses.

    Raises InvalidSignatureError for a length other than 65, v not in {27, 28}, s above n/2
    (the malleable twin of a valid signature), r or s zero or out of range.
    """
    if len(digest) != 32:
        raise InvalidSignatureError("a digest is 32 bytes", code="digest_invalid")
    if len(signature) != 65:
        raise InvalidSignatureError(
            f"a signature is 65 bytes (r || s || v), got {len(signature)}",
            code="signature_invalid_length",
        )
    v = signature[64]
    if v not in (27, 28):
        raise InvalidSignatureError(
            f"signature v must be 27 or 28, got {v}", code="signature_invalid_v"
        )
    # Big-endian words of equal length compare as their numbers do: no ints built.
    r, s = signature[:32], signature[32:64]
    if s > _HALF_N_BYTES:
        raise InvalidSignatureError(
            "signature s is in the upper half of the curve order (malleable signature)",
            code="signature_invalid_s",
        )
    if r == _ZERO_WORD or s == _ZERO_WORD or r >= _N_BYTES:
        raise InvalidSignatureError("signature r or s is out of range")
    signer = signer_address(digest, signature[:64], v - 27)
    if signer is None:
        raise InvalidSignatureError("signature does not recover to any public key")
    return signer


# --------------------------------------------------------------------------- EIP-712


def typed_digest(domain_separator: bytes, struct_hash: bytes) -> bytes:
    """keccak256(0x1901 || domainSeparator || hashStruct(message)): what gets signed."""
    return keccak(b"\x19\x01" + domain_separator + struct_hash)


def sign_typed(signer: Signer, domain_separator: bytes, struct_hash: bytes) -> bytes:
    return signer.sign_digest(typed_digest(domain_separator, struct_hash))


_Encoder = Callable[[Any], bytes]
_TypesKey = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
_ARRAY = re.compile(r"^(.+)\[(\d*)\]$")
_UINT = re.compile(r"^uint(\d{1,3})$")
_INT = re.compile(r"^int(\d{1,3})$")
_BYTES_N = re.compile(r"^bytes(\d{1,2})$")


def _freeze(types: Types) -> _TypesKey:
    try:
        return tuple(
            (name, tuple((f["name"], f["type"]) for f in fields)) for name, fields in types.items()
        )
    except (KeyError, TypeError, AttributeError):
        raise TypedDataError(
            'types must map each struct name to a list of {"name": ..., "type": ...}'
        ) from None


def _base_type(type_: str) -> str:
    while (m := _ARRAY.match(type_)) is not None:
        type_ = m.group(1)
    return type_


def _dependencies(primary: str, structs: Mapping[str, tuple[tuple[str, str], ...]]) -> list[str]:
    seen: list[str] = []
    stack = [primary]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.append(name)
        for _, field_type in structs[name]:
            base = _base_type(field_type)
            if base in structs and base not in seen:
                stack.append(base)
    return seen


def _encode_type(primary: str, structs: Mapping[str, tuple[tuple[str, str], ...]]) -> str:
    deps = _dependencies(primary, structs)
    ordered = [primary, *sorted(d for d in deps if d != primary)]
    return "".join(f"{name}({','.join(f'{t} {n}' for n, t in structs[name])})" for name in ordered)


def _int_value(value: object, type_: str) -> int:
    if isinstance(value, bool):
        raise TypedDataError(f"{type_} expects an integer, got a bool")
    if isinstance(value, int):
        return value
    if isinstance(value, str):  # wallets and ethers send big integers as strings
        try:
            return int(value, 16) if value.lower().startswith(("0x", "-0x")) else int(value, 10)
        except ValueError:
            pass
    raise TypedDataError(f"{type_} expects an integer, got {value!r}")


def _bytes_value(value: object, type_: str) -> bytes:
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            pass
    raise TypedDataError(f"{type_} expects bytes or a 0x-hex string, got {value!r}")


def _uint_encoder(bits: int) -> _Encoder:
    limit = 1 << bits
    type_ = f"uint{bits}"

    def encode(value: Any) -> bytes:
        v = _int_value(value, type_)
        if not 0 <= v < limit:
            raise TypedDataError(f"{v} is out of range for {type_}")
        return v.to_bytes(32, "big")

    return encode


def _int_encoder(bits: int) -> _Encoder:
    low, high = -(1 << (bits - 1)), 1 << (bits - 1)
    type_ = f"int{bits}"

    def encode(value: Any) -> bytes:
        v = _int_value(value, type_)
        if not low <= v < high:
            raise TypedDataError(f"{v} is out of range for {type_}")
        return v.to_bytes(32, "big", signed=True)

    return encode


def _bytes_n_encoder(size: int) -> _Encoder:
    type_ = f"bytes{size}"

    def encode(value: Any) -> bytes:
        raw = _bytes_value(value, type_)
        if len(raw) != size:  # stricter than eth-account, which silently pads short values
            raise TypedDataError(f"{type_} expects exactly {size} bytes, got {len(raw)}")
        return raw.ljust(32, b"\0")

    return encode


def _encode_address(value: Any) -> bytes:
    return b"\0" * 12 + _address_bytes(value)


def _encode_bool(value: Any) -> bytes:
    if not isinstance(value, bool):
        raise TypedDataError(f"bool expects True or False, got {value!r}")
    return (1 if value else 0).to_bytes(32, "big")


def _encode_string(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypedDataError(f"string expects a str, got {type(value).__name__}")
    return keccak(value.encode("utf-8"))


def _encode_dynamic_bytes(value: Any) -> bytes:
    return keccak(_bytes_value(value, "bytes"))


def _atomic_encoder(type_: str) -> _Encoder | None:
    if type_ == "address":
        return _encode_address
    if type_ == "bool":
        return _encode_bool
    if type_ == "string":
        return _encode_string
    if type_ == "bytes":
        return _encode_dynamic_bytes
    for pattern, make in ((_UINT, _uint_encoder), (_INT, _int_encoder)):
        if (m := pattern.match(type_)) is not None:
            bits = int(m.group(1))
            if bits % 8 or not 8 <= bits <= 256:
                return None
            return make(bits)
    if (m := _BYTES_N.match(type_)) is not None:
        size = int(m.group(1))
        return _bytes_n_encoder(size) if 1 <= size <= 32 else None
    return None


class _Compiled:
    """Encoders for every struct of one `types` set, built once and reused per message."""

    def __init__(self, frozen: _TypesKey) -> None:
        self.structs = dict(frozen)
        if len(self.structs) != len(frozen):
            raise TypedDataError("a struct type is defined twice")
        self.hashers: dict[str, Callable[[Mapping[str, Any]], bytes]] = {}

    def hasher(self, name: str) -> Callable[[Mapping[str, Any]], bytes]:
        if name not in self.structs:
            raise TypedDataError(f"unknown struct type {name!r}")
        if name not in self.hashers:
            self.hashers[name] = self._build(name)
        return self.hashers[name]

    def _build(self, name: str) -> Callable[[Mapping[str, Any]], bytes]:
        fields = self.structs[name]
        names = [n for n, _ in fields]
        if len(set(names)) != len(names):
            raise TypedDataError(f"struct {name} has a duplicate field name")
        type_hash = keccak(_encode_type(name, self.structs).encode("utf-8"))
        # Struct-typed fields look their hasher up lazily, so recursive types need no ordering.
        encoders = [(n, self._encoder(t, f"{name}.{n}")) for n, t in fields]

        def hash_struct(message: Mapping[str, Any]) -> bytes:
            if not isinstance(message, Mapping):
                raise TypedDataError(f"{name} expects an object, got {type(message).__name__}")
            parts = [type_hash]
            for field, encode in encoders:
                try:
                    value = message[field]
                except KeyError:
                    raise TypedDataError(f"{name}.{field} is missing") from None
                parts.append(encode(value))
            return keccak(b"".join(parts))

        return hash_struct

    def _encoder(self, type_: str, where: str) -> _Encoder:
        if (m := _ARRAY.match(type_)) is not None:
            element = self._encoder(m.group(1), where)
            length = int(m.group(2)) if m.group(2) else None

            def encode_array(value: Any) -> bytes:
                if not isinstance(value, list | tuple):
                    raise TypedDataError(f"{where} expects a list, got {type(value).__name__}")
                if length is not None and len(value) != length:
                    raise TypedDataError(f"{where} expects {length} items, got {len(value)}")
                return keccak(b"".join([element(item) for item in value]))

            return encode_array
        if type_ in self.structs:
            struct_name = type_
            return lambda value: self.hasher(struct_name)(value)
        atomic = _atomic_encoder(type_)
        if atomic is None:
            raise TypedDataError(f"{where} has an unknown type {type_!r}")
        return atomic


@functools.lru_cache(maxsize=256)
def _compiled(frozen: _TypesKey) -> _Compiled:
    return _Compiled(frozen)


def struct_hasher(type_name: str, types: Types) -> Callable[[Mapping[str, Any]], bytes]:
    """A reusable hashStruct for one type: compile once, then ~µs per message on hot paths."""
    return _compiled(_freeze(types)).hasher(type_name)


def struct_hash(type_name: str, types: Types, message: Mapping[str, Any]) -> bytes:
    """EIP-712 hashStruct(message): keccak(typeHash || encodeData(message)).

    Atomic types (address, bool, uintN, intN, bytesN, bytes, string), arrays (fixed or dynamic,
    nested) and nested structs. Integers may be given as ints or decimal / 0x strings.
    """
    return struct_hasher(type_name, types)(message)


def encode_type(type_name: str, types: Types) -> str:
    """The EIP-712 encodeType string, e.g. "Mail(Person from,string contents)Person(...)"."""
    structs = dict(_freeze(types))
    if type_name not in structs:
        raise TypedDataError(f"unknown struct type {type_name!r}")
    return _encode_type(type_name, structs)


def domain_type(domain: Mapping[str, Any]) -> list[dict[str, str]]:
    """The EIP712Domain fields a domain uses, in the standard order."""
    unknown = set(domain) - {n for n, _ in DOMAIN_FIELDS}
    if unknown:
        raise TypedDataError(f"unknown EIP712Domain fields: {sorted(unknown)}")
    return [{"name": n, "type": t} for n, t in DOMAIN_FIELDS if n in domain]


def domain_separator(
    name: str, version: str, chain_id: int, verifying_contract: ChecksumAddress | bytes
) -> bytes:
    """hashStruct of EIP712Domain(string name,string version,uint256 chainId,address ...)."""
    domain = {
        "name": name,
        "version": version,
        "chainId": chain_id,
        "verifyingContract": verifying_contract,
    }
    return struct_hash("EIP712Domain", {"EIP712Domain": domain_type(domain)}, domain)


def _to_json(type_: str, value: Any, structs: Mapping[str, tuple[tuple[str, str], ...]]) -> Any:
    if (m := _ARRAY.match(type_)) is not None:
        return [_to_json(m.group(1), item, structs) for item in value]
    if type_ in structs:
        return {n: _to_json(t, value[n], structs) for n, t in structs[type_]}
    if type_ == "address":
        return checksum_address(_address_bytes(value))
    if type_ == "bytes" or _BYTES_N.match(type_):
        return "0x" + _bytes_value(value, type_).hex()
    if _UINT.match(type_) or _INT.match(type_):
        return str(_int_value(value, type_))  # decimal strings: JavaScript numbers lose > 2^53
    return value


def typed_data_json(
    domain: Mapping[str, Any], types: Types, primary_type: str, message: Mapping[str, Any]
) -> dict[str, Any]:
    """The standard EIP-712 JSON object a wallet signs (eth_signTypedData_v4).

    bytes become 0x-hex, addresses checksummed, message integers decimal strings; the domain's
    chainId stays a number because wallets compare it with their chain id. The message is
    validated by hashing it, so a wallet is never shown data the ledger would not accept.
    """
    domain_fields = domain_type(domain)
    all_types: dict[str, list[dict[str, str]]] = {"EIP712Domain": domain_fields}
    all_types.update({k: [dict(f) for f in v] for k, v in types.items() if k != "EIP712Domain"})
    struct_hash(primary_type, all_types, message)
    structs = dict(_freeze(all_types))
    json_domain = {n: _to_json(t, domain[n], structs) for n, t in DOMAIN_FIELDS if n in domain}
    if "chainId" in json_domain:
        json_domain["chainId"] = _int_value(domain["chainId"], "uint256")
    return {
        "types": all_types,
        "domain": json_domain,
        "primaryType": primary_type,
        "message": _to_json(primary_type, message, structs),
    }


def typed_data_digest(typed_data: Mapping[str, Any]) -> bytes:
    """The digest of a full EIP-712 JSON object (what a wallet showed and signed)."""
    try:
        types: Types = typed_data["types"]
        domain: Mapping[str, Any] = typed_data["domain"]
        primary: str = typed_data["primaryType"]
        message: Mapping[str, Any] = typed_data["message"]
    except (KeyError, TypeError):
        raise TypedDataError("typed data needs types, domain, primaryType and message") from None
    domain_types = {"EIP712Domain": types.get("EIP712Domain") or domain_type(domain)}
    separator = struct_hash("EIP712Domain", domain_types, domain)
    message_types = {k: v for k, v in types.items() if k != "EIP712Domain"}
    return typed_digest(separator, struct_hash(primary, message_types, message))
