"""The indexer's fetch pipeline: pages fetched, decoded and prepared ahead of the writer.

The blocks still to index are cut into ranges (sized by the indexer's `PageSizer`) and handed
to fetch workers: worker processes (`fetch_workers` ≥ 1), each with its own JSON-RPC
connection and decoder, so fetching, decoding and projecting rows run beside the writer
instead of sharing its interpreter; or one thread of the indexer's own process (0, and
whenever the indexer was given parts a process cannot rebuild, e.g. a test transport).

A worker fetches one range as one page (`Indexer.fetch`: headers, logs, decode, `prepare`).
When the node refuses the range, the worker shrinks it (halved, or fitted to the byte budget
from the reply's declared size) and fetches its start only; the rest goes back to be handed
out again. Pages reach the writer strictly in block order (they are keyed by their first
block), so it writes exactly what one sequential reader would, and every page is still
checked against its predecessor's hash at write time (a reorg between two workers' reads is
caught there). At most `depth` ranges are out at once (in a worker or done and waiting), so
memory stays at about `depth` pages whatever the workers' speed. Until the density of the
chain is known (a page of at least 1/16 of the byte budget, a refused or cut range, or a page
as wide as pages go), a range goes out beside others only when it cannot be cut: every range
out is read whole by the node, even one then refused or cut, and a sparse start (the
deployment's blocks) says nothing about the blocks after it. Meanwhile a range of a few blocks
ends where its blocks' gas (one header batch) would pass the byte budget at a byte of reply per
gas, about the most a log can produce: a sparse start followed by dense blocks is not read
whole by the node only for most of it to be dropped. Such a range, fitted beside others to a
quarter of the budget (the size of pages once the density is known; or one block, never cut),
goes out beside the ranges out when the gas can be read meanwhile (`gas_beside`: worker
processes; a thread worker shares the indexer's connection): the first dense blocks are not
read by one worker while the other waits. A reply over the byte budget keeps the blocks that
came whole within its first quarter (`PageFetcher.whole_blocks`); the rest of its range goes
out again, fitted to what the reply's declared length says about it. An error travels with
its range and reaches the writer only when every page before it is written, as if read in
order.

Worker processes live as long as the indexer (spawned once; following the head hands them
one small range at a time). They ignore Ctrl-C (the indexer stops them) and leave on their
own when the indexer's process is gone (`kill -9`): they never touch the store.
"""

from __future__ import annotations

import bisect
import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    from audit.indexer import Page
    from dul.chain.log_pages import PageSizer

log = structlog.get_logger("audit.pipeline")

MAX_FETCH_WORKERS = 16
FIT_BLOCKS = 256
"""While the chain's density is unknown, ranges of up to this many blocks (one batch of headers)
are fitted to their blocks' gas before they go out."""


@dataclass(frozen=True)
class FetchSpec:
    """What a worker process needs to build its own fetcher (all of it picklable)."""

    rpc_url: str
    token: str | None
    timeout: float
    contracts: dict[str, str]
    max_page_bytes: int
    cohort_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task:
    epoch: int
    first: int
    last: int


@dataclass
class Fetched:
    """A worker's answer to a task: a page from `task.first` (maybe ending before
    `task.last`) or the error that stopped it, with the ranges refused on the way."""

    task: Task
    page: Page | None = None
    error: BaseException | None = None
    refused: list[tuple[int, int, str, int]] = field(default_factory=list)
    """(first, last, error, declared reply bytes or 0) of each refused attempt."""


