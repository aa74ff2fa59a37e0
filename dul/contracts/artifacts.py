"""The compiled contracts shipped inside the package (`dul/contracts/artifacts/*.json`).

Written by `dul contracts build` (dul.contracts.build); read here at run time with no Node,
no compiler and no web3 import. Every service takes its ABIs and bytecode from this module.

    load("AgreementRegistry").abi
    manifest().contracts["AgreementRegistry"].deployed_bytecode_hash
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from eth_typing import HexStr

from dul.errors import BuildError

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ContractArtifact:
    name: str
    source_name: str
    abi: list[dict[str, Any]]
    bytecode: HexStr
    """Creation code, 0x-prefixed; what a deployment transaction sends (plus constructor args)."""
    deployed_bytecode: HexStr
    """Runtime code, 0x-prefixed, with zeros where immutables go (see `immutable_references`)."""
    link_references: dict[str, Any]
    deployed_link_references: dict[str, Any]
    immutable_references: dict[str, list[dict[str, int]]]
    """AST id -> [{start, length}] byte ranges of the runtime code that the constructor fills."""
    compiler_version: str
    compiler_settings: dict[str, Any]
    source_hash: HexStr
    """keccak256 of the source file, as in solc's metadata."""

    def runtime_code_matches(self, code: bytes) -> bool:
        """Whether `code` (from eth_getCode) is this contract's runtime code, ignoring the
        immutable values the constructor wrote into it."""
        expected = bytearray(bytes.fromhex(self.deployed_bytecode[2:]))
        if len(code) != len(expected):
            return False
        actual = bytearray(code)
        for ranges in self.immutable_references.values():
            for item in ranges:
                start, end = item["start"], item["start"] + item["length"]
                actual[start:end] = expected[start:end]
        return actual == expected


@dataclass(frozen=True)
class ManifestEntry:
    source_name: str
    source_hash: HexStr
    deployed_bytecode_hash: HexStr
    """keccak256 of `deployed_bytecode` (immutables zeroed)."""


@dataclass(frozen=True)
class Manifest:
    compiler_version: str
    compiler_settings: dict[str, Any]
    input_hash: HexStr
    """keccak256 over compiler, settings and every source the packaged contracts are built
    from (mocks excluded): changes with any of them."""
    contracts: dict[str, ManifestEntry]


def _directory() -> Traversable:
    return resources.files("dul.contracts").joinpath("artifacts")


def _read(file_name: str) -> dict[str, Any]:
    try:
        raw: dict[str, Any] = json.loads(_directory().joinpath(file_name).read_text("utf-8"))
    except FileNotFoundError:
        raise BuildError(
            f"no packaged artifact {file_name}; run `dul contracts build`",
            code="artifact_missing",
        ) from None
    except (OSError, ValueError) as exc:
        raise BuildError(
            f"packaged artifact {file_name} is unreadable ({exc}); run `dul contracts build`",
            code="artifact_invalid",
        ) from exc
    return raw


@functools.cache
def manifest() -> Manifest:
    raw = _read(MANIFEST_NAME)
    try:
        return Manifest(
            compiler_version=raw["compiler"]["version"],
            compiler_settings=raw["compiler"]["settings"],
            input_hash=raw["inputHash"],
            contracts={
                name: ManifestEntry(
                    source_name=entry["sourceName"],
                    source_hash=entry["sourceHash"],
                    deployed_bytecode_hash=entry["deployedBytecodeHash"],
                )
                for name, entry in raw["contracts"].items()
            },
        )
    except (KeyError, TypeError) as exc:
        raise BuildError(
            f"{MANIFEST_NAME} lacks {exc}; run `dul contracts build`", code="artifact_invalid"
        ) from exc


def names() -> list[str]:
    """The packaged contract names, sorted."""
    return sorted(manifest().contracts)


@functools.cache
def load(name: str) -> ContractArtifact:
    """The artifact of one contract, by contract name (e.g. "Membership")."""
    if name not in manifest().contracts:
        raise BuildError(
            f"unknown contract {name!r}; packaged: {', '.join(names()) or 'none'}",
            code="artifact_missing",
        )
    raw = _read(f"{name}.json")
    try:
        return ContractArtifact(
            name=raw["contractName"],
            source_name=raw["sourceName"],
            abi=raw["abi"],
            bytecode=raw["bytecode"],
            deployed_bytecode=raw["deployedBytecode"],
            link_references=raw["linkReferences"],
            deployed_link_references=raw["deployedLinkReferences"],
            immutable_references=raw["immutableReferences"],
            compiler_version=raw["compiler"]["version"],
            compiler_settings=raw["compiler"]["settings"],
            source_hash=raw["sourceHash"],
        )
    except (KeyError, TypeError) as exc:
        raise BuildError(
            f"{name}.json lacks {exc}; run `dul contracts build`", code="artifact_invalid"
        ) from exc


def load_all() -> dict[str, ContractArtifact]:
    return {name: load(name) for name in names()}
