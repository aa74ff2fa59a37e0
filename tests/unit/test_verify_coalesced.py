"""Signature checks of small calls are coalesced per turn of the event loop onto a verifier
thread (`ledger_gateway.service._Coalesced`): the first check of a turn is done at once on the
loop, the later ones of that turn go in one hop off the event loop's thread (or on the loop in
the next turn when alone); a refusal comes back as a value, a failure as the exception; and a
check made on a new event loop is served even when an earlier loop went away before its hop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from dul import recovery
from ledger_gateway.errors import BadRequestError
from ledger_gateway.service import HOP_MIN, _Coalesced, _verifier


def call(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    return lambda: fn(*args)


def returning(value: Any) -> Callable[[], Any]:
    return lambda: value


def test_one_hop_per_turn_off_the_loop_thread() -> None:
    coalesced = _Coalesced()
    hops: list[int] = []
    original = _verifier().submit

    async def main() -> list[Any]:
        loop_thread = threading.get_ident()
        seen: list[tuple[Any, int]] = []

        def check(value: Any) -> Any:
            seen.append((value, threading.get_ident()))
            if value == "fail":
                raise RuntimeError("broken")
            return value

        def counting_submit(fn: Any) -> Any:
            hops.append(1)
            return original(fn)

        _verifier().submit = counting_submit  # type: ignore[method-assign,assignment]
        try:
            refusal = BadRequestError("no", code="bad_signature")
            fillers = [f"x{n}" for n in range(HOP_MIN - 2)]  # enough later checks to hop
            values = ["a", refusal, "fail", "b", *fillers]
            futures = [coalesced.check(call(check, v)) for v in values]
            results: list[Any] = []
            for future in futures:
                try:
                    results.append(await future)
                except RuntimeError as exc:
                    results.append(str(exc))
            later = await coalesced.check(call(check, "c"))  # a turn's first: at once
            # the same turn's second, alone in the next turn (fewer than HOP_MIN): on the loop
            with pytest.raises(RuntimeError, match="broken"):
                await coalesced.check(call(check, "fail"))
        finally:
            del _verifier().submit
        threads = [thread for _, thread in seen]
        later_checks = len(values) - 1
        assert threads[0] == loop_thread  # the turn's first, at once
        assert loop_thread not in threads[1 : 1 + later_checks]  # the rest, in one hop
        assert threads[1 + later_checks :] == [loop_thread, loop_thread]
        return [*results, later]

    results = asyncio.run(main())
    assert results[0] == "a"
    assert isinstance(results[1], BadRequestError)
    assert results[2:4] == ["broken", "b"]
    assert results[-1] == "c"
    assert len(hops) == 1


def test_fewer_later_checks_than_hop_min_are_done_on_the_loop_in_the_next_turn() -> None:
    coalesced = _Coalesced()
    hops: list[int] = []
    original = _verifier().submit

    async def main() -> list[int]:
        def counting_submit(fn: Any) -> Any:
            hops.append(1)
            return original(fn)

        _verifier().submit = counting_submit  # type: ignore[method-assign,assignment]
        try:
            # a turn's first and seven later checks (a burst parsed in one turn)
            futures = [coalesced.check(call(threading.get_ident)) for _ in range(8)]
            first_done = [f.done() for f in futures]
            threads = [await f for f in futures]
        finally:
            del _verifier().submit
        assert first_done == [True] + [False] * 7  # the rest wait for a turn
        return [int(t == threading.get_ident()) for t in threads]

    assert asyncio.run(main()) == [1] * 8  # all on the loop's thread
    assert hops == []


def test_a_new_event_loop_is_served_after_one_went_away_before_its_hop() -> None:
    coalesced = _Coalesced()
    loop = asyncio.new_event_loop()
    try:
        # a check whose loop never turns again: its hop never runs
        loop.run_until_complete(asyncio.sleep(0))

        async def abandoned() -> None:
            coalesced.check(returning("never"))

        loop.run_until_complete(abandoned())
    finally:
        loop.close()

    async def served() -> Any:
        return await asyncio.wait_for(coalesced.check(returning("served")), 5)

    assert asyncio.run(served()) == "served"


@pytest.mark.parametrize("count", [1, 15])
def test_every_future_gets_its_own_result(count: int) -> None:
    coalesced = _Coalesced()

    async def main() -> list[Any]:
        futures = [coalesced.check(returning(i * 2)) for i in range(count)]
        return [await f for f in futures]

    assert asyncio.run(main()) == [i * 2 for i in range(count)]


def test_a_check_on_the_loop_keeps_the_gil_and_one_on_the_verifier_releases_it() -> None:
    """A turn's first check is done at once on the loop's thread, within `holding_gil`
    (released, the GIL went to the writer or a verifier and the loop waited to take it back);
    the checks that hop run on the verifier thread, which releases it while the loop works on."""
    coalesced = _Coalesced()

    def holding() -> Any:
        return recovery._structs.recover is recovery._structs.holding

    async def main() -> tuple[Any, list[bool], Any]:
        first = coalesced.check(holding)
        done_at_once = first.done()
        together = [coalesced.check(holding) for _ in range(HOP_MIN)]
        await asyncio.sleep(0)
        failed = coalesced.check(call(lambda: 1 / 0))  # a turn's first, failing: raised
        return done_at_once, [await first] + [await f for f in together], failed

    done_at_once, held, failed = asyncio.run(main())
    assert done_at_once
    assert held == [True] + [False] * HOP_MIN
    assert isinstance(failed.exception(), ZeroDivisionError)
    assert recovery._structs.recover is recovery._structs.releasing  # off again after it
