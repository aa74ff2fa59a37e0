"""The production network: a Hyperledger Besu QBFT network described by one TOML file.

`deploy/besu/network.toml` names the chain, the nodes (each organization's, with the public key
of its node key and where its peers reach it; the validators are the hospitals and the
regulator) and the accounts that may send transactions. From it come the genesis file (the QBFT
extraData lists the validators' addresses) and the permissions file (local allowlists of nodes
and accounts), written by `dul network genesis` and `dul network permissions`.

Formats follow Besu's sources: `QbftExtraDataCodec` (extraData is the RLP list
[32-byte vanity, [validator addresses], vote (empty list: none), round (integer scalar), [seals]]),
`JsonGenesisConfigOptions` / `JsonBftConfigOptions` (genesis keys, read case-insensitively) and
`AllowlistPersistor` (`nodes-allowlist`, `accounts-allowlist`).
"""

from __future__ import annotations

import ipaddress
import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coincurve import PublicKey
from eth_hash.auto import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dul.errors import ConfigError
from dul.signing import checksum_address

#: Besu's QBFT mixHash ("ctical byzantine fault tolerance").
QBFT_MIX_HASH = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
#: EIP-170's limit, which the embedded node (anvil) enforces too.
CONTRACT_SIZE_LIMIT = 24_576
#: The embedded chain's block gas limit (`dul.chain.settings.ChainSettings.gas_limit`).
GAS_LIMIT = 1_000_000_000
#: Milestones at genesis, up to the contracts' EVM target (`solidity/compiler.json`: prague).
#: Besu runs Prague on QBFT without the beacon-root and request system contracts from 26.1.0.
BLOCK_MILESTONES = (
    "homesteadBlock", "eip150Block", "eip158Block", "byzantiumBlock", "constantinopleBlock",
    "petersburgBlock", "istanbulBlock", "berlinBlock", "londonBlock",
)  # fmt: skip
TIME_MILESTONES = ("shanghaiTime", "cancunTime", "pragueTime")

