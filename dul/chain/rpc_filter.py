"""The permissioned endpoint's policy, as plain Python: which JSON-RPC methods pass, who may send.

Kept free of HTTP and web3 so every decision is unit-tested in microseconds; `rpc_proxy`
does the I/O (forwarding, the Membership look-up) around it.

Sender recovery is a small strict RLP decoder plus secp256k1 public-key recovery (coincurve):
about 3x faster than `eth_account.Account.recover_transaction` on the hot path, and
checked against it in the unit tests. Only canonical encodings are accepted, so the sender
seen here is the sender the node will see (a canonical RLP decoding is unique).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import coincurve

from dul.keccak import keccak

# JSON-RPC error codes (EIP-1474).
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
UNAUTHORIZED: Final = -32003  # "transaction rejected"

#: Standard read methods a member's tooling (web3.py, ethers, the audit indexer) needs.
READ_METHODS: Final = frozenset(
    {
        "eth_blockNumber",
        "eth_chainId",
        "eth_call",
        "eth_estimateGas",
        "eth_createAccessList",
        "eth_feeHistory",  # the node's own answer: base fees and rewards are zero there too
        "eth_blobBaseFee",
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getProof",
        "eth_getTransactionCount",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getBlockReceipts",
        "eth_getBlockTransactionCountByHash",
        "eth_getBlockTransactionCountByNumber",
        "eth_getUncleCountByBlockHash",
        "eth_getUncleCountByBlockNumber",
        "eth_getTransactionByHash",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionReceipt",
        "eth_getLogs",
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
        "eth_syncing",
        "eth_protocolVersion",
        "net_version",
        "net_listening",
        "net_peerCount",
        "web3_clientVersion",
        "web3_sha3",
    }
)

#: Methods that submit a signed transaction: allowed, but the sender is checked first.
SEND_METHODS: Final = frozenset({"eth_sendRawTransaction", "eth_sendRawTransactionSync"})

#: The embedded node runs at gas price and base fee zero (`dul chain up` starts it so) and
#: accounts hold no ether.
GAS_PRICE: Final = 0

#: Answered by the proxy itself. No accounts are unlocked here. The fee methods answer the
#: node's real price: anvil reports a 1 gwei suggestion even at gas price zero, and a wallet
#: that pays it (ethers' and web3.py's defaults) would fail "insufficient funds".
LOCAL_ANSWERS: Final[dict[str, Any]] = {
    "eth_accounts": [],
    "eth_gasPrice": hex(GAS_PRICE),
    "eth_maxPriorityFeePerGas": hex(GAS_PRICE),
}

#: Transaction envelope types accepted: legacy, EIP-2930, EIP-1559. Blob (3) and set-code (4)
#: transactions are refused: the data space has no use for them and 7702 authorizations
#: would let one account's code be changed by another's transaction.
ACCEPTED_TX_TYPES: Final = frozenset({0, 1, 2})


#: Methods that run a call; beyond the call and the block, the node takes a state override (any
#: code, balance or storage at any address) and a block override (any number, time, coinbase).
CALL_METHODS: Final = frozenset({"eth_call", "eth_estimateGas", "eth_createAccessList"})


def override_refusal(method: str, params: object) -> str | None:
    """Why a call is refused: overrides, or parameters by name (where they could hide one).
    None for the standard `[call]` / `[call, block]`."""
    if method not in CALL_METHODS:
        return None
    if not isinstance(params, list):
        return f"{method} takes its parameters as an array: [call, block]; overrides are refused"
    if len(params) > 2:
        return (
            f"{method} takes [call, block] only: state and block overrides are not available on "
            "the permissioned data-space endpoint"
        )
    return None


class MethodClass(Enum):
    FORWARD = "forward"
    SEND = "send"
    LOCAL = "local"
    REFUSED = "refused"


def classify_method(method: str) -> MethodClass:
    """Allowlist: anything unnamed here (anvil_*, evm_*, eth_sendTransaction…) is refused."""
    if method in READ_METHODS:
        return MethodClass.FORWARD
    if method in SEND_METHODS:
        return MethodClass.SEND
    if method in LOCAL_ANSWERS:
        return MethodClass.LOCAL
    return MethodClass.REFUSED


def method_refusal_message(method: str) -> str:
    return f"method {method} is not available on the permissioned data-space endpoint"


class TxDecodeError(ValueError):
    """The raw transaction is not a canonical, signed, accepted-type transaction."""


@dataclass(frozen=True, slots=True)
class RawTx:
    """What the policy needs from a signed transaction."""

    sender: str  # lower-case 0x address
    to: str | None  # lower-case 0x address; None for contract creation
    tx_type: int
    nonce: int
    chain_id: int | None  # None: a legacy transaction without EIP-155 replay protection


# --- RLP (strict) ------------------------------------------------------------------------


def _rlp_item(data: bytes, pos: int) -> tuple[bool, int, int]:
    """Return (is_list, payload_start, payload_end) of the item at `pos`, rejecting
    non-canonical encodings."""
    if pos >= len(data):
        raise TxDecodeError("truncated RLP")
    b0 = data[pos]
    if b0 < 0x80:
        return False, pos, pos + 1
    if b0 < 0xB8:
        start, length = pos + 1, b0 - 0x80
        if length == 1 and start < len(data) and data[start] < 0x80:
            raise TxDecodeError("non-canonical single byte")
        is_list = False
    elif b0 < 0xC0:
        ll = b0 - 0xB7
        start, length = pos + 1 + ll, _long_length(data, pos + 1, ll)
        is_list = False
    elif b0 < 0xF8:
        start, length, is_list = pos + 1, b0 - 0xC0, True
    else:
        ll = b0 - 0xF7
        start, length = pos + 1 + ll, _long_length(data, pos + 1, ll)
        is_list = True
    end = start + length
    if end > len(data):
        raise TxDecodeError("truncated RLP")
    return is_list, start, end


def _long_length(data: bytes, pos: int, ll: int) -> int:
    raw = data[pos : pos + ll]
    if len(raw) != ll or raw[0] == 0:
        raise TxDecodeError("non-canonical RLP length")
    length = int.from_bytes(raw, "big")
    if length < 56:
        raise TxDecodeError("non-canonical RLP length")
    return length


def _rlp_list_fields(data: bytes) -> list[tuple[bool, int, int]]:
    """Decode `data` as exactly one RLP list; return its items' (is_list, start, end)."""
    is_list, start, end = _rlp_item(data, 0)
    if not is_list or end != len(data):
        raise TxDecodeError("transaction is not a single RLP list")
    items = []
    pos = start
    while pos < end:
        item = _rlp_item(data, pos)
        items.append(item)
        pos = item[2]
    if pos != end:
        raise TxDecodeError("truncated RLP list")
    return items


