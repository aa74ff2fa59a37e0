"""Besu's `--rpc-max-logs-range`, imposed by the permission guard (`--max-log-range N`).

Besu refuses an `eth_getLogs` whose `toBlock - fromBlock` exceeds N with JSON-RPC error -32005
"Requested range exceeds maximum RPC range limit" (Besu's `EthGetLogs`; its default N is 5,000).
The embedded node has no such limit, so a client that asks for `0x0 → latest` works there and
fails in production; with this option the embedded stack refuses the same requests the same way.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

RANGE_LIMIT_CODE = -32005
RANGE_LIMIT_MESSAGE = "Requested range exceeds maximum RPC range limit"

_HEAD_TAGS = frozenset({"latest", "pending", "safe", "finalized"})


class _UnresolvedError(Exception):
    """A block parameter the guard cannot read: the node answers it."""


def _block(value: object, head: int) -> int:
    if value is None:
        return head  # JSON-RPC: an absent fromBlock / toBlock means "latest"
    if isinstance(value, str):
        if value in _HEAD_TAGS:
            return head
        if value == "earliest":
            return 0
        if value.startswith("0x"):
            try:
                return int(value, 16)
            except ValueError:
                pass
    raise _UnresolvedError(value)


async def range_refusal(
    params: object, max_range: int, head: Callable[[], Awaitable[int]]
) -> dict[str, Any] | None:
    """The error object Besu answers `eth_getLogs(params)` with past `max_range`, or None to
    forward it (within the limit, a `blockHash` query, or parameters the node should judge)."""
    if not isinstance(params, list) or not params or not isinstance(params[0], dict):
        return None
    query = params[0]
    if "blockHash" in query:
        return None
    edges = (query.get("fromBlock"), query.get("toBlock"))
    needs_head = any(not (isinstance(e, str) and e.startswith("0x")) for e in edges)
    try:
        now = await head() if needs_head else 0
        first, last = (_block(e, now) for e in edges)
    except (_UnresolvedError, KeyError, TypeError, ValueError):  # the node will answer it
        return None
    if last - first > max_range:
        return {"code": RANGE_LIMIT_CODE, "message": RANGE_LIMIT_MESSAGE}
    return None


def head_reader(
    post: Callable[[bytes], Awaitable[tuple[int, bytes]]],
) -> Callable[[], Awaitable[int]]:
    """`eth_blockNumber` of the node behind `post` (an upstream's POST)."""

    async def head() -> int:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
        _, content = await post(json.dumps(body).encode())
        return int(json.loads(content)["result"], 16)

    return head
