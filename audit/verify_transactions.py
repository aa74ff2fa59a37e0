"""Every transaction behind an audited event carries a valid signature of its sender.

A node that lets an account be impersonated (anvil's `anvil_impersonateAccount`, a dev node's
unlocked accounts, a compromised validator) executes transactions no key signed: their
envelope holds a dummy signature, or one of another key. The node's own word (`from`) cannot be
trusted, so the check rebuilds each transaction from `eth_getTransactionByHash` — the envelope
types the permissioned endpoint accepts (`dul.chain.rpc_filter.ACCEPTED_TX_TYPES`: legacy with
or without EIP-155, EIP-2930, EIP-1559) — recomputes its signing hash and recovers the signer:

- the recovered address must be `from`, with s in the lower half of the curve order (EIP-2);
- the signed envelope must hash to the transaction's hash (else the node's fields are not the
  transaction's);
- a typed or EIP-155 transaction must be signed for this chain;
- any other envelope type never passed the endpoint.

Each failure is one `transaction_not_signed_by_sender` finding keyed by the transaction hash,
at the position of its first audited event. One check per distinct transaction (events of
one transaction are consecutive in chain order, so no set of hashes is kept), fetched in
JSON-RPC batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import coincurve

from audit.chain_reads import batch, unsupported
from dul.chain.rpc import RpcClient, RpcError
from dul.chain.rpc_filter import ACCEPTED_TX_TYPES
from dul.keccak import keccak

_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
FLUSH_AT: Final = 512
FLUSH_EVENTS: Final = 4_096


class FindingSink(Protocol):
    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


class TxInvalidError(ValueError):
    """Why a transaction is not its sender's."""


# --- RLP (encoding only) ---------------------------------------------------------------------

_Item = bytes | list["_Item"]


def _rlp(item: _Item) -> bytes:
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _prefix(len(item), 0x80) + item
    payload = b"".join([_rlp(i) for i in item])
    return _prefix(len(payload), 0xC0) + payload


def _prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(raw)]) + raw


def _int(tx: Mapping[str, Any], name: str) -> int:
    value = tx.get(name)
    if not isinstance(value, str) or not value.startswith("0x"):
        raise TxInvalidError(f"the node gives no {name}")
    try:
        return int(value, 16)
    except ValueError:
        raise TxInvalidError(f"the node gives an unreadable {name}") from None


def _uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def _data(tx: Mapping[str, Any], name: str) -> bytes:
    value = tx.get(name)
    if value is None and name == "to":
        return b""  # contract creation
    if not isinstance(value, str) or not value.startswith("0x"):
        raise TxInvalidError(f"the node gives no {name}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise TxInvalidError(f"the node gives an unreadable {name}") from None


def _access_list(tx: Mapping[str, Any]) -> list[_Item]:
    entries = tx.get("accessList") or []
    if not isinstance(entries, list):
        raise TxInvalidError("the node gives an unreadable accessList")
    out: list[_Item] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("storageKeys", []), list):
            raise TxInvalidError("the node gives an unreadable accessList")
        keys: list[_Item] = [_data({"k": k}, "k") for k in entry.get("storageKeys", [])]
        out.append([_data(entry, "address"), keys])
    return out


# --- one transaction -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signed:
    """What a transaction's envelope says: its signer and its chain (None: pre-EIP-155)."""

    signer: str
    chain_id: int | None


