"""Many reads of the node in few round trips, with standard JSON-RPC only (anvil, geth, Besu).

- `batch` sends JSON-RPC batch requests (a JSON array), bounded in items and bytes so that no
  node or proxy limit is met (Besu refuses batches over 1,024 items by default, the
  permissioned proxy bodies over 2 MiB); a node that answers a batch with one error object is
  asked one request at a time instead.
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

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
from eth_hash.auto import keccak

from audit.indexer import JsonRpc, NodeUnavailableError, RpcError

MAX_BATCH_ITEMS: Final = 256
MAX_BATCH_BYTES: Final = 1_000_000
MAX_INITCODE: Final = 49_152  # EIP-3860
MAX_RETURNED_CODE: Final = 24_576  # EIP-170: a constructor's output is code, bounded


@dataclass(frozen=True, slots=True)
class RpcFailure:
    """A request of a batch that the node answered with an error."""

    code: int | None
    message: str
    data: Any = None


Reply = Any  # the result, or an RpcFailure


def batch(rpc: JsonRpc, requests: Sequence[tuple[str, Sequence[Any]]]) -> list[Reply]:
    """Each request's result (or `RpcFailure`), in order; as few HTTP requests as the limits
    allow. Raises NodeUnavailableError when the node cannot be reached or answers nonsense."""
    replies: list[Reply] = []
    for chunk in _chunks(requests):
        replies.extend(_send(rpc, chunk))
    return replies


def _chunks(
    requests: Sequence[tuple[str, Sequence[Any]]],
) -> Iterator[list[tuple[str, Sequence[Any]]]]:
    chunk: list[tuple[str, Sequence[Any]]] = []
    size = 0
    for method, params in requests:
        cost = len(method) + sum(len(p) if isinstance(p, str) else 64 for p in params) + 64
        if chunk and (len(chunk) >= MAX_BATCH_ITEMS or size + cost > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((method, params))
        size += cost
    if chunk:
        yield chunk


def _send(rpc: JsonRpc, chunk: Sequence[tuple[str, Sequence[Any]]]) -> list[Reply]:
    body = [
        {"jsonrpc": "2.0", "id": i, "method": method, "params": list(params)}
        for i, (method, params) in enumerate(chunk)
    ]
    try:
        response = rpc.client.post(
            rpc.url, content=json.dumps(body), headers={"content-type": "application/json"}
        )
    except httpx.HTTPError as exc:
        raise NodeUnavailableError(f"batch of {len(chunk)} {chunk[0][0]}: {exc!r}") from exc
    if response.status_code >= 400 and response.status_code != 413:
        raise NodeUnavailableError(f"batch of {len(chunk)}: HTTP {response.status_code}")
    try:
        reply = response.json() if response.status_code != 413 else None
    except ValueError as exc:
        raise NodeUnavailableError(f"batch of {len(chunk)}: unreadable reply ({exc})") from exc
    if not isinstance(reply, list):
        # Batches refused (or too big for this node): one request at a time.
        return [_single(rpc, method, params) for method, params in chunk]
    by_id = {item.get("id"): item for item in reply if isinstance(item, dict)}
    out: list[Reply] = []
    for i, (method, params) in enumerate(chunk):
        item = by_id.get(i)
        out.append(_single(rpc, method, params) if item is None else _result(item))
    return out


def _single(rpc: JsonRpc, method: str, params: Sequence[Any]) -> Reply:
    try:
        return rpc.call(method, *params)
    except RpcError as exc:
        return RpcFailure(exc.details.get("rpc_code"), exc.message)


def _result(item: dict[str, Any]) -> Reply:
    error = item.get("error")
    if error is not None:
        if not isinstance(error, dict):
            return RpcFailure(None, str(error))
        return RpcFailure(error.get("code"), str(error.get("message", error)), error.get("data"))
    return item.get("result")


def block_hashes(rpc: JsonRpc, numbers: Sequence[int]) -> dict[int, str | None]:
    """The node's hash of each block (None: it has no such block), in batches."""
    replies = batch(rpc, [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
    out: dict[int, str | None] = {}
    for number, reply in zip(numbers, replies, strict=True):
        if isinstance(reply, RpcFailure):
            raise RpcError(f"eth_getBlockByNumber({number}): {reply.message}")
        out[number] = str(reply["hash"]).lower() if isinstance(reply, dict) else None
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
    """A view function with static arguments and outputs, e.g.
    `View("memberOf(address)", ("org:bytes32", "roles:uint8"))`."""

    signature: str
    outputs: tuple[str, ...]
    """`name:type` of each output word, in order (a static struct: its fields)."""
    name: str = field(init=False)
    inputs: tuple[str, ...] = field(init=False)
    selector: bytes = field(init=False)
    fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        name, _, rest = self.signature.partition("(")
        inner = rest.rstrip(")")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "inputs", tuple(inner.split(",")) if inner else ())
        object.__setattr__(self, "selector", keccak(self.signature.encode())[:4])
        object.__setattr__(self, "fields", tuple(o.partition(":")[0] for o in self.outputs))

    def calldata(self, args: Sequence[Any]) -> bytes:
        if len(args) != len(self.inputs):
            raise ValueError(f"{self.signature} takes {len(self.inputs)} arguments")
        return self.selector + b"".join(
            [_word_in(k, a) for k, a in zip(self.inputs, args, strict=True)]
        )

    def encode(self, values: Mapping[str, Any]) -> bytes:
        """The output bytes the view returns for `values` (by output name)."""
        outputs = (o.partition(":") for o in self.outputs)
        return b"".join([_word_in(kind, values[name]) for name, _, kind in outputs])

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < 32 * len(self.outputs):
            raise ValueError(f"{self.signature} returned {len(data)} bytes")
        return {
            name: _word_out(kind, data[32 * i : 32 * i + 32])
            for i, (name, _, kind) in enumerate(o.partition(":") for o in self.outputs)
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
    bytes (`32 * len(view.outputs)` of them; `view.decode` makes a dict) or an `RpcFailure`."""

    def __init__(self, rpc: JsonRpc, block: int) -> None:
        self.rpc = rpc
        self.block = hex(block)
        self.batched = True
        self.calls = 0
        self.round_trips = 0

    def read(
        self, target: str, view: View, args: Sequence[Sequence[Any]]
    ) -> list[bytes | RpcFailure]:
        return self.read_calldata(target, view, [view.calldata(a) for a in args])

    def read_calldata(
        self, target: str, view: View, calls: list[bytes]
    ) -> list[bytes | RpcFailure]:
        """Like `read`, with each call's data already encoded (a hot path builds it faster)."""
        if not calls:
            return []
        out_len = 32 * len(view.outputs)
        self.calls += len(calls)
        if self.batched:
            return self._batched(target, calls, out_len)
        return self._singly(target, calls, out_len)

    def _batched(self, target: str, calls: list[bytes], out_len: int) -> list[bytes | RpcFailure]:
        size = batch_capacity(len(calls[0]), out_len)
        groups = [calls[i : i + size] for i in range(0, len(calls), size)]
        replies = batch(
            self.rpc,
            [("eth_call", [{"data": batch_calldata(target, g, out_len)}, self.block])
             for g in groups],
        )  # fmt: skip
        self.round_trips += 1
        out: list[bytes | RpcFailure] = []
        answered = 0
        for group, reply in zip(groups, replies, strict=True):
            data = _hex_bytes(reply)
            if data is None or len(data) != 1 + out_len * len(group):
                if isinstance(reply, RpcFailure):
                    _raise_if_unavailable(reply)
                out.extend(self._singly(target, group, out_len))  # one reverts, or no support
                continue
            answered += 1
            out.extend(data[1 + i * out_len : 1 + (i + 1) * out_len] for i in range(len(group)))
        if not answered:
            self.batched = False  # this node does not run it: do not ask again
        return out

    def _singly(self, target: str, calls: list[bytes], out_len: int) -> list[bytes | RpcFailure]:
        replies = batch(
            self.rpc,
            [("eth_call", [{"to": target, "data": "0x" + c.hex()}, self.block]) for c in calls],
        )
        self.round_trips += 1
        out: list[bytes | RpcFailure] = []
        for reply in replies:
            if isinstance(reply, RpcFailure):
                _raise_if_unavailable(reply)
                out.append(reply)
                continue
            data = _hex_bytes(reply)
            if data is None or len(data) < out_len:
                out.append(RpcFailure(None, f"unreadable result {reply!r:.80}"))
            else:
                out.append(data[:out_len])
        return out


class StateUnavailableError(RpcError):
    """The node cannot answer views at that block: it no longer keeps that block's state
    (pruned history) or does not serve `eth_call` at all. The message says which."""

    code = "state_unavailable"


_PRUNED: Final = ("missing trie node", "state not available", "pruned", "header not found",
                  "unknown block", "state is not available", "historical state",
                  "world state")  # fmt: skip


def unsupported(reply: RpcFailure) -> bool:
    """The node does not serve this method (as opposed to failing one call of it)."""
    message = reply.message.lower()
    return reply.code == -32601 or "method not found" in message or "not available" in message


def _raise_if_unavailable(reply: RpcFailure) -> None:
    if any(m in reply.message.lower() for m in _PRUNED):
        raise StateUnavailableError(f"the node no longer holds that state: {reply.message}")
    if unsupported(reply):
        raise StateUnavailableError(f"the node does not answer eth_call: {reply.message}")


def _hex_bytes(value: Any) -> bytes | None:
    if not isinstance(value, str) or not value.startswith("0x"):
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None