_HEX = re.compile(r"^(0x)?[0-9a-fA-F]*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


# --- RLP and the QBFT extraData ----------------------------------------------------------------

RlpItem = bytes | Sequence["RlpItem"]


def _length_prefix(length: int, short: int) -> bytes:
    if length < 56:
        return bytes([short + length])
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([short + 55 + len(size)]) + size


def rlp_encode(item: RlpItem) -> bytes:
    """Recursive Length Prefix encoding of a byte string or a (nested) list of them."""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length_prefix(len(item), 0x80) + item
    body = b"".join(rlp_encode(i) for i in item)
    return _length_prefix(len(body), 0xC0) + body


def _scalar(value: int) -> bytes:
    """An RLP integer scalar: big-endian, no leading zeros (0 is the empty string)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def qbft_extra_data(
    validators: Sequence[bytes],
    *,
    vanity: bytes = bytes(32),
    vote: tuple[bytes, bool] | None = None,
    round_number: int = 0,
    seals: Sequence[bytes] = (),
) -> bytes:
    """QBFT extraData as Besu's `QbftExtraDataCodec.encode` writes it; a genesis has a zero
    vanity, no vote, round 0 and no seals. `vote` is (address, add?)."""
    if len(vanity) != 32:
        raise ValueError("the vanity is 32 bytes")
    if any(len(v) != 20 for v in validators):
        raise ValueError("a validator is a 20-byte address")
    # Besu: ADD is the byte 0xFF, DROP the empty string (`Vote.ADD_BYTE_VALUE`, writeNull).
    encoded_vote: RlpItem = [] if vote is None else [vote[0], b"\xff" if vote[1] else b""]
    return rlp_encode([vanity, list(validators), encoded_vote, _scalar(round_number), list(seals)])


# --- node keys -----------------------------------------------------------------------------------


def parse_public_key(text: str) -> bytes:
    """A node's secp256k1 public key as Besu prints it (`besu public-key export`: 64 bytes in
    hex), also accepted with the 0x04 prefix; checked to lie on the curve."""
    value = text.strip()
    raw = value[2:] if value.startswith("0x") else value
    if not _HEX.match(raw) or len(raw) not in (128, 130):
        raise ConfigError(
            f"public key {value[:20]}…: 64 bytes in hex expected (besu public-key export)",
            code="invalid_network",
        )
    key = bytes.fromhex(raw)
    if len(key) == 65:
        if key[0] != 4:
            raise ConfigError("a 65-byte public key starts with 0x04", code="invalid_network")
        key = key[1:]
    try:
        PublicKey(b"\x04" + key)
    except ValueError:
        raise ConfigError(
            f"public key {value[:20]}… is not a secp256k1 point", code="invalid_network"
        ) from None
    return key


def node_address(public_key: bytes) -> bytes:
    """The node's address (what QBFT lists as a validator): keccak of the public key's last 20."""
    return keccak(public_key)[12:]


# --- the network description ---------------------------------------------------------------------


class NodeSpec(BaseModel):
    """One organization's Besu node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="node name: its config is nodes/<name>/config.toml")
    organization: str = Field(description="the member organization (its slug) running it")
    validator: bool = Field(description="a QBFT validator (hospitals and the regulator)")
    public_key: str = Field(description="`besu public-key export` of the node key")
    host: str = Field(description="the IP address the other nodes reach it at")
    p2p_port: int = Field(30303, ge=1, le=65535)

    @field_validator("name", "organization")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r}: lower-case letters, digits and '-'")
        return value

    @field_validator("public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return "0x" + parse_public_key(value).hex()

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        # Besu reads enode URLs with IP addresses only (DNS names need --Xdns-enabled).
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r}: an IP address (enode URLs take no DNS names)") from None

    @property
    def address(self) -> str:
        return checksum_address(node_address(bytes.fromhex(self.public_key[2:])))

    @property
    def enode(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"enode://{self.public_key[2:]}@{host}:{self.p2p_port}"


class AccountSpec(BaseModel):
    """An account allowed to send transactions (the operator, gateways, stewards, requesters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    address: str

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        raw = value[2:] if value.startswith("0x") else value
        if len(raw) != 40 or not _HEX.match(raw):
            raise ValueError(f"{value!r}: a 20-byte address in hex")
        return checksum_address(bytes.fromhex(raw))


class NetworkSpec(BaseModel):
    """`network.toml`: the chain and its nodes and accounts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chain_id: int = Field(ge=1, le=2**53 - 1)
    block_period_seconds: int = Field(2, ge=1, le=60)
    request_timeout_seconds: int = Field(4, ge=1, le=600)
    epoch_length: int = Field(30_000, ge=1, le=10**9)
    gas_limit: int = Field(GAS_LIMIT, ge=30_000_000, le=2**53 - 1)
    contract_size_limit: int = Field(CONTRACT_SIZE_LIMIT, ge=24_576, le=2**31 - 1)
    nodes: tuple[NodeSpec, ...] = Field(alias="node")
    accounts: tuple[AccountSpec, ...] = Field(alias="account")

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        names = [n.name for n in self.nodes]
        keys = [n.public_key for n in self.nodes]
        addresses = [a.address for a in self.accounts]
        for what, values in (("node name", names), ("public key", keys), ("account", addresses)):
            seen = {v for v in values if values.count(v) > 1}
            if seen:
                raise ValueError(f"{what} listed twice: {sorted(seen)[0]}")
        if not self.validators:
            raise ValueError("no validator: QBFT needs at least one")
        return self

    @property
    def validators(self) -> tuple[NodeSpec, ...]:
        """Validator nodes by address (the order Besu keeps them in)."""
        chosen = [n for n in self.nodes if n.validator]
        return tuple(sorted(chosen, key=lambda n: n.address.lower()))

    @property
    def fault_tolerance(self) -> int:
        """Validators that may fail while blocks are still made: floor((n - 1) / 3)."""
        return (len(self.validators) - 1) // 3

    def extra_data(self) -> bytes:
        return qbft_extra_data([bytes.fromhex(n.address[2:]) for n in self.validators])

    def genesis(self) -> dict[str, Any]:
        """The genesis file: QBFT, free gas (zero base fee, `min-gas-price=0` on every node),
        the embedded chain's block gas limit and contract size limit, no allocations."""
        config: dict[str, Any] = {"chainId": self.chain_id}
        config.update({name: 0 for name in BLOCK_MILESTONES})
        config.update({name: 0 for name in TIME_MILESTONES})
        config.update(
            zeroBaseFee=True,
            contractSizeLimit=self.contract_size_limit,
            qbft={
                "blockperiodseconds": self.block_period_seconds,
                "epochlength": self.epoch_length,
                "requesttimeoutseconds": self.request_timeout_seconds,
            },
        )
        return {
            "config": config,
            "nonce": "0x0",
            "timestamp": "0x0",
            "extraData": "0x" + self.extra_data().hex(),
            "gasLimit": hex(self.gas_limit),
            "baseFeePerGas": "0x0",
            "difficulty": "0x1",
            "mixHash": QBFT_MIX_HASH,
            "coinbase": "0x" + "00" * 20,
            "alloc": {},
            "number": "0x0",
            "gasUsed": "0x0",
            "parentHash": "0x" + "00" * 32,
        }

    def permissions(self) -> str:
        """`permissions_config.toml`: every node and every sending account, Besu's keys."""
        lines = [
            "# Local permissioning of the Data-Use Ledger network (Besu AllowlistPersistor keys).",
            "# Written by `dul network permissions`; each node keeps its own copy, which Besu",
            "# rewrites when perm_add*/perm_remove* are called on that node.",
            "",
            "nodes-allowlist=[",
            *(f'  "{n.enode}",  # {n.name}' for n in self.nodes),
            "]",
            "",
            "accounts-allowlist=[",
            *(f'  "{a.address}",  # {a.name}' for a in self.accounts),
            "]",
            "",
        ]
        return "\n".join(lines)


def load_network(path: Path) -> NetworkSpec:
    """`network.toml`, checked; a bad file is one `ConfigError` naming the first problem."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no network description at {path}", code="invalid_network") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}", code="invalid_network") from None
    try:
        return NetworkSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "network"
        raise ConfigError(f"{path}: {where}: {first['msg']}", code="invalid_network") from None


def genesis_json(spec: NetworkSpec) -> str:
    return json.dumps(spec.genesis(), indent=2) + "\n"