def recover_sender(tx: Mapping[str, Any]) -> Signed:
    """The signer of the transaction `eth_getTransactionByHash` returned; TxInvalidError when the
    envelope is not a signed, accepted-type transaction that hashes to its `hash`."""
    tx_type = _int(tx, "type") if tx.get("type") is not None else 0
    if tx_type not in ACCEPTED_TX_TYPES:
        raise TxInvalidError(f"type-{tx_type} transaction: the permissioned endpoint accepts none")
    common: list[_Item] = [
        _uint(_int(tx, "gas")), _data(tx, "to"), _uint(_int(tx, "value")), _data(tx, "input"),
    ]  # fmt: skip
    r, s = _int(tx, "r"), _int(tx, "s")
    chain_id: int | None
    if tx_type == 0:
        v = _int(tx, "v")
        fields: list[_Item] = [_uint(_int(tx, "nonce")), _uint(_int(tx, "gasPrice")), *common]
        if v in (27, 28):
            chain_id, parity, unsigned = None, v - 27, _rlp(fields)
        elif v >= 35:
            chain_id, parity = (v - 35) // 2, (v - 35) % 2
            unsigned = _rlp([*fields, _uint(chain_id), b"", b""])
        else:
            raise TxInvalidError(f"legacy v {v} is neither 27/28 nor EIP-155")
        envelope = _rlp([*fields, _uint(v), _uint(r), _uint(s)])
    else:
        chain_id = _int(tx, "chainId")
        parity = _int(tx, "yParity") if tx.get("yParity") is not None else _int(tx, "v")
        if parity not in (0, 1):
            raise TxInvalidError(f"y-parity {parity} is not 0 or 1")
        fees: list[_Item] = (
            [_uint(_int(tx, "gasPrice"))] if tx_type == 1
            else [_uint(_int(tx, "maxPriorityFeePerGas")), _uint(_int(tx, "maxFeePerGas"))]
        )  # fmt: skip
        fields = [_uint(chain_id), _uint(_int(tx, "nonce")), *fees, *common, _access_list(tx)]
        unsigned = bytes([tx_type]) + _rlp(fields)
        envelope = bytes([tx_type]) + _rlp([*fields, _uint(parity), _uint(r), _uint(s)])
    if r == 0 and s == 0:
        raise TxInvalidError("it carries no signature (r = s = 0)")
    if not (0 < r < _N and 0 < s <= _N // 2):
        raise TxInvalidError("its signature is out of range (r, s, or s above n/2)")
    if keccak(envelope).hex() != str(tx.get("hash", "")).lower().removeprefix("0x"):
        raise TxInvalidError("its signed envelope does not hash to the transaction hash")
    try:
        public = coincurve.PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([parity]),
            keccak(unsigned),
            hasher=None,
        )
    except ValueError:
        raise TxInvalidError("its signature recovers to no public key") from None
    return Signed("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex(), chain_id)


def check_transaction(tx: Any, chain_id: int) -> tuple[str | None, str | None]:
    """(sender, why not signed by it) for one `eth_getTransactionByHash` result."""
    if not isinstance(tx, dict):
        return None, "the node has no such transaction"
    sender = str(tx.get("from", "")).lower() or None
    try:
        signed = recover_sender(tx)
    except TxInvalidError as exc:
        return sender, str(exc)
    if signed.signer != sender:
        return sender, f"its signature recovers to {signed.signer}, not to its sender {sender}"
    if signed.chain_id is not None and signed.chain_id != chain_id:
        return sender, f"it is signed for chain {signed.chain_id}, not {chain_id}"
    return sender, None


# --- the pass --------------------------------------------------------------------------------


@dataclass
class TransactionCheck:
    """Fed each audited event's transaction in chain order (`see`), which hands back a batch
    of distinct transactions whenever one is due (about `FLUSH_EVENTS` events' worth, so a
    reply stays a few MB however large the transactions; at most `FLUSH_AT`); `check(batch)`
    fetches and judges one (thread-safe with `see`). `senders` collects every sender."""

    rpc: RpcClient
    chain_id: int
    out: FindingSink
    checked: Any  # a Counter
    senders: set[str] = field(default_factory=set)
    unavailable: str | None = None
    """Why transactions could not be checked (the node does not serve them)."""
    _last: str | None = None
    _pending: list[tuple[str, str]] = field(default_factory=list)
    _events: int = 0

    def see(self, tx_hash: str, position: str) -> list[tuple[str, str]] | None:
        self._events += 1
        if tx_hash != self._last and self.unavailable is None:
            self._last = tx_hash
            self._pending.append((tx_hash, position))
        if len(self._pending) >= FLUSH_AT or self._events >= FLUSH_EVENTS:
            return self.take()
        return None

    def take(self) -> list[tuple[str, str]] | None:
        """The transactions seen and not yet handed out (None: none)."""
        pending, self._pending, self._events = self._pending, [], 0
        return pending or None

    def check(self, pending: Sequence[tuple[str, str]]) -> None:
        if self.unavailable is not None:
            return
        replies = batch(self.rpc, [("eth_getTransactionByHash", [h]) for h, _ in pending])
        for (tx_hash, position), reply in zip(pending, replies, strict=True):
            if isinstance(reply, RpcError) and unsupported(reply):
                self.unavailable = f"eth_getTransactionByHash is not served: {reply.message}"
                return
            self.checked["transactions"] += 1
            sender: str | None = None
            why: str | None = f"the node did not give it ({getattr(reply, 'message', '')})"
            if not isinstance(reply, RpcError):
                sender, why = check_transaction(reply, self.chain_id)
            if sender is not None:
                self.senders.add(sender)
            if why is not None:
                self.out.add(
                    "transaction_not_signed_by_sender",
                    f"transaction {tx_hash} (sender {sender}): {why}",
                    table="event", position=position, key=tx_hash,
                    details={"tx_hash": tx_hash, "sender": sender, "reason": why},
                )  # fmt: skip