def fetch_prefix(fetch: Callable[[int, int], Page], task: Task, max_bytes: int) -> Fetched:
    """The page of `task`'s range, or of its longest start the node serves."""
    from audit.indexer import _gc_paused
    from dul.chain.rpc import RangeRefusedError

    first, last = task.first, task.last
    refused: list[tuple[int, int, str, int]] = []
    while True:
        try:
            with _gc_paused():
                return Fetched(task, fetch(first, last), None, refused)
        except RangeRefusedError as exc:
            span = last - first + 1
            if span <= 1:
                return Fetched(task, None, exc, refused)
            declared = exc.details.get("reply_bytes")
            refused.append((first, last, str(exc), declared if isinstance(declared, int) else 0))
            last = first + shrunk(span, declared, max_bytes) - 1
        except Exception as exc:  # handed to the writer, which decides
            return Fetched(task, None, exc, refused)


def shrunk(span: int, reply_bytes: Any, max_bytes: int) -> int:
    """Blocks to ask for after `span` blocks were refused: half, or fewer when the reply's
    declared size says how much too big it was (one refusal instead of several, each of
    which cost the node a full read)."""
    half = max(1, span // 2)
    if isinstance(reply_bytes, int) and reply_bytes > max_bytes > 0:
        return max(1, min(half, span * max_bytes // (2 * reply_bytes)))
    return half


# --- workers --------------------------------------------------------------------------------


class Workers(Protocol):
    def submit(self, task: Task) -> None: ...

    def get(self, timeout: float) -> Fetched:
        """The next answer; raises `queue.Empty` after `timeout` seconds."""
        ...

    def check(self) -> None:
        """Raises if a worker died."""
        ...

    def drain(self) -> None:
        """Drops the tasks no worker took yet."""
        ...

    def close(self) -> None: ...


class ThreadWorkers:
    """One fetch thread in this process (the indexer's own fetcher)."""

    def __init__(self, fetch: Callable[[int, int], Page], max_bytes: int) -> None:
        self.tasks: queue.Queue[Task | None] = queue.Queue()
        self.results: queue.Queue[Fetched] = queue.Queue()
        self.fetch = fetch
        self.max_bytes = max_bytes
        self.thread = threading.Thread(target=self._run, name="audit-fetch", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (task := self.tasks.get()) is not None:
            self.results.put(fetch_prefix(self.fetch, task, self.max_bytes))

    def submit(self, task: Task) -> None:
        self.tasks.put(task)

    def get(self, timeout: float) -> Fetched:
        return self.results.get(timeout=timeout)

    def check(self) -> None:
        if not self.thread.is_alive():
            from audit.indexer import IndexerError

            raise IndexerError("the fetch thread stopped")

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.tasks.get_nowait()

    def close(self) -> None:
        self.drain()
        self.tasks.put(None)
        self.thread.join(timeout=30)


class ProcessWorkers:
    """`count` spawned worker processes sharing one task queue and one answer queue."""

    def __init__(self, spec: FetchSpec, count: int) -> None:
        # Forked when this process runs no other thread (nothing can hold a lock the child
        # would inherit; the worker starts at once, where a spawned one imports for ~1 s);
        # spawned otherwise. A forked worker never touches what it inherited (the store's
        # connections among it) and leaves through os._exit, as multiprocessing's fork does.
        method = "fork" if threading.active_count() == 1 else "spawn"
        context: Any = multiprocessing.get_context(method)
        self.tasks: Any = context.Queue()
        self.results: Any = context.Queue()
        self.stopping: Any = context.Event()
        """Set by `close`: a worker takes no task after it."""
        self.processes = [
            context.Process(
                target=_work,
                args=(spec, self.tasks, self.results, self.stopping, os.getpid()),
                name=f"audit-fetch-{n}",
                daemon=True,
            )
            for n in range(count)
        ]
        for process in self.processes:
            process.start()

    def submit(self, task: Task) -> None:
        self.tasks.put(task)

    def get(self, timeout: float) -> Fetched:
        fetched: Fetched = self.results.get(timeout=timeout)
        return fetched

    def check(self) -> None:
        for process in self.processes:
            if not process.is_alive():
                from audit.indexer import IndexerError

                raise IndexerError(f"fetch worker {process.name} died (exit {process.exitcode})")

    def drain(self) -> None:
        with contextlib.suppress(queue.Empty):
            while True:
                self.tasks.get(timeout=0.05)

    def close(self) -> None:
        # Not `drain` (it waits 50 ms for tasks still on their way into the pipe): a worker
        # leaves at the first task or None it reads once `stopping` is set.
        self.stopping.set()
        for _ in self.processes:
            self.tasks.put(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        # Answers nobody will read must not keep this process's queue threads waiting.
        self.results.cancel_join_thread()
        self.tasks.close()
        self.results.close()


def _work(spec: FetchSpec, tasks: Any, results: Any, stopping: Any, parent: int) -> None:
    """A worker process: fetch, decode and prepare the ranges it is given until told to stop
    (`stopping`, or a None task) or its parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the indexer stops its workers itself
    results.cancel_join_thread()  # never wait at exit for a reader that is gone
    from audit.cohorts import close_sources, open_sources
    from audit.events import EventDecoder
    from audit.indexer import IndexerError, PageFetcher
    from dul.chain.rpc import RpcClient

    sources = open_sources(spec.cohort_sources)
    rpc = RpcClient(spec.rpc_url, timeout=spec.timeout, token=spec.token)
    fetcher = PageFetcher(rpc, EventDecoder(spec.contracts), max_page_bytes=spec.max_page_bytes,
                          cohort_sources=sources)  # fmt: skip
    try:
        while True:
            try:
                task = tasks.get(timeout=1.0)
            except queue.Empty:
                if os.getppid() != parent:
                    break
                continue
            if task is None or stopping.is_set():
                break
            fetched = fetch_prefix(fetcher.fetch, task, spec.max_page_bytes)
            if fetched.error is not None:
                try:
                    pickle.dumps(fetched.error)
                except Exception:  # an error that cannot travel still must
                    fetched.error = IndexerError(repr(fetched.error)[:2_000])
            results.put(fetched)
    finally:
        rpc.close()
        close_sources(sources)
    # Out at once, as a forked worker leaves: a spawned one otherwise tears its whole
    # interpreter down on the way out (1.2-1.9 s of the indexer's close at load 5, waiting to
    # join it). Nothing is owed: answers not read yet are dropped (`cancel_join_thread`).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# --- scheduling -----------------------------------------------------------------------------


class Pipeline:
    """Pages of `first..target` in block order, fetched by `workers` at most `depth` ahead.

    Iterating yields pages, or one exception (then stops). `epoch` tells this catch-up's
    answers from those of an earlier one that ended with ranges still out."""

    POLL_S = 0.5
    FADE = 0.95

    def __init__(
        self,
        workers: Workers,
        sizer: PageSizer,
        first: int,
        target: int,
        *,
        depth: int,
        epoch: int,
        max_bytes: int,
        stop: threading.Event | None = None,
        gas_of: Callable[[int, int], list[int]] | None = None,
        gas_beside: bool = False,
        waiting: Callable[[], None] | None = None,
    ) -> None:
        self.workers = workers
        self.sizer = sizer
        self.next = first
        self.target = target
        self.depth = max(1, depth)
        self.epoch = epoch
        self.max_bytes = max_bytes
        self.stop = stop or threading.Event()
        self.uncovered: list[tuple[int, int]] = [(first, target)] if first <= target else []
        """Ranges not handed out, ascending and disjoint."""
        self.done: dict[int, Fetched] = {}
        self.out = 0
        """Ranges handed out and not yet given to the writer."""
        self.learned = False
        """Whether the density is known: until then only ranges that cannot be cut go out
        beside others (`_beside`)."""
        self.density = 0.0
        """Reply bytes per block, the fading maximum of what was seen."""
        self.log_density = 0.0
        """Logs per block, likewise."""
        self.served = 0
        """The widest page served: wider ranges are tried one at a time (`probing`)."""
        self.probing: set[int] = set()
        self.gas_of = gas_of
        """Gas used by each block of a range, as far as the node has them (None: unknown)."""
        self.gas_beside = gas_beside and gas_of is not None
        """Whether `gas_of` may be called while ranges are out (not on a fetch thread's
        connection)."""
        self.waiting = waiting
        """Called each time the writer waits `POLL_S` for its next page with no answer
        arriving (it commits what it holds)."""
        self.dense: set[int] = set()
        """Ranges (by first block) whose blocks' gas filled half the fitting budget."""
        self.empty = False
        """Whether the last page received held no log (`_stretch`)."""

    def _dispatch(self) -> None:
        while self.uncovered:
            first, last = self.uncovered[0]
            writers_next = first == self.next  # the writer's next range always goes
            if self.out >= self.depth and not writers_next:
                return
            size = max(1, self.sizer.size)
            if size > self.served and self.probing:  # one untried size at a time: the others
                size = max(1, self.served)  # take the widest page served so far
            end = min(last, first + size - 1)
            if not self.learned and self.out == 0 and 0 < end - first < FIT_BLOCKS:
                end = self._fit(first, end, self.max_bytes)
            elif not self.learned and self.out:
                beside = self._beside(first, last)
                if beside is None and not writers_next:
                    return
                end = end if beside is None else beside
            elif self.learned and self.empty:
                end = self._stretch(first, last, end)
            if end - first + 1 > self.served:
                self.probing.add(first)
            if end == last:
                self.uncovered.pop(0)
            else:
                self.uncovered[0] = (end + 1, last)
            self.workers.submit(Task(self.epoch, first, end))
            self.out += 1

    def _beside(self, first: int, last: int) -> int | None:
        """While the density is unknown, the end of a range from `first` (at most `last`) that
        may go out beside the ranges out: its blocks' gas fits a quarter of the budget, the
        size of pages once the density is known (or it is one block: never cut). None when
        the gas cannot be read now: it waits for them."""
        if not self.gas_beside:
            return None
        end = min(last, first + max(1, self.sizer.size) - 1, first + FIT_BLOCKS - 1)
        return self._fit(first, end, self.max_bytes // 4)

    def _fit(self, first: int, end: int, budget: int) -> int:
        """The end of the longest start of `first..end` whose blocks' gas stays within
        `budget` bytes (a page of it would not be cut), counted at a byte of reply per gas:
        a log costs 375 gas and names ~400 bytes of hashes and numbers, a byte of its data 8
        gas for 2 hex digits (a quarter of the byte budget for a range alone cut the
        deployments of dul bench's chain into 7 pages, one round trip each, against 3). At
        least `first` goes. When its blocks fill half of it and their reply is not tiny (not a
        stretch of contract deployments: much gas, few logs), their page tells the density
        (`learned`). A hint only: a reply over the budget is still cut. Called with ranges out
        only when `gas_beside` (a thread worker's connection is free otherwise)."""
        if self.gas_of is None:
            return end
        used = 0
        for n, gas in enumerate(self.gas_of(first, end)):
            if n and used + gas > budget:
                end = first + n - 1
                break
            used += gas
        if used * 2 >= budget:
            self.dense.add(first)
        return end

    def _stretch(self, first: int, last: int, end: int) -> int:
        """After an empty page, the end of a range from `first` (at most `last`) stretched
        over the blocks whose gas fits a quarter of the byte budget at a byte per gas, and
        half the log budget at 375 gas a log (what a log costs at least), so a page of them
        is never cut: empty blocks after a dense stretch are one page, not one a block for as
        long as the fading density kept pages narrow (the 17-25 empty blocks after dul bench's
        accesses were as many pages). Only where `gas_beside`; never shorter than `end`, nor
        wider than pages go."""
        far = min(last, first + min(FIT_BLOCKS, self.sizer.maximum) - 1)
        if not self.gas_beside or self.gas_of is None or far <= end:
            return end
        budget = min(self.max_bytes // 4, self.sizer.max_logs // 2 * 375)
        used = 0
        for n, gas in enumerate(self.gas_of(first, far)):
            used += gas
            if used > budget:
                break
            end = max(end, first + n)
        return end

    def _receive(self, fetched: Fetched) -> None:
        for first, last, error, reply_bytes in fetched.refused:
            if self.sizer.refuse(last - first + 1):
                self._observe(last - first + 1, reply_bytes)
            log.info("audit.range_refused", first=first, last=last, next_size=self.sizer.size,
                     error=error)  # fmt: skip
        self.probing.discard(fetched.task.first)
        dense = fetched.task.first in self.dense
        self.dense.discard(fetched.task.first)
        page = fetched.page
        if page is not None:
            if page.over_budget:  # counted as a refusal: the node read more than was kept
                self.sizer.refused += 1
                log.info("audit.range_cut", first=page.first, last=fetched.task.last,
                         kept_to=page.last.number, reply_bytes=page.over_budget)  # fmt: skip
                # the blocks not kept hold the rest of the reply: the next pages fit that
                self._observe(fetched.task.last - page.last.number,
                              page.over_budget - page.reply_bytes)  # fmt: skip
            end = page.last.number
            span = end - page.first + 1
            # Ranges go out side by side once the chain's density is known: from a page of
            # some size (a sparse stretch, e.g. the deployment's blocks, says nothing about
            # the blocks after it, and each range out at once is read whole by the node even
            # when it comes back refused or cut), a refusal, a page as wide as pages go, or
            # one whose blocks filled the gas budget with more than deployments' few logs.
            self.learned = self.learned or bool(
                page.over_budget or fetched.refused or page.reply_bytes * 16 >= self.max_bytes
                or span >= self.sizer.maximum
                or (dense and page.reply_bytes * 256 >= self.max_bytes)
            )  # fmt: skip
            self.served = max(self.served, span)
            logs = page.count + len(page.quarantined)
            self.empty = logs == 0
            self.sizer.after(span, logs)
            self.log_density = max(logs / span, self.log_density * self.FADE)
            if self.log_density > 0:
                fits = int(self.sizer.max_logs / 2 / self.log_density)
                self.sizer.size = max(self.sizer.minimum, min(self.sizer.size, fits))
            self._observe(span, page.reply_bytes)
            if end < fetched.task.last:  # the rest of a refused range goes out again
                bisect.insort(self.uncovered, (end + 1, fetched.task.last))
        self.done[fetched.task.first] = fetched

    def _observe(self, span: int, reply_bytes: int) -> None:
        """Pages are fitted to half the log budget and a quarter of the byte budget at the
        densest stretch seen lately (slowly fading maxima), not to the last page alone:
        every refused range costs the node a full read, density jumps between the ranges out
        at once, and a worker's page is its memory."""
        if reply_bytes <= 0:
            return
        self.density = max(reply_bytes / span, self.density * self.FADE)
        fits = int(self.max_bytes / 4 / self.density)
        self.sizer.size = max(self.sizer.minimum, min(self.sizer.size, fits))

    def __iter__(self) -> Iterator[Page | BaseException]:
        while self.next <= self.target:
            self._dispatch()
            while self.next not in self.done:
                if self.stop.is_set():
                    return
                try:
                    fetched = self.workers.get(self.POLL_S)
                except queue.Empty:
                    self.workers.check()
                    if self.waiting is not None:
                        self.waiting()
                    continue
                if fetched.task.epoch == self.epoch:
                    self._receive(fetched)
                    self._dispatch()
            answer = self.done.pop(self.next)
            self.out -= 1
            if answer.page is None:
                assert answer.error is not None
                yield answer.error
                return
            self.next = answer.page.last.number + 1
            yield answer.page

    def close(self) -> None:
        """Takes back the ranges no worker started (answers still coming are ignored by
        the next pipeline's epoch). With none out (a catch-up that ended), there are none,
        and draining would only wait (50 ms with worker processes)."""
        if self.out:
            self.workers.drain()
