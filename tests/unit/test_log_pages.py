"""Paged eth_getLogs (`dul.chain.log_pages`) and the guard's Besu-style range limit
(`dul.chain.log_range`), against an in-memory log source that refuses wide ranges as Besu does."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from dul.chain.log_pages import PageSizer, aget_logs, get_logs, paged
from dul.chain.log_range import RANGE_LIMIT_CODE, RANGE_LIMIT_MESSAGE, range_refusal


class RefusedError(Exception):
    pass


class Node:
    """Logs at the given blocks; refuses `toBlock - fromBlock > limit` (Besu's rule)."""

    def __init__(self, blocks: list[int], limit: int) -> None:
        self.blocks = blocks
        self.limit = limit
        self.calls: list[tuple[int, int]] = []

    def get_logs(self, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        a, b = int(filter_["fromBlock"], 16), int(filter_["toBlock"], 16)
        self.calls.append((a, b))
        assert filter_["address"] == "0xabc"
        if b - a > self.limit:
            raise RefusedError(RANGE_LIMIT_MESSAGE)
        return [{"blockNumber": hex(n), "address": "0xabc"} for n in self.blocks if a <= n <= b]

    async def aget_logs(self, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        return self.get_logs(filter_)


def numbers(logs: list[dict[str, Any]]) -> list[int]:
    return [int(entry["blockNumber"], 16) for entry in logs]


def refused(exc: Exception) -> bool:
    return isinstance(exc, RefusedError)


BLOCKS = [3, 900, 1_500, 7_777, 12_000, 19_999]


def test_every_log_is_read_in_order_through_pages_the_node_serves() -> None:
    node = Node(BLOCKS, limit=1_000)
    sizer = PageSizer(5_000, 1_000_000, 5_000)
    logs = get_logs(node.get_logs, {"address": "0xabc", "fromBlock": "0x0"}, 0, 20_000,
                    sizer=sizer, refused=refused)  # fmt: skip
    assert numbers(logs) == BLOCKS
    served = [(a, b) for a, b in node.calls if b - a <= 1_000]
    assert served[0][0] == 0
    assert served[-1][1] == 20_000
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(served))
    assert sizer.refused >= 3  # 5000 -> 2500 -> 1250 -> 625, then growing back is refused again


def test_a_learning_sizer_stops_probing_past_the_limit() -> None:
    plain, learning = Node(BLOCKS, 1_000), Node(BLOCKS, 1_000)
    a = PageSizer(5_000, 1_000_000, 5_000)
    b = PageSizer(5_000, 1_000_000, 5_000, learn=True)
    get_logs(plain.get_logs, {"address": "0xabc"}, 0, 50_000, sizer=a, refused=refused)
    get_logs(learning.get_logs, {"address": "0xabc"}, 0, 50_000, sizer=b, refused=refused)
    assert (b.served, b.ceiling) == (1_001, 1_002)  # Besu serves toBlock - fromBlock == limit
    assert b.refused < a.refused / 4
    assert len(learning.calls) < len(plain.calls)


def test_a_passing_refusal_is_forgotten() -> None:
    """A node that refused a 2-block page once (a passing error, not a limit) must not keep
    later reads at one block per request."""
    node = Node(BLOCKS, limit=10**9)
    sizer = PageSizer(2, 1_000_000, 5_000, learn=True)
    sizer.refuse(2)
    assert (sizer.size, sizer.ceiling) == (1, 2)
    logs = get_logs(node.get_logs, {"address": "0xabc"}, 0, 50_000, sizer=sizer, refused=refused)
    assert numbers(logs) == BLOCKS
    assert sizer.ceiling is None
    assert len(node.calls) < 200  # 64 one-block pages, then doubling


def test_newest_first_stops_at_the_newest_page_with_a_match() -> None:
    node = Node(BLOCKS, limit=1_000)
    sizer = PageSizer(500, 500, 5_000)
    logs = get_logs(node.get_logs, {"address": "0xabc"}, 0, 20_000, sizer=sizer,
                    refused=refused, newest_first=True, first_match=True)  # fmt: skip
    assert numbers(logs) == [19_999]
    assert node.calls == [(19_501, 20_000)]
    oldest = get_logs(node.get_logs, {"address": "0xabc"}, 0, 20_000, sizer=sizer,
                      refused=refused, first_match=True)  # fmt: skip
    assert numbers(oldest) == [3]
    everything = get_logs(node.get_logs, {"address": "0xabc"}, 0, 20_000, sizer=sizer,
                          refused=refused, newest_first=True)  # fmt: skip
    assert numbers(everything) == BLOCKS


def test_a_refusal_of_one_block_and_other_errors_are_raised() -> None:
    node = Node(BLOCKS, limit=-1)  # refuses everything
    with pytest.raises(RefusedError):
        get_logs(node.get_logs, {"address": "0xabc"}, 0, 100, sizer=PageSizer(64, 64, 10),
                 refused=refused)  # fmt: skip
    assert node.calls[-1][0] == node.calls[-1][1]  # shrank down to one block first

    def broken(_filter: dict[str, Any]) -> list[dict[str, Any]]:
        raise RuntimeError("node down")

    with pytest.raises(RuntimeError):
        get_logs(broken, {}, 0, 100, sizer=PageSizer(64, 64, 10), refused=refused)


def test_an_empty_range_asks_nothing() -> None:
    node = Node(BLOCKS, limit=1_000)
    assert get_logs(node.get_logs, {"address": "0xabc"}, 10, 9, sizer=PageSizer(8, 8, 8),
                    refused=refused) == []  # fmt: skip
    assert node.calls == []


def test_pages_fit_the_density_and_report_their_ranges() -> None:
    dense = list(range(0, 400))
    node = Node(dense, limit=10_000)
    sizer = PageSizer(100, 10_000, 50)
    pages = list(paged(lambda a, b: node.get_logs({"address": "0xabc", "fromBlock": hex(a),
                                                   "toBlock": hex(b)}),
                       0, 999, sizer=sizer, refused=refused))  # fmt: skip
    assert pages[0][:2] == (0, 99)
    assert pages[1][:2] == (100, 149)  # 100 logs in 100 blocks: the next page aims at 50
    assert sum(len(p) for _, _, p in pages) == 400
    assert pages[-1][1] == 999


def test_the_async_reader_matches_the_sync_one() -> None:
    node = Node(BLOCKS, limit=1_000)
    sizer = PageSizer(5_000, 10**6, 5_000)
    logs = asyncio.run(
        aget_logs(node.aget_logs, {"address": "0xabc"}, 0, 20_000, sizer=sizer, refused=refused)
    )
    assert numbers(logs) == BLOCKS
    newest = asyncio.run(aget_logs(node.aget_logs, {"address": "0xabc"}, 0, 20_000,
                                   sizer=PageSizer(5_000, 10**6, 5_000), refused=refused,
                                   newest_first=True, first_match=True))  # fmt: skip
    assert numbers(newest) == [19_999]


# --- the guard's limit --------------------------------------------------------------------------


def refusal(params: object, limit: int = 1_000, head: int = 5_000) -> dict[str, Any] | None:
    async def node_head() -> int:
        return head

    return asyncio.run(range_refusal(params, limit, node_head))


BESU_ERROR = {"code": RANGE_LIMIT_CODE, "message": RANGE_LIMIT_MESSAGE}


@pytest.mark.parametrize(
    ("query", "refused_"),
    [
        ({"fromBlock": "0x0", "toBlock": "latest"}, True),
        ({"fromBlock": "earliest"}, True),  # toBlock absent: latest
        ({"fromBlock": "0x0", "toBlock": hex(1_000)}, False),  # Besu: to - from > limit
        ({"fromBlock": "0x0", "toBlock": hex(1_001)}, True),
        ({"fromBlock": hex(4_000), "toBlock": "latest"}, False),
        ({"fromBlock": hex(3_999), "toBlock": "pending"}, True),
        ({}, False),  # latest..latest
        ({"blockHash": "0x" + "11" * 32}, False),
        ({"fromBlock": "0xzz", "toBlock": "latest"}, False),  # the node judges bad input
        ({"fromBlock": 7, "toBlock": "latest"}, False),
    ],
)
def test_the_guard_refuses_what_besu_refuses(query: dict[str, Any], refused_: bool) -> None:
    assert refusal([query]) == (BESU_ERROR if refused_ else None)


def test_the_guard_forwards_what_it_cannot_read() -> None:
    assert refusal(None) is None
    assert refusal([]) is None
    assert refusal(["0x0"]) is None
