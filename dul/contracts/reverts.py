"""Decode reverts into the product's stable error codes.

Every custom error of every packaged contract (and OpenZeppelin's, pulled in through the ABIs)
is known by selector, so a refused transaction reads `AccessLogQuotaExhausted(agreementId=…,
quota=100)` instead of an opaque hex string.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from eth_abi.abi import decode
from eth_hash.auto import keccak

from dul import domain
from dul.contracts.artifacts import load, manifest
from dul.domain import slug_of


@dataclass(frozen=True)
class DecodedRevert:
    name: str
    args: dict[str, Any]
    enums: dict[str, str] = field(default_factory=dict)
    """Argument name -> the Solidity enum it holds (from the ABI's internalType)."""

    def describe(self) -> str:
        rendered = ", ".join(f"{k}={_render(v, self.enums.get(k))}" for k, v in self.args.items())
        return f"{self.name}({rendered})"


def _render(value: Any, enum: str | None = None) -> str:
    """bytes32 ids as slugs, enum values by name (`ConsentPolicy.NONE`, not 0)."""
    kind = getattr(domain, enum, None) if enum else None
    if isinstance(kind, type) and issubclass(kind, IntEnum) and isinstance(value, int):
        try:
            return kind(value).name
        except ValueError:
            return str(value)
    if isinstance(value, bytes):
        return slug_of(value) if len(value) == 32 else "0x" + value.hex()
    return str(value)


def _canonical_type(item: dict[str, Any]) -> str:
    kind = str(item["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in item["components"])
        return f"({inner}){kind[5:]}"
    return kind


@functools.cache
def _errors() -> dict[bytes, tuple[str, list[str], list[str], dict[str, str]]]:
    table: dict[bytes, tuple[str, list[str], list[str], dict[str, str]]] = {
        keccak(b"Error(string)")[:4]: ("Error", ["string"], ["message"], {}),
        keccak(b"Panic(uint256)")[:4]: ("Panic", ["uint256"], ["code"], {}),
    }
    for name in manifest().contracts:
        for item in load(name).abi:
            if item.get("type") != "error":
                continue
            types = [_canonical_type(i) for i in item["inputs"]]
            signature = f"{item['name']}({','.join(types)})"
            names = [i["name"] or f"arg{n}" for n, i in enumerate(item["inputs"])]
            enums = {
                n: str(i["internalType"]).removeprefix("enum ")
                for n, i in zip(names, item["inputs"], strict=True)
                if str(i.get("internalType", "")).startswith("enum ")
            }
            table[keccak(signature.encode())[:4]] = (item["name"], types, names, enums)
    return table


def decode_revert(data: bytes) -> DecodedRevert | None:
    """The custom error in revert `data`, or None when it is not one we know."""
    entry = _errors().get(data[:4])
    if entry is None:
        return None
    name, types, names, enums = entry
    try:
        values = decode(types, data[4:])
    except Exception:  # malformed revert data is reported as unknown, never raised
        return None
    return DecodedRevert(name, dict(zip(names, values, strict=True)), enums)