def _rlp_length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(raw)]) + raw


def _rlp_uint(value: int) -> bytes:
    if value == 0:
        return b"\x80"
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    if len(raw) == 1 and raw[0] < 0x80:
        return raw
    return _rlp_length_prefix(len(raw), 0x80) + raw


def _uint(data: bytes, item: tuple[bool, int, int], name: str) -> int:
    is_list, start, end = item
    if is_list:
        raise TxDecodeError(f"{name} must be a byte string")
    if end - start > 32 or (end > start and data[start] == 0):
        raise TxDecodeError(f"{name} is not a canonical integer")
    return int.from_bytes(data[start:end], "big")


def _address(data: bytes, item: tuple[bool, int, int]) -> str | None:
    is_list, start, end = item
    if is_list or end - start not in (0, 20):
        raise TxDecodeError("'to' must be empty or a 20-byte address")
    return None if end == start else "0x" + data[start:end].hex()


# --- sender recovery ---------------------------------------------------------------------

_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_FIELD_COUNT: Final = {0: 9, 1: 11, 2: 12}
_TO_INDEX: Final = {0: 3, 1: 4, 2: 5}
_NONCE_INDEX: Final = {0: 0, 1: 1, 2: 1}
_UINT_INDEXES: Final = {0: (0, 1, 2, 4), 1: (0, 1, 2, 3, 5), 2: (0, 1, 2, 3, 4, 6)}
_DATA_INDEX: Final = {0: 5, 1: 6, 2: 7}


