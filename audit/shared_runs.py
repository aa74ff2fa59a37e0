"""One run for identical requests asked at once: callers that ask while a run with the same key
is under way wait for it and share its result (or its error).

Every signed-in console polls `GET /v1/verify`; each verify holds a worker thread, a node
connection and the store for as long as it reads the whole ledger, so N open tabs (or one
organization's script in a loop) must cost one run at a time, not N.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedRuns(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[Hashable, Future[T]] = {}
        self.runs = 0
        """Runs started (each shared by whoever asked while it ran)."""
        self.waiting = 0
        """Callers waiting for another caller's run right now."""

    def run(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            running = self._running.get(key)
            owner = running is None
            if running is None:
                running = self._running[key] = Future()
                self.runs += 1
            else:
                self.waiting += 1
        if not owner:
            try:
                return running.result()
            finally:
                with self._lock:
                    self.waiting -= 1
        try:
            result = compute()
        except BaseException as exc:
            running.set_exception(exc)
            raise
        finally:
            with self._lock:
                del self._running[key]
        running.set_result(result)
        return result
