"""`audit.chain_reads` against scripted nodes: batches split and answered in order, a node
that refuses batches asked one at a time, a node that refuses the batch constructor asked view
by view, a reverting view named alone, pruned state and unserved methods told apart. (That the
constructor computes the right outputs on a real EVM is `tests/integration/test_verify_state`.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from audit import chain_reads
from audit.chain_reads import (
    StateUnavailableError,
    View,
    ViewReader,
    batch,
    batch_capacity,
)
from dul.chain import rpc as rpc_module
from dul.chain.rpc import RpcClient, RpcError
from dul.contracts.bindings import function

TARGET = "0x" + "42" * 20
DECISION = View(function("AccessLog", "decisionOf"), ("decision",))

Answer = Callable[[dict[str, Any]], dict[str, Any]]


def node(answer: Answer, *, batches: bool = True) -> tuple[RpcClient, list[Any]]:
    """A RpcClient whose node answers each request with `answer`; the bodies it received."""
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if isinstance(body, list):
            if not batches:
                refused = {"code": -32600, "message": "batches are not served"}
                return httpx.Response(200, json={"jsonrpc": "2.0", "id": None, "error": refused})
            return httpx.Response(200, json=[{"jsonrpc": "2.0", "id": b["id"], **answer(b)}
                                             for b in reversed(body)])  # fmt: skip
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], **answer(body)})

    return RpcClient("http://node.invalid", transport=httpx.MockTransport(handle)), seen


def single_views(request: dict[str, Any]) -> dict[str, Any]:
    """A node without the batch constructor: a call without `to` fails; a decision is the
    id's last byte mod 3, and id ...ff reverts."""
    call = request["params"][0]
    if "to" not in call:
        return {"error": {"code": -32000, "message": "contract creation not supported"}}
    request_id = bytes.fromhex(call["data"][2:])[4:36]  # (requestId, agreementId)
    if request_id[-1] == 0xFF:
        return {"error": {"code": 3, "message": "execution reverted"}}
    return {"result": "0x" + (request_id[-1] % 3).to_bytes(32, "big").hex()}


AGREEMENT = "0x" + "a1" * 32


def ids(count: int) -> list[list[str]]:
    return [["0x" + n.to_bytes(32, "big").hex(), AGREEMENT] for n in range(count)]


def test_a_batch_is_split_within_limits_and_answered_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rpc_module, "MAX_BATCH_ITEMS", 3)
    rpc, seen = node(lambda r: {"result": r["params"][0]})
    assert batch(rpc, [("eth_chainId", [str(n)]) for n in range(7)]) == [str(n) for n in range(7)]
    assert [len(b) for b in seen] == [3, 3, 1]


def test_a_node_refusing_batches_is_asked_one_request_at_a_time() -> None:
    rpc, seen = node(lambda r: {"result": r["params"][0]}, batches=False)
    assert batch(rpc, [("eth_chainId", ["a"]), ("eth_chainId", ["b"])]) == ["a", "b"]
    assert [type(b) for b in seen] == [list, dict, dict]


def test_without_the_batch_constructor_views_are_read_one_by_one() -> None:
    rpc, seen = node(single_views)
    reader = ViewReader(rpc, 7)
    args = [*ids(5), ["0x" + "ff" * 32, AGREEMENT]]
    got = reader.read(TARGET, DECISION, args)
    assert [DECISION.decode(g)["decision"] for g in got[:5] if isinstance(g, bytes)] == [
        0, 1, 2, 0, 1,
    ]  # fmt: skip
    assert isinstance(got[5], RpcError)
    assert got[5].reason == "execution reverted"
    assert reader.batched is False  # not asked again
    reader.read(TARGET, DECISION, ids(2))
    assert all("to" in item["params"][0] for item in seen[-1])
    assert {item["params"][1] for b in seen for item in b} == {"0x7"}  # at the block asked


def test_a_batch_with_one_reverting_view_is_read_singly_and_names_only_it() -> None:
    def answer(request: dict[str, Any]) -> dict[str, Any]:
        if "to" not in request["params"][0]:  # the batch constructor reverts as a whole
            return {"error": {"code": 3, "message": "execution reverted"}}
        return single_views(request)

    rpc, _ = node(answer)
    got = ViewReader(rpc, 1).read(TARGET, DECISION, [["0x" + "ff" * 32, AGREEMENT], *ids(2)])
    assert isinstance(got[0], RpcError)
    assert got[1:] == [(0).to_bytes(32, "big"), (1).to_bytes(32, "big")]


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ({"code": -32000, "message": "missing trie node abc (path )"}, "no longer holds"),
        ({"code": -32601, "message": "the method eth_call does not exist"}, "does not answer"),
    ],
)
def test_pruned_state_and_unserved_calls_make_the_state_unavailable(
    error: dict[str, Any], reason: str
) -> None:
    rpc, _ = node(lambda r: {"error": error})
    with pytest.raises(StateUnavailableError, match=reason):
        ViewReader(rpc, 1).read(TARGET, DECISION, ids(1))


def test_a_batch_call_stays_within_the_initcode_and_code_size_limits() -> None:
    assert batch_capacity(36, 32) == 767  # returned code <= 24,576 bytes (EIP-170)
    assert batch_capacity(100, 32) == 489  # initcode <= 49,152 bytes (EIP-3860)
    assert batch_capacity(36, 320) == 76
    for in_len, out_len in ((36, 32), (100, 32), (68, 32), (36, 320)):
        count = batch_capacity(in_len, out_len)
        data = chain_reads.batch_calldata(TARGET, [b"\0" * in_len] * count, out_len)
        assert len(data) // 2 - 1 <= chain_reads.MAX_INITCODE
        assert 1 + count * out_len <= chain_reads.MAX_RETURNED_CODE