def decode_raw_transaction(raw: bytes) -> RawTx:
    """Decode a signed legacy / EIP-2930 / EIP-1559 transaction and recover its sender."""
    if not raw:
        raise TxDecodeError("empty transaction")
    if raw[0] >= 0xC0:
        tx_type, body = 0, raw
    elif raw[0] <= 0x7F:
        tx_type, body = raw[0], raw[1:]
        if tx_type not in ACCEPTED_TX_TYPES or tx_type == 0:
            raise TxDecodeError(f"transaction type {tx_type} is not accepted")
    else:
        raise TxDecodeError("not a transaction envelope")
    items = _rlp_list_fields(body)
    if len(items) != _FIELD_COUNT[tx_type]:
        raise TxDecodeError(f"type-{tx_type} transaction must have {_FIELD_COUNT[tx_type]} fields")
    for index in _UINT_INDEXES[tx_type]:
        _uint(body, items[index], f"field {index}")
    if items[_DATA_INDEX[tx_type]][0] or (tx_type > 0 and not items[-4][0]):
        raise TxDecodeError("data must be a byte string and the access list a list")
    v = _uint(body, items[-3], "v")
    r = _uint(body, items[-2], "r")
    s = _uint(body, items[-1], "s")
    if not (0 < r < _SECP256K1_N and 0 < s < _SECP256K1_N):
        raise TxDecodeError("signature out of range")
    # The unsigned fields are the list payload up to the end of the 4th-from-last item.
    _, list_start, _ = _rlp_item(body, 0)
    unsigned_payload = body[list_start : items[-4][2]]
    chain_id: int | None = None
    if tx_type == 0:
        if v in (27, 28):
            rec_id = v - 27
        elif v >= 35:
            chain_id, rec_id = (v - 35) // 2, (v - 35) % 2
            unsigned_payload += _rlp_uint(chain_id) + b"\x80\x80"
        else:
            raise TxDecodeError("invalid legacy v")
        signing = _rlp_length_prefix(len(unsigned_payload), 0xC0) + unsigned_payload
    else:
        if v not in (0, 1):
            raise TxDecodeError("invalid y-parity")
        rec_id = v
        chain_id = _uint(body, items[0], "chainId")
        signing = (
            bytes([tx_type]) + _rlp_length_prefix(len(unsigned_payload), 0xC0) + unsigned_payload
        )
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([rec_id])
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            signature, keccak(signing), hasher=None
        ).format(compressed=False)
    except Exception as exc:  # coincurve raises plain Exception/ValueError on bad signatures
        raise TxDecodeError("signature does not recover to a public key") from exc
    sender = "0x" + keccak(public[1:])[-20:].hex()
    return RawTx(
        sender=sender,
        to=_address(body, items[_TO_INDEX[tx_type]]),
        tx_type=tx_type,
        nonce=_uint(body, items[_NONCE_INDEX[tx_type]], "nonce"),
        chain_id=chain_id,
    )


def parse_hex_bytes(value: object) -> bytes:
    """A JSON-RPC DATA parameter ("0x…") as bytes."""
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise TxDecodeError("raw transaction must be a 0x-prefixed hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as exc:
        raise TxDecodeError("raw transaction is not valid hex") from exc


# --- the sender decision -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, as a JSON-RPC error."""

    code: int
    message: str

    def error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


def replay_refusal(tx: RawTx) -> Refusal | None:
    """A transaction signed without a chain id (pre-EIP-155) is valid on every chain its
    signer's nonce matches: a copy taken from another network could be replayed here."""
    if tx.chain_id is None:
        return Refusal(
            INVALID_PARAMS,
            f"transaction from {tx.sender} is signed without a chain id (pre-EIP-155) and could "
            "be replayed from any chain; sign it with this chain's id (EIP-155 or a typed "
            "transaction)",
        )
    return None


def creation_refusal(tx: RawTx, operators: frozenset[str]) -> Refusal | None:
    """Contract creation is the operator's alone (deployments are governed)."""
    if tx.to is None and tx.sender not in operators:
        return Refusal(
            UNAUTHORIZED,
            f"contract creation is reserved to the operator; "
            f"sender {tx.sender} is not the operator (an embedded chain trusts the `operator` "
            "keystore of its DUL_HOME, or --operator ADDRESS, when `dul chain up` starts it)",
        )
    return None


def sender_refusal(tx: RawTx, operators: frozenset[str], is_member: bool) -> Refusal | None:
    """The whole sender policy once membership is known: operator or active member."""
    refusal = creation_refusal(tx, operators)
    if refusal is not None:
        return refusal
    if tx.sender in operators or is_member:
        return None
    return Refusal(
        UNAUTHORIZED, f"transaction sender {tx.sender} is not a member of the data space"
    )


# --- JSON-RPC envelopes -------------------------------------------------------------------


def error_response(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def result_response(request_id: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


#: Request ids are what the node accepts: null, a string, or a signed 64-bit integer.
_ID_RANGE: Final = range(-(2**63), 2**63)


def request_id_of(item: object) -> Any:
    """The id to answer `item` with: its own when it is a valid id, else null."""
    if not isinstance(item, dict):
        return None
    value = item.get("id")
    return value if _valid_id(value) else None


def _valid_id(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and value in _ID_RANGE


def request_shape_error(item: object) -> str | None:
    """Why `item` is not a JSON-RPC request object (None when it is one)."""
    if not isinstance(item, dict):
        return "request must be a JSON object"
    if item.get("jsonrpc") != "2.0":
        return 'request must have "jsonrpc": "2.0"'
    if not _valid_id(item.get("id")):
        return "id must be null, a string or an integer within 64 bits"
    if not isinstance(item.get("method"), str):
        return "request has no method"
    params = item.get("params", [])
    if not isinstance(params, list | dict):
        return "params must be an array or object"
    return None
