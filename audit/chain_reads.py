"""Many reads of the node in few round trips, with standard JSON-RPC only (anvil, geth, Besu).

- `batch` sends JSON-RPC batch requests through the product's client (`dul.chain.rpc`:
  bounded in items and bytes so that no node or proxy limit is met, one request at a time for
  a node that answers no batch); each reply is its result or its `RpcError`.
- `ViewReader` calls static view functions of a contract at one block. Calls are grouped into
  one `eth_call` without `to`: its data is a small constructor (`_BATCH_CODE`, below) followed
  by the calls' arguments, which STATICCALLs the view once per argument list and returns the
  outputs side by side. Nothing is deployed (an `eth_call` changes no state) and it is plain
  `eth_call`, so every node runs it; ~750 views cost one call instead of ~750 (measured on
  anvil: ~40 us per single `eth_call` in a batch). A node that refuses it gets the same
  views as single `eth_call`s in batches.

Only views whose arguments and outputs are static words (bytes32, address, uintN, enums,
bool, structs of these) are supported: that is every view `verify` reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dul.chain.rpc import NodeError, RpcClient, RpcError
from dul.contracts.bindings import FunctionBinding

MAX_INITCODE: Final = 49_152  # EIP-3860
MAX_RETURNED_CODE: Final = 24_576  # EIP-170: a constructor's output is code, bounded

Reply = Any  # the result, or the request's RpcError


def batch(rpc: RpcClient, requests: Sequence[tuple[str, Sequence[Any]]]) -> list[Reply]:
    """Each request's result (or `RpcError`), in order; as few HTTP requests as the limits
    allow (`RpcClient.batch`). Raises NodeUnavailableError when the node cannot be reached."""
    return rpc.batch(requests)


def block_hashes(rpc: RpcClient, numbers: Sequence[int]) -> dict[int, str | None]:
    """The node's hash of each block (None: it has no such block), in batches."""
    replies = batch(rpc, [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    out: dict[int, str | None] = {}
    for number, reply in zip(numbers, replies, strict=True):
        if isinstance(reply, RpcError):
            raise reply
        out[number] = str(reply["hash"]).lower() if isinstance(reply, dict) else None
    return out


def block_headers(rpc: RpcClient, numbers: Sequence[int]) -> dict[int, tuple[str, int] | None]:
    """The node's (hash, timestamp) of each block (None: it has no such block), in batches."""
    replies = batch(rpc, [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    out: dict[int, tuple[str, int] | None] = {}
    for number, reply in zip(numbers, replies, strict=True):
        if isinstance(reply, RpcError):
            raise reply
        out[number] = (
            (str(reply["hash"]).lower(), int(str(reply["timestamp"]), 16))
            if isinstance(reply, dict)
            else None
        )
    return out


# --- static view functions --------------------------------------------------------------------


def _word_in(kind: str, value: Any) -> bytes:
    if kind in ("bytes32", "address"):
        raw = bytes.fromhex(str(value)[2:])
        return raw.rjust(32, b"\0")
    if kind.startswith("uint") or kind == "bool":
        return int(value).to_bytes(32, "big")
    raise ValueError(f"unsupported argument type {kind}")


def _word_out(kind: str, word: bytes) -> Any:
    if kind == "bytes32":
        return "0x" + word.hex()
    if kind == "address":
        return "0x" + word[12:].hex()
    if kind == "bool":
        return int.from_bytes(word, "big") != 0
    return int.from_bytes(word, "big")  # uintN and enums


@dataclass(frozen=True)
class View:
    """A view function with static arguments and outputs, from its binding, e.g.
    `View(function("Membership", "memberOf"))`; `names` name unnamed outputs, in order."""

    binding: FunctionBinding
    names: tuple[str, ...] = ()
    fields: tuple[str, ...] = field(init=False)
    """The output words' names (a static struct: its fields), in order."""
    types: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        outputs = self.binding.output_fields
        unnamed = iter(self.names)
        fields = tuple(name or next(unnamed) for name, _ in outputs)
        if next(unnamed, None) is not None or any(kind.endswith("]") for _, kind in outputs):
            raise ValueError(f"{self.signature}: not a view of static words named {self.names}")
        object.__setattr__(self, "fields", fields)
        object.__setattr__(self, "types", tuple(kind for _, kind in outputs))

    @property
    def name(self) -> str:
        return self.binding.name

    @property
    def signature(self) -> str:
        return self.binding.signature

    @property
    def selector(self) -> bytes:
        return self.binding.selector

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.binding.types

    def calldata(self, args: Sequence[Any]) -> bytes:
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.signature} takes {len(self.inputs)} arguments")
        return self.selector + b"".join(
            [_word_in(k, a) for k, a in zip(self.inputs, args, strict=True)]
        )

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The output bytes the view returns for `values` (by output name)."""
        return b"".join(
            [
                _word_in(kind, values[name])
                for name, kind in zip(self.fields, self.types, strict=True)
            ]
        )

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < 32 * len(self.fields):
            raise ValueError(f"{self.signature} returned {len(data)} bytes")
        return {
            name: _word_out(kind, data[32 * i : 32 * i + 32])
            for i, (name, kind) in enumerate(zip(self.fields, self.types, strict=True))
        }


# The batch constructor. Its data is followed by a payload of words: target address, calldata
# length, output length, count, then `count` calldatas of that length. It copies the payload
# to memory, STATICCALLs the target with each calldata, writes each output after the payload
# (behind one zero byte: returned code may not start with 0xEF, EIP-3541) and returns them.
# Any failing call reverts the whole batch (the reader then calls one by one).
_OPS: Final = {
    "ADD": 0x01, "SUB": 0x03, "ISZERO": 0x15, "POP": 0x50, "MLOAD": 0x51, "JUMP": 0x56,
    "JUMPI": 0x57, "GAS": 0x5A, "JUMPDEST": 0x5B, "CODESIZE": 0x38, "CODECOPY": 0x39,
    "DUP1": 0x80, "DUP2": 0x81, "DUP4": 0x83, "DUP5": 0x84, "SWAP1": 0x90, "SWAP2": 0x91,
    "RETURN": 0xF3, "STATICCALL": 0xFA, "REVERT": 0xFD,
}  # fmt: skip
_PROGRAM: Final[tuple[Any, ...]] = (
    # len = codesize - P; memory[0:len] = payload                       stack (top right)
    ("P", 2), "CODESIZE", "SUB", "DUP1", ("P", 2), (0, 1), "CODECOPY",  # [len]
    "DUP1", (1, 1), "ADD",  # [start=len, out=len+1]
    (0x80, 1), (0x60, 1), "MLOAD",  # [start, out, in=0x80, remaining=count]
    "loop:", "DUP1", "ISZERO", ("end", 2), "JUMPI",
    (0x40, 1), "MLOAD", "DUP4", (0x20, 1), "MLOAD", "DUP5", (0, 1), "MLOAD", "GAS",
    "STATICCALL", "ISZERO", ("fail", 2), "JUMPI",  # staticcall(gas, target, in, inLen, out, outLen)
    (1, 1), "SWAP1", "SUB",  # remaining - 1
    "SWAP1", (0x20, 1), "MLOAD", "ADD", "SWAP1",  # in += inLen
    "SWAP2", (0x40, 1), "MLOAD", "ADD", "SWAP2",  # out += outLen
    ("loop", 2), "JUMP",
    "end:", "POP", "POP", "DUP2", "SWAP1", "SUB", "SWAP1", "RETURN",  # return(start, out - start)
    "fail:", (0, 1), (0, 1), "REVERT",
)  # fmt: skip


def _assemble(program: Sequence[Any]) -> bytes:
    """Bytes of `program`: opcodes, `label:` (JUMPDEST), (value or label or "P", push width);
    "P" is the program's own length."""
    labels: dict[str, int] = {}
    size = 0
    for item in program:
        if isinstance(item, str) and item.endswith(":"):
            labels[item[:-1]] = size
        size += 1 + item[1] if isinstance(item, tuple) else 1
    labels["P"] = size
    out = bytearray()
    for item in program:
        if isinstance(item, tuple):
            value, width = item
            out.append(0x5F + width)  # PUSHn
            out += (labels[value] if isinstance(value, str) else value).to_bytes(width, "big")
        elif item.endswith(":"):
            out.append(_OPS["JUMPDEST"])
        else:
            out.append(_OPS[item])
    return bytes(out)


_BATCH_CODE: Final = _assemble(_PROGRAM)
_HEADER: Final = 4 * 32


def batch_calldata(target: str, calls: Sequence[bytes], out_len: int) -> str:
    """The `eth_call` data that runs `calls` (same length each) against `target`."""
    in_len = len(calls[0])
    payload = (
        bytes.fromhex(target[2:]).rjust(32, b"\0")
        + in_len.to_bytes(32, "big")
        + out_len.to_bytes(32, "big")
        + len(calls).to_bytes(32, "big")
        + b"".join(calls)
    )
    return "0x" + (_BATCH_CODE + payload).hex()


def batch_capacity(in_len: int, out_len: int) -> int:
    """How many calls one batch `eth_call` may carry (initcode and returned-code limits)."""
    by_input = (MAX_INITCODE - len(_BATCH_CODE) - _HEADER) // in_len
    by_output = (MAX_RETURNED_CODE - 1) // out_len
    return max(1, min(by_input, by_output, 1_024))


class ViewReader:
    """Reads views of contracts at `block` (a number). `read` gives each call's raw output
    bytes (`32 * len(view.fields)` of them; `view.decode` makes a dict) or an `RpcError`."""

    def __init__(self, rpc: RpcClient, block: int) -> None:
        self.rpc = rpc
        self.block = hex(block)
        self.batched = True
        self.calls = 0
        self.round_trips = 0

    def read(
        self, target: str, view: View, args: Sequence[Sequence[Any]]
    ) -> list[bytes | RpcError]:
        return self.read_calldata(target, view, [view.calldata(a) for a in args])

    def read_calldata(self, target: str, view: View, calls: list[bytes]) -> list[bytes | RpcError]:
        """Like `read`, with each call's data already encoded (a hot path builds it faster)."""
        if not calls:
            return []
        out_len = 32 * len(view.fields)
        self.calls += len(calls)
        if self.batched:
            return self._batched(target, calls, out_len)
        return self._singly(target, calls, out_len)

    def _batched(self, target: str, calls: list[bytes], out_len: int) -> list[bytes | RpcError]:
        size = batch_capacity(len(calls[0]), out_len)
        groups = [calls[i : i + size] for i in range(0, len(calls), size)]
        replies = batch(
            self.rpc,
            [("eth_call", [{"data": batch_calldata(target, g, out_len)}, self.block])
             for g in groups],
        )  # fmt: skip
        self.round_trips += 1
        out: list[bytes | RpcError] = []
        answered = 0
        for group, reply in zip(groups, replies, strict=True):
            data = _hex_bytes(reply)
            if data is None or len(data) != 1 + out_len * len(group):
                if isinstance(reply, RpcError):
                    _raise_if_unavailable(reply)
                out.extend(self._singly(target, group, out_len))  # one reverts, or no support
                continue
            answered += 1
            out.extend(data[1 + i * out_len : 1 + (i + 1) * out_len] for i in range(len(group)))
        if not answered:
            self.batched = False  # this node does not run it: do not ask again
        return out

    def _singly(self, target: str, calls: list[bytes], out_len: int) -> list[bytes | RpcError]:
        replies = batch(
            self.rpc,
            [("eth_call", [{"to": target, "data": "0x" + c.hex()}, self.block]) for c in calls],
        )
        self.round_trips += 1
        out: list[bytes | RpcError] = []
        for reply in replies:
            if isinstance(reply, RpcError):
                _raise_if_unavailable(reply)
                out.append(reply)
                continue
            data = _hex_bytes(reply)
            if data is None or len(data) < out_len:
                out.append(RpcError("eth_call", None, f"unreadable result {reply!r:.80}"))
            else:
                out.append(data[:out_len])
        return out


class StateUnavailableError(NodeError):
    """The node cannot answer views at that block: it no longer keeps that block's state
    (pruned history) or does not serve `eth_call` at all. The message says which."""

    code = "state_unavailable"


_PRUNED: Final = ("missing trie node", "state not available", "pruned", "header not found",
                  "unknown block", "state is not available", "historical state",
                  "world state")  # fmt: skip


def unsupported(reply: RpcError) -> bool:
    """The node does not serve this method (as opposed to failing one call of it)."""
    message = reply.reason.lower()
    return reply.rpc_code == -32601 or "method not found" in message or "not available" in message


def _raise_if_unavailable(reply: RpcError) -> None:
    if any(m in reply.reason.lower() for m in _PRUNED):
        raise StateUnavailableError(f"the node no longer holds that state: {reply.reason}")
    if unsupported(reply):
        raise StateUnavailableError(f"the node does not answer eth_call: {reply.reason}")


def _hex_bytes(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value.startswith("0x"):
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None
