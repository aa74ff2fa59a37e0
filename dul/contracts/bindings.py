"""Typed bindings of the contracts' functions and events, made from the packaged ABIs.

The one place where selectors, topics and ABI type strings are derived: everything else asks
for `function("AccessLog", "recordAccesses")` or `event("AgreementRegistry",
"AgreementProposed")` and uses its `selector` / `topic`, `encode`, `decode_output` and
`decode_data`, so a changed signature in Solidity changes every caller with the next
`dul contracts build` (`tests/unit/test_bindings.py` greps for hand-written ones).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode

from dul.contracts.artifacts import load
from dul.keccak import keccak


def canonical_type(item: Mapping[str, Any]) -> str:
    """An ABI parameter's canonical type: tuples spelled out, e.g. `(bytes32,uint8)[]`."""
    kind = str(item["type"])
    if kind.startswith("tuple"):
        return f"({','.join(canonical_type(c) for c in item['components'])}){kind[5:]}"
    return kind


def leaves(item: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, type) of each word-level value of an ABI parameter: a struct's components,
    flattened in order; any other parameter itself."""
    if str(item["type"]) == "tuple":
        return [leaf for c in item["components"] for leaf in leaves(c)]
    return [(str(item.get("name", "")), canonical_type(item))]


@dataclass(frozen=True)
class FunctionBinding:
    contract: str
    name: str
    types: tuple[str, ...]
    """Canonical types of the inputs, in order."""
    names: tuple[str, ...]
    output_types: tuple[str, ...]
    mutates: bool
    """Not `view` / `pure`: called by a transaction."""
    output_fields: tuple[tuple[str, str], ...] = ()
    """(name, type) of each output, structs flattened (`leaves`); "" for an unnamed one."""

    @functools.cached_property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"

    @functools.cached_property
    def selector(self) -> bytes:
        return keccak(self.signature.encode())[:4]

    def encode(self, *args: Any) -> bytes:
        """Calldata of a call with `args`."""
        return self.selector + encode(list(self.types), list(args))

    def encode_args(self, *args: Any) -> bytes:
        """The ABI encoding of `args` alone (calldata without the selector)."""
        return encode(list(self.types), list(args))

    def decode_input(self, calldata: bytes) -> tuple[Any, ...]:
        """The arguments of calldata of this function (selector included)."""
        if calldata[:4] != self.selector:
            raise ValueError(f"calldata is not a call of {self.contract}.{self.signature}")
        return tuple(decode(list(self.types), calldata[4:]))

    def decode_output(self, data: bytes) -> tuple[Any, ...]:
        """The returned values (`eth_call`'s result), as a tuple of the outputs."""
        return tuple(decode(list(self.output_types), data))


@dataclass(frozen=True)
class EventBinding:
    contract: str
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]
    indexed: tuple[bool, ...]

    @classmethod
    def of(cls, contract: str, item: Mapping[str, Any]) -> EventBinding:
        """The binding of one ABI event item (a packaged contract's, or one given)."""
        inputs = item.get("inputs", [])
        return cls(
            contract,
            str(item.get("name", "")),
            tuple(canonical_type(i) for i in inputs),
            tuple(str(i["name"]) for i in inputs),
            tuple(bool(i["indexed"]) for i in inputs),
        )

    @functools.cached_property
    def signature(self) -> str:
        return f"{self.name}({','.join(self.types)})"

    @functools.cached_property
    def topic(self) -> bytes:
        """Topic 0 of its logs."""
        return keccak(self.signature.encode())

    @property
    def topic_hex(self) -> str:
        return "0x" + self.topic.hex()

    @functools.cached_property
    def data_types(self) -> tuple[str, ...]:
        """Types of the non-indexed inputs, in order: what a log's `data` decodes to."""
        return tuple(t for t, i in zip(self.types, self.indexed, strict=True) if not i)

    @functools.cached_property
    def data_names(self) -> tuple[str, ...]:
        return tuple(n for n, i in zip(self.names, self.indexed, strict=True) if not i)

    @functools.cached_property
    def topic_types(self) -> tuple[str, ...]:
        """Types of the indexed inputs, in order (topics 1…)."""
        return tuple(t for t, i in zip(self.types, self.indexed, strict=True) if i)

    def decode_data(self, data: bytes) -> tuple[Any, ...]:
        return tuple(decode(list(self.data_types), data))

    def decode_topics(self, topics: Sequence[bytes]) -> tuple[Any, ...]:
        """The indexed values from topics 1… (a dynamic type's topic is its hash, as is)."""
        values: list[Any] = []
        for kind, topic in zip(self.topic_types, topics, strict=True):
            dynamic = kind in ("string", "bytes") or kind.endswith("]") or kind.startswith("(")
            values.append(topic if dynamic else decode([kind], topic)[0])
        return tuple(values)


@functools.cache
def _bindings(contract: str) -> tuple[dict[str, FunctionBinding], dict[str, EventBinding]]:
    functions: dict[str, FunctionBinding] = {}
    events: dict[str, EventBinding] = {}
    overloaded: set[str] = set()
    for item in load(contract).abi:
        kind = item.get("type")
        name = str(item.get("name", ""))
        inputs = item.get("inputs", [])
        if kind == "function":
            if name in functions:
                overloaded.add(name)
            functions[name] = FunctionBinding(
                contract,
                name,
                tuple(canonical_type(i) for i in inputs),
                tuple(str(i["name"]) for i in inputs),
                tuple(canonical_type(o) for o in item.get("outputs", [])),
                item.get("stateMutability") not in ("view", "pure"),
                tuple(leaf for o in item.get("outputs", []) for leaf in leaves(o)),
            )
        elif kind == "event":
            events[name] = EventBinding.of(contract, item)
    for name in overloaded:  # bound by name only where the name is unambiguous
        del functions[name]
    return functions, events


def functions(contract: str) -> dict[str, FunctionBinding]:
    """Every function of a packaged contract, by name."""
    return dict(_bindings(contract)[0])


def events(contract: str) -> dict[str, EventBinding]:
    """Every event of a packaged contract, by name."""
    return dict(_bindings(contract)[1])


def function(contract: str, name: str) -> FunctionBinding:
    """One function of a packaged contract (LookupError when it has none of that name)."""
    try:
        return _bindings(contract)[0][name]
    except KeyError:
        raise LookupError(f"{contract} has no function {name}") from None


def event(contract: str, name: str) -> EventBinding:
    """One event of a packaged contract (LookupError when it has none of that name)."""
    try:
        return _bindings(contract)[1][name]
    except KeyError:
        raise LookupError(f"{contract} has no event {name}") from None
