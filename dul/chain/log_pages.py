"""Paged `eth_getLogs`: every log read of the product goes through here.

Nodes refuse wide log queries: Besu past `--rpc-max-logs-range` blocks (5,000 by default;
-32005 "Requested range exceeds maximum RPC range limit"), geth past 10,000 results ("query
returned more than 10000 results"), hosted endpoints past their own block ranges ("block range
too large"). The wording differs, so any refusal of a range is answered the same way: the
range is halved, down to one block, and the next page is fitted to the density just seen and
grown back (at most doubled) after a good one.

`paged` / `apaged` walk a block range with any per-page fetch (the indexer fetches a page with
its headers; the consent view with two queries); `get_logs` / `aget_logs` are the plain case,
one filter over a range, optionally newest first and stopping at the first page with a match.
The caller says which errors are refusals (`refused`): the indexer's JSON-RPC client already
classifies them, the gateway's counts every JSON-RPC error answer to `eth_getLogs` as one.
"""

from __future__ import annotations

from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
    Sized,
)
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

T = TypeVar("T")
Log = dict[str, Any]


def _size(page: Any) -> int:
    return len(cast(Sized, page))


@dataclass
class PageSizer:
    """Blocks per page: halve on refusal, fit to the log budget, double back after success.

    With `learn`, the sizer remembers the widest page served and the narrowest refused, and
    grows between them by bisection: a node's fixed range limit is found in a few refusals
    instead of being probed again after every good page. The ceiling is forgotten after
    `RELEARN` pages held below it, so one passing error does not slow every later read."""

    RELEARN = 64

    size: int
    maximum: int
    max_logs: int
    minimum: int = 1
    refused: int = field(default=0)
    learn: bool = False
    served: int = field(default=0)
    """Widest page served (with `learn`)."""
    ceiling: int | None = field(default=None)
    """Narrowest page refused (with `learn`)."""
    held: int = field(default=0)
    """Good pages kept below the ceiling since it was last lowered."""

    def refuse(self, span: int) -> bool:
        """Shrinks below `span`; False when already at one block (the refusal is final)."""
        if span <= self.minimum:
            return False
        self.refused += 1
        self.size = max(self.minimum, span // 2)
        if self.learn:
            self.ceiling = span if self.ceiling is None else min(self.ceiling, span)
            self.held = 0
            if self.served < span:
                self.size = max(self.size, self.served)
        return True

    def after(self, span: int, logs: int) -> None:
        """Aims the next page at `max_logs` logs at the density just seen, at most doubling."""
        fitted = span * self.max_logs // max(logs, 1)
        grown = 2 * span
        if self.learn:
            self.served = max(self.served, span)
            if self.ceiling is not None and grown >= self.ceiling:
                self.held += 1
                if self.held >= self.RELEARN:
                    self.ceiling, self.served, self.held = None, 0, 0
                else:
                    grown = max(span, (span + self.ceiling) // 2)
        self.size = max(self.minimum, min(self.maximum, grown, fitted))


def gateway_sizer() -> PageSizer:
    """The sizer of a long-lived reader of sparse events (the gateway's look-ups): pages start
    at Besu's default range limit and learn a lower one."""
    return PageSizer(5_000, 1_000_000, 5_000, learn=True)


class _Walk:
    """The ranges of one paged read over `first..last` (oldest or newest first)."""

    def __init__(self, first: int, last: int, sizer: PageSizer, newest_first: bool) -> None:
        self.low, self.high = first, last
        self.sizer = sizer
        self.newest_first = newest_first

    def next(self) -> tuple[int, int] | None:
        if self.low > self.high:
            return None
        size = max(1, self.sizer.size)
        if self.newest_first:
            return max(self.low, self.high - size + 1), self.high
        return self.low, min(self.high, self.low + size - 1)

    def refuse(self, a: int, b: int, exc: Exception) -> None:
        if not self.sizer.refuse(b - a + 1):
            raise exc

    def done(self, a: int, b: int, count: int) -> None:
        self.sizer.after(b - a + 1, count)
        if self.newest_first:
            self.high = a - 1
        else:
            self.low = b + 1


def paged(
    fetch: Callable[[int, int], T],
    first: int,
    last: int,
    *,
    sizer: PageSizer,
    refused: Callable[[Exception], bool],
    count: Callable[[T], int] = _size,
    newest_first: bool = False,
    on_refusal: Callable[[int, int, Exception], None] | None = None,
) -> Iterator[tuple[int, int, T]]:
    """(from, to, page) over `first..last`: `fetch(a, b)` per range; a refused range (per
    `refused`) is retried smaller, down to one block, where the refusal is raised."""
    walk = _Walk(first, last, sizer, newest_first)
    while (span := walk.next()) is not None:
        a, b = span
        try:
            page = fetch(a, b)
        except Exception as exc:
            if not refused(exc):
                raise
            walk.refuse(a, b, exc)
            if on_refusal is not None:
                on_refusal(a, b, exc)
            continue
        walk.done(a, b, count(page))
        yield a, b, page


async def apaged(
    fetch: Callable[[int, int], Awaitable[T]],
    first: int,
    last: int,
    *,
    sizer: PageSizer,
    refused: Callable[[Exception], bool],
    count: Callable[[T], int] = _size,
    newest_first: bool = False,
) -> AsyncIterator[tuple[int, int, T]]:
    """`paged` for an async fetch."""
    walk = _Walk(first, last, sizer, newest_first)
    while (span := walk.next()) is not None:
        a, b = span
        try:
            page = await fetch(a, b)
        except Exception as exc:
            if not refused(exc):
                raise
            walk.refuse(a, b, exc)
            continue
        walk.done(a, b, count(page))
        yield a, b, page


def span_filter(filter_: Mapping[str, Any], a: int, b: int) -> dict[str, Any]:
    """`filter_` narrowed to blocks `a..b` (its own block fields are replaced)."""
    narrowed = {k: v for k, v in filter_.items() if k not in ("fromBlock", "toBlock", "blockHash")}
    narrowed.update(fromBlock=hex(a), toBlock=hex(b))
    return narrowed


def get_logs(
    request: Callable[[dict[str, Any]], Sequence[Log]],
    filter_: Mapping[str, Any],
    first: int,
    last: int,
    *,
    sizer: PageSizer,
    refused: Callable[[Exception], bool],
    newest_first: bool = False,
    first_match: bool = False,
) -> list[Log]:
    """The logs `filter_` matches in blocks `first..last`, read page by page; `request(f)` is
    one `eth_getLogs` with filter `f`. With `first_match`, the first page that has any is the
    answer (with `newest_first`: the newest such page)."""
    found: list[Log] = []
    pages = paged(
        lambda a, b: list(request(span_filter(filter_, a, b))),
        first,
        last,
        sizer=sizer,
        refused=refused,
        newest_first=newest_first,
    )
    for _, _, logs in pages:
        found = logs + found if newest_first else found + logs
        if first_match and found:
            break
    return found


async def aget_logs(
    request: Callable[[dict[str, Any]], Awaitable[Sequence[Log]]],
    filter_: Mapping[str, Any],
    first: int,
    last: int,
    *,
    sizer: PageSizer,
    refused: Callable[[Exception], bool],
    newest_first: bool = False,
    first_match: bool = False,
) -> list[Log]:
    """`get_logs` for an async `request`."""

    async def fetch(a: int, b: int) -> list[Log]:
        return list(await request(span_filter(filter_, a, b)))

    found: list[Log] = []
    pages = apaged(fetch, first, last, sizer=sizer, refused=refused, newest_first=newest_first)
    async for _, _, logs in pages:
        found = logs + found if newest_first else found + logs
        if first_match and found:
            break
    return found
