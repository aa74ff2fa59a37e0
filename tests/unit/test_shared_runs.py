"""`audit.shared_runs`: callers asking while an identical run is under way share it (GET
/v1/verify, polled by every console); another key, or a later call, runs on its own."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from audit.shared_runs import SharedRuns


def _until(condition: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def test_callers_during_a_run_share_it_and_later_ones_run_again() -> None:
    shared: SharedRuns[int] = SharedRuns()
    started, release = threading.Event(), threading.Event()
    computed: list[str] = []

    def slow() -> int:
        computed.append("slow")
        started.set()
        assert release.wait(30)
        return 42

    def never() -> int:
        computed.append("never")
        return -1

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(shared.run, ("verify", True), slow)
        assert started.wait(30)
        joined = [pool.submit(shared.run, ("verify", True), never) for _ in range(2)]
        other = pool.submit(shared.run, ("verify", False), lambda: 7)  # another key: its own
        assert other.result(30) == 7
        _until(lambda: shared.waiting == 2, "both callers to join the running verify")
        release.set()
        assert [first.result(30), *(j.result(30) for j in joined)] == [42, 42, 42]
    assert computed == ["slow"]
    assert (shared.runs, shared.waiting) == (2, 0)
    assert shared.run(("verify", True), lambda: 43) == 43  # the earlier run is over
    assert shared.runs == 3


def test_an_error_reaches_every_caller_of_the_run_and_is_not_kept() -> None:
    shared: SharedRuns[int] = SharedRuns()
    started, release = threading.Event(), threading.Event()

    def failing() -> int:
        started.set()
        assert release.wait(30)
        raise ConnectionError("node gone")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(shared.run, "k", failing)
        assert started.wait(30)
        joined = pool.submit(shared.run, "k", lambda: 0)
        _until(lambda: shared.waiting == 1, "the second caller to join")
        release.set()
        for future in (first, joined):
            with pytest.raises(ConnectionError):
                future.result(30)
    assert shared.run("k", lambda: 5) == 5
