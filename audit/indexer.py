"""The indexer: catch up with the chain, then follow it, into the audit store.

One loop, one page of blocks at a time: `eth_getLogs` over every deployed contract address,
decoded by `audit.events`, written by `audit.store` in one transaction together with the
checkpoint (block number and hash). So the store always equals "the chain up to the
checkpoint": a crash at any point loses at most the page in flight, and the restart redoes it.

Pages are sized in blocks and adapt: halved when the node refuses a range (too many results,
a body too big, a timeout) or when the reply outgrows `max_page_bytes` (read as a stream and
dropped past the budget: a dense stretch of chain cannot blow up memory), fitted to
`max_logs_per_page` logs at the density just seen, and grown back (at most doubled) after a
good page (`dul.chain.log_pages`, the paging the gateway and the CLI use too).

Cohorts: with hospital cohort stores configured (`cohort_sources`), each page's granted accesses
with a cohort get their leaves from those stores in one batched query, checked against the
root on chain, with every subject's inclusion proof (`audit.cohorts`), built in the fetching
thread and written in the page's transaction. A cohort no store held yet is retried while the
indexer idles at the head (every `cohort_retry_s`).

Reorgs: each page must start on the stored checkpoint (the first block's parent hash equals
the checkpoint hash) and the last block's hash must not change while its logs are read. When
the node's history no longer contains the checkpoint, the indexer searches the stored block
hashes for the highest block the node still has (binary search: stored hashes of one history
match the node's up to the fork and never above it), deletes everything above it, and raises
the alarm. Only blocks with events (and the checkpoint) are stored, so the fork lies between
that verified ancestor and the first stored block that diverged (both in the alarm); no row
lies between them, so the store is exactly the one of a rollback to the true ancestor. The
alarm is a structlog error `audit.reorg` and the `dul_audit_reorgs_total` counter; on a
QBFT chain (immediate finality) that is an incident, not routine.

Newly audited contracts: a store's checkpoint lists the contracts it indexes, and another
deployment is refused (`store_mismatch`). A store made by an older audit service, which indexed
a subset of today's contracts at the same addresses (e.g. before ArtifactRegistry was audited),
is not refused and needs no re-index: before going on, the indexer reads the new contracts' logs
from their deployment block up to the checkpoint, from the store's own history (the
checkpoint's hash is re-checked after reading), and adds them with the new contract list in one
transaction (`audit.contracts_added` in the log). The store is then the one a fresh index gives.

Errors (all `dul.errors.DulError`, stable codes):

    IndexerError                 indexer_error
    ├── ChainMovedError               chain_moved        the page's last block changed under us
    └── StoreMismatchError            store_mismatch     the store indexes another chain/deployment

and the node's own (`dul.chain.rpc`, one client for the whole product): `NodeUnavailableError`
node_unavailable (transport failure / HTTP 5xx, retried), `RpcError` rpc_error (a JSON-RPC
error answer) and its `RangeRefusedError` range_refused (the node will not serve this log range).
"""

from __future__ import annotations

import bisect
import contextlib
import gc
import itertools
import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from audit.cohorts import (
    CohortRows,
    CohortSource,
    close_sources,
    open_sources,
    resolve,
)
from audit.events import AUDITED_CONTRACTS, DecodedEvent, EventDecoder
from audit.pipeline import (
    MAX_FETCH_WORKERS,
    FetchSpec,
    Pipeline,
    ProcessWorkers,
    ThreadWorkers,
    Workers,
)
from audit.store import (
    AuditStore,
    BlockRef,
    PreparedPage,
    Quarantine,
    StoredCheckpoint,
    access_cohorts,
    events_of,
    prepare,
    prepare_logs,
)
from dul.chain.log_pages import PageSizer, get_logs
from dul.chain.rpc import (
    GET_LOGS,
    NodeUnavailableError,
    RangeRefusedError,
    RpcClient,
    range_refused,
)
from dul.errors import DulError

log = structlog.get_logger("audit.indexer")


class IndexerError(DulError):
    code = "indexer_error"


class ChainMovedError(IndexerError):
    code = "chain_moved"


class StoreMismatchError(IndexerError):
    code = "store_mismatch"


# --- metrics and summary ----------------------------------------------------------------------


class IndexerMetrics:
    """Prometheus metrics; pass the registry `/metrics` serves (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reorgs = Counter(
            "dul_audit_reorgs_total", "Rollbacks after the chain's history changed",
            registry=self.registry,
        )  # fmt: skip
        self.events = Counter(
            "dul_audit_events_indexed_total", "Contract events written to the store",
            registry=self.registry,
        )  # fmt: skip
        self.checkpoint = Gauge(
            "dul_audit_checkpoint_block", "Last indexed block", registry=self.registry
        )
        self.lag = Gauge(
            "dul_audit_lag_blocks", "Blocks between the checkpoint and the head",
            registry=self.registry,
        )  # fmt: skip
        self.quarantined = Counter(
            "dul_audit_events_quarantined_total",
            "Logs the indexer could not apply, kept in quarantined_event and skipped",
            registry=self.registry,
        )


@dataclass
class IndexSummary:
    """What `dul audit index --json` prints."""

    start_block: int = 0
    checkpoint_block: int = 0
    checkpoint_hash: str = ""
    head_block: int = 0
    events: int = 0
    pages: int = 0
    refused_ranges: int = 0
    reorgs: int = 0
    rolled_back_events: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    cohorts_settled_late: int = 0
    """Cohorts whose leaves a source gave only on a retry."""
    quarantined: int = 0
    """Logs this run could not apply and quarantined (`quarantined_event`)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Page:
    """Blocks `first..last` fetched, decoded and `prepare`d for the store."""

    first: int
    last: BlockRef
    parent_hash: str
    prepared: PreparedPage
    cohorts: CohortRows | None = None
    quarantined: list[Quarantine] = field(default_factory=list)
    """Logs of these blocks that do not decode as the audited events they claim to be."""
    reply_bytes: int = 0
    """Length of the `eth_getLogs` reply: the next pages are fitted to the byte budget too."""
    over_budget: int = 0
    """The declared length of a reply over the byte budget whose first whole blocks made
    this page (ending before the range asked for; the rest is asked for again), else 0."""

    @property
    def events(self) -> list[DecodedEvent]:
        """The events, rebuilt from the rows (what a refused page is probed with)."""
        return events_of(self.prepared)

    @property
    def count(self) -> int:
        return self.prepared.count


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic GC while a page's objects are built: they hold no cycles, and generation-0
    collections triggered by their sheer number cost ~40% of decoding (measured)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def _gc_relaxed(young: int = 100_000) -> Iterator[None]:
    """A generation-0 collection only every `young` net allocations (not 700) while a
    catch-up writes: the writer holds a transaction's pages, tens of thousands of fresh row
    tuples without cycles, and the collection after each page's unpacking walked them all
    (the writer's CPU to receive dul bench's pages: ~2.6 -> ~1.8 us per event, 4 runs each,
    load 5). The thresholds are put back after."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], young), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


# --- the indexer ------------------------------------------------------------------------------


def _block_ref(header: Mapping[str, Any]) -> BlockRef:
    return BlockRef(
        number=int(header["number"], 16),
        hash=str(header["hash"]).lower(),
        parent_hash=str(header["parentHash"]).lower(),
        timestamp=int(header["timestamp"], 16),
    )


class PageFetcher:
    """Fetches, decodes and prepares one page of blocks: the indexer's own (in a thread), or a
    fetch worker process's with its own connection and decoder (`audit.pipeline`)."""

    def __init__(
        self,
        rpc: RpcClient,
        decoder: EventDecoder,
        *,
        max_page_bytes: int,
        cohort_sources: Sequence[CohortSource] = (),
    ) -> None:
        self.rpc = rpc
        self.decoder = decoder
        self.addresses = decoder.addresses
        self.max_page_bytes = max_page_bytes
        self.cohort_sources = list(cohort_sources)

    def header(self, number: int) -> BlockRef | None:
        header = self.rpc.request("eth_getBlockByNumber", hex(number), False)
        return None if header is None else _block_ref(header)

    def bounds(self, first: int, last: int) -> tuple[BlockRef | None, BlockRef | None]:
        """Blocks `last` and `first` (the page's end and its start) in one round trip: a
        JSON-RPC batch of both reads where the page has two ends."""
        if first == last:
            header = self.header(last)
            return header, header
        read = [("eth_getBlockByNumber", (hex(n), False)) for n in (last, first)]
        refs: list[BlockRef | None] = []
        for result in self.rpc.batch(read):
            if isinstance(result, Exception):
                raise result
            refs.append(None if result is None else _block_ref(result))
        return refs[0], refs[1]

    def gas_used(self, first: int, last: int) -> list[int]:
        """The gas used by each of blocks `first..last` (one batch of headers), up to the first
        the node does not have or whose header names none (the pipeline's density hint)."""
        read = [("eth_getBlockByNumber", (hex(n), False)) for n in range(first, last + 1)]
        used: list[int] = []
        for header in self.rpc.batch(read):
            try:
                used.append(int(header["gasUsed"], 16))
            except (KeyError, TypeError, ValueError):
                break
        return used

    def whole_blocks(self, first: int, filter_: dict[str, Any]) -> tuple[list[Any], int, int]:
        """The logs of a page of several blocks, 0 and the reply's length; or, when the reply
        is over the byte budget, the logs of its blocks that came whole within its first
        quarter (the size pages are fitted to: a page's memory stays as bounded as before),
        the first block not kept and about the bytes kept (the node's reply is in block
        order: what the node read for it is not thrown away, and the rest of the range is
        asked for again). A reply whose first block alone is over the budget, or that is not
        in block order, is refused as before."""
        logs, complete = self.rpc.request_prefix(
            GET_LOGS, filter_, max_bytes=self.max_page_bytes, keep_bytes=self.max_page_bytes // 4
        )
        if complete:
            return list(logs), 0, self.rpc.reply_bytes
        kept: list[Any] = list(logs)[:-1]  # the last element may be incomplete
        numbers = [_block_number(entry) for entry in kept]
        if any(later < earlier for earlier, later in itertools.pairwise(numbers)):
            numbers = []  # not in block order: nothing can be kept
        elif numbers and numbers[0] < 0:
            numbers = []
        if not numbers or numbers[-1] <= first:
            reply = self.rpc.reply_bytes
            raise RangeRefusedError(
                f"eth_getLogs: a {reply or 'larger'}-byte reply is over the page budget",
                reply_bytes=reply or None,
            )
        cut = numbers[-1]  # the last block in the prefix may go on past it
        whole = bisect.bisect_left(numbers, cut)
        return kept[:whole], cut, self.max_page_bytes // 4 * whole // len(logs)

    def page_of_logs(self, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        """One `eth_getLogs` over a page's blocks, its reply bounded unless it is one block
        (a block's logs cannot be split)."""
        one_block = filter_["fromBlock"] == filter_["toBlock"]
        logs = self.rpc.request(
            "eth_getLogs", filter_, max_bytes=None if one_block else self.max_page_bytes
        )
        return list(logs)

    def fetch(self, first: int, last: int) -> Page:
        """Blocks `first..last` as one page, consistent with one history of the chain."""
        before, start = self.bounds(first, last)
        if before is None or start is None or before.parent_hash is None:
            raise ChainMovedError(f"blocks {first}..{last} are no longer on the node")
        filter_ = {"fromBlock": hex(first), "toBlock": hex(last), "address": self.addresses}
        cut = 0
        if first == last:
            logs: list[Any] = self.page_of_logs(filter_)
            reply_bytes = self.rpc.reply_bytes
        else:
            logs, cut, reply_bytes = self.whole_blocks(first, filter_)
        over_budget = self.rpc.reply_bytes if cut else 0
        tip: BlockRef | None = None
        if not cut:
            after = self.header(last)
        else:  # the page ends before `cut`; its end is read while `last` is still the same
            after, tip = self.bounds(cut - 1, last)
            if tip is None:
                raise ChainMovedError(f"block {cut - 1} is no longer on the node")
        if after is None or after.hash != before.hash:
            raise ChainMovedError(f"block {last} changed while its logs were read")
        if cut:
            assert tip is not None
            before, last = tip, cut - 1
        prepared, failed, ordered = prepare_logs(self.decoder, logs)
        quarantined = [_quarantine(entry, "decode", exc) for entry, exc in failed]
        for q in quarantined:
            if not first <= q.block_number <= last:
                raise IndexerError(f"the node returned a log of block {q.block_number}")
        for row in prepared.rows.rows["event"]:  # (block, tx, log, tx hash, block hash, ...)
            if row[0] == last and row[4] != before.hash:
                raise ChainMovedError(f"logs of block {last} come from another history")
            if not first <= row[0] <= last:
                raise IndexerError(f"the node returned a log of block {row[0]}")
        if not ordered:  # rebuilt in chain order from the rows (no node does this: a safeguard)
            prepared = prepare(sorted(events_of(prepared), key=lambda e: (e.block_number,
                                                                         e.log_index)))  # fmt: skip
        assert start.parent_hash is not None
        cohorts = None
        if self.cohort_sources:
            cohorts = resolve(
                self.cohort_sources, access_cohorts(prepared.rows.rows["access_event"])
            )
        # every block's time, whatever the node: its row holds it, and the events rebuilt
        # from the rows when the store refuses the page carry it
        known = {} if before.timestamp is None else {before.number: before.timestamp}
        prepared.blocks = self.stamp_blocks(prepared.blocks, known)
        return Page(first, before, start.parent_hash, prepared, cohorts, quarantined,
                    reply_bytes, over_budget)  # fmt: skip

    def stamp_blocks(
        self, blocks: list[tuple[BlockRef, int]], known: dict[int, int]
    ) -> list[tuple[BlockRef, int]]:
        """A page's blocks, each with its time where its logs carried none (as
        `stamp_events`)."""
        if all(ref.timestamp is not None for ref, _ in blocks):
            return blocks
        times = dict(known)
        missing = [(ref.number, ref.hash) for ref, _ in blocks
                   if ref.timestamp is None and ref.number not in times]  # fmt: skip
        if missing:
            times.update(self.block_times(missing))
        return [(ref if ref.timestamp is not None else replace(ref, timestamp=times[ref.number]),
                 count) for ref, count in blocks]  # fmt: skip

    def stamp_events(
        self, events: Sequence[DecodedEvent], known: dict[int, int] | None = None
    ) -> list[DecodedEvent]:
        """`events`, each with its block's time where its log carried none (Hardhat's node,
        and nodes before `blockTimestamp` in logs): the headers of the other blocks read in
        one batch, each checked against the logs' block hash, so the store holds every
        block's time whatever the node. `known`: times already read (a page's last block)."""
        if all(ev.block_timestamp is not None for ev in events):
            return list(events)
        times = dict(known or {})
        blocks = {ev.block_number: ev.block_hash for ev in events
                  if ev.block_timestamp is None and ev.block_number not in times}  # fmt: skip
        if blocks:
            times.update(self.block_times(sorted(blocks.items())))
        return [ev if ev.block_timestamp is not None
                else replace(ev, block_timestamp=times[ev.block_number])
                for ev in events]  # fmt: skip

    def block_times(self, blocks: Sequence[tuple[int, str]]) -> dict[int, int]:
        """The time of each (number, hash) block, its header read in one batch and checked
        against the hash the logs named (ChainMovedError when the node now has another)."""
        headers = self.rpc.batch([("eth_getBlockByNumber", [hex(n), False]) for n, _ in blocks])
        times: dict[int, int] = {}
        for (number, block_hash), header in zip(blocks, headers, strict=True):
            if isinstance(header, Exception):
                raise header
            if not header or str(header["hash"]).lower() != block_hash:
                raise ChainMovedError(f"block {number} changed while its logs were read")
            times[number] = int(header["timestamp"], 16)
        return times


class Indexer:
    """Catch-up then follow. Build it with `Indexer.open(settings)` or inject the parts."""

    def __init__(
        self,
        store: AuditStore,
        rpc: RpcClient,
        *,
        chain_id: int,
        contracts: Mapping[str, str],
        start_block: int,
        confirmations: int = 0,
        page_size: int = 100,
        max_page_size: int = 50_000,
        max_logs_per_page: int = 5_000,
        max_page_bytes: int = 16 * 1024 * 1024,
        poll_interval: float = 0.5,
        node_timeout: float = 60.0,
        metrics: IndexerMetrics | None = None,
        decoder: EventDecoder | None = None,
        cohort_sources: Sequence[CohortSource] = (),
        cohort_retry_s: float = 30.0,
        contract_blocks: Mapping[str, int] | None = None,
        fetch_workers: int = 0,
        defer_indexes: bool = True,
        fit_to_gas: bool = True,
        commit_seconds: float = 2.0,
    ) -> None:
        self.store = store
        self.rpc = rpc
        self.chain_id = chain_id
        # The audited contracts only, however the deployment was passed in: a contract the
        # audit does not know yet (a newer deployment's) must not change what a store indexes.
        self.contracts = {
            name: address.lower()
            for name, address in contracts.items()
            if name in AUDITED_CONTRACTS
        }
        self.start_block = start_block
        self.contract_blocks = dict(contract_blocks or {})
        """Deployment block of each contract (default `start_block`): where a contract added to
        an existing store is read from."""
        self.confirmations = confirmations
        self.sizer = PageSizer(
            min(page_size, max_page_size), max(max_page_size, 1), max(max_logs_per_page, 1)
        )
        self.max_page_bytes = max_page_bytes
        self.poll_interval = poll_interval
        self.node_timeout = node_timeout
        self.metrics = metrics or IndexerMetrics()
        self.decoder = decoder or EventDecoder(self.contracts)
        self.addresses = self.decoder.addresses
        self.cohort_sources = list(cohort_sources)
        self.fetcher = PageFetcher(
            rpc, self.decoder, max_page_bytes=max_page_bytes, cohort_sources=self.cohort_sources
        )
        self.cohort_retry_s = cohort_retry_s
        self.fetch_workers = max(0, min(fetch_workers, MAX_FETCH_WORKERS))
        """Worker processes fetching and decoding beside the writer (0: one thread)."""
        self._workers: Workers | None = None
        self._epoch = 0
        self.defer_indexes = defer_indexes
        """A first catch-up builds `DEFERRED_INDEXES` at its end (`AuditStore.defer_indexes`)."""
        self._indexes_pending: bool | None = None
        self.fit_to_gas = fit_to_gas
        """Until the chain's density is known, ranges end where their blocks' gas would pass
        the byte budget (`audit.pipeline`); off, the byte budget alone sizes them."""
        self.commit_seconds = commit_seconds
        """A catch-up commits its pages at least this often (`_PageGroup`)."""
        self._cohorts_retried_at: float | None = None
        self.cohorts_settled_late = 0
        self.reorgs = 0
        self.quarantined = 0
        self.before_checkpoint: Callable[[], None] | None = None
        """Test seam: runs inside the page transaction after the rows, before the checkpoint."""
        self.apply_check: Callable[[DecodedEvent], None] | None = None
        """Test seam: called with every event before it is written; raising quarantines it
        (an event the store cannot apply, on demand)."""

    # construction

    @classmethod
    def open(cls, settings: Any, *, metrics: IndexerMetrics | None = None) -> Indexer:
        """The indexer of the deployment in `settings` (an `AuditSettings`), store migrated."""
        from audit.migrations import migrate  # a new store: built from its schema snapshot
        from audit.store import create_store_engine
        from dul.contracts.deployment import Deployment

        home = settings.home()
        deployment = Deployment.load(settings.resolved_deployment_path(home))
        engine = create_store_engine(settings.resolved_database_url(home))
        migrate(engine)
        rpc = RpcClient(settings.resolved_rpc_url(home), timeout=settings.request_timeout)
        return cls(
            AuditStore(engine),
            rpc,
            chain_id=deployment.chain_id,
            contracts={n: a for n, a in deployment.addresses.items() if n in AUDITED_CONTRACTS},
            start_block=int(deployment.raw["block"]),
            confirmations=settings.confirmations,
            page_size=settings.page_size,
            max_page_size=settings.max_page_size,
            max_logs_per_page=settings.max_logs_per_page,
            max_page_bytes=settings.max_page_bytes,
            poll_interval=settings.poll_interval,
            node_timeout=settings.node_timeout,
            fetch_workers=settings.fetch_workers,
            commit_seconds=settings.commit_seconds,
            metrics=metrics,
            cohort_sources=open_sources(settings.cohort_sources),
            cohort_retry_s=settings.cohort_retry_s,
            contract_blocks={
                name: int(entry["block"])
                for name, entry in deployment.raw.get("contracts", {}).items()
                if isinstance(entry, dict) and "block" in entry
            },
        )

    def close(self) -> None:
        self.store.finish_checkpointing()  # the WAL's last checkpoint runs while workers stop
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        close_sources(self.cohort_sources)
        self.rpc.close()
        self.store.stop_checkpointing()
        self.store.engine.dispose()

    # node reads

    def _header(self, number: int) -> BlockRef | None:
        return self.fetcher.header(number)

    def _head(self) -> int:
        return int(self.rpc.request("eth_blockNumber"), 16)

    def _page_of_logs(self, filter_: dict[str, Any]) -> list[dict[str, Any]]:
        return self.fetcher.page_of_logs(filter_)

    def fetch(self, first: int, last: int) -> Page:
        """Blocks `first..last` as one page, consistent with one history of the chain."""
        return self.fetcher.fetch(first, last)

    def _fetch_spec(self) -> FetchSpec | None:
        """How a worker process rebuilds this indexer's fetcher; None when it cannot (a test
        transport, cohort sources other than stores by URL)."""
        urls = [getattr(source, "url", None) for source in self.cohort_sources]
        if self.rpc.custom_transport or not all(isinstance(u, str) for u in urls):
            return None
        return FetchSpec(self.rpc.url, self.rpc.token, self.rpc.timeout, dict(self.contracts),
                         self.fetcher.max_page_bytes, tuple(str(u) for u in urls))  # fmt: skip

    def _fetch_workers(self) -> Workers:
        """The fetch workers, started once and kept for every later catch-up."""
        if self._workers is None:
            spec = self._fetch_spec() if self.fetch_workers else None
            if spec is not None:
                self._workers = ProcessWorkers(spec, self.fetch_workers)
            else:
                self._workers = ThreadWorkers(self.fetch, self.fetcher.max_page_bytes)
        return self._workers

    # store set-up

    def _checkpoint(self) -> StoredCheckpoint:
        checkpoint = self.store.checkpoint()
        if checkpoint is None:
            origin = self.start_block - 1
            header = self._header(origin)
            if header is None:
                raise IndexerError(f"the node has no block {origin}: is this the right chain?")
            self.store.initialize(self.chain_id, self.contracts, header)
            checkpoint = self.store.checkpoint()
            assert checkpoint is not None
        added = {n: a for n, a in self.contracts.items() if n not in checkpoint.contracts}
        if (
            added
            and checkpoint.chain_id == self.chain_id
            and all(self.contracts.get(n) == a for n, a in checkpoint.contracts.items())
        ):
            checkpoint = self._add_contracts(checkpoint, added)
        if checkpoint.chain_id != self.chain_id or checkpoint.contracts != self.contracts:
            raise StoreMismatchError(
                f"the store indexes chain {checkpoint.chain_id} contracts "
                f"{checkpoint.contracts}, not chain {self.chain_id} {self.contracts}; "
                "use another DUL_AUDIT_DATABASE_URL"
            )
        return checkpoint

    def _add_contracts(
        self, checkpoint: StoredCheckpoint, added: Mapping[str, str]
    ) -> StoredCheckpoint:
        """A store indexed before these contracts were audited (an older audit service, e.g.
        before ArtifactRegistry) catches up with them: their logs from their deployment block to
        the checkpoint are read from the same history as the store (the checkpoint's hash is
        checked after reading, and every stored block's hash against the logs) and added with
        the new contract list in one transaction. Then indexing goes on as usual, every contract
        from the checkpoint; a crash before the commit leaves the store as it was."""
        for _ in range(5):
            if self.reconcile(checkpoint):
                fresh = self.store.checkpoint()
                assert fresh is not None
                checkpoint = fresh
            first = min(self.contract_blocks.get(n, self.start_block) for n in added)
            decoder = EventDecoder(added)
            sizer = PageSizer(self.sizer.maximum, self.sizer.maximum, self.sizer.max_logs)
            logs = get_logs(
                self._page_of_logs,
                {"address": decoder.addresses},
                first,
                checkpoint.block_number,
                sizer=sizer,
                refused=range_refused,
            )
            events = self.fetcher.stamp_events([decoder.decode(entry) for entry in logs])
            if not self._node_has(checkpoint.block_number, checkpoint.block_hash):
                continue  # the chain moved under the read: reconcile and read again
            try:
                self.store.add_contracts({**checkpoint.contracts, **added}, events)
            except ValueError as exc:  # a stored block's hash differs: the history changed
                log.warning("audit.chain_moved", error=str(exc))
                continue
            log.info("audit.contracts_added", contracts=sorted(added), first_block=first,
                     checkpoint=checkpoint.block_number, events=len(events))  # fmt: skip
            self.metrics.events.inc(len(events))
            fresh = self.store.checkpoint()
            assert fresh is not None
            return fresh
        raise ChainMovedError("the chain kept moving while newly audited contracts were read")

    # reorgs

    def _node_has(self, number: int, block_hash: str) -> bool:
        header = self._header(number)
        return header is not None and header.hash == block_hash

    def reconcile(self, checkpoint: StoredCheckpoint) -> bool:
        """Rolls back to the common ancestor if the node lost the checkpoint; True if it did."""
        if self._node_has(checkpoint.block_number, checkpoint.block_hash):
            return False
        node_head = self._head()
        node_hash = (
            self._header(checkpoint.block_number) if node_head >= checkpoint.block_number else None
        )
        stored = self.store.stored_blocks(min(checkpoint.block_number, node_head))
        low, high, ancestor = 0, len(stored) - 1, None
        diverged = checkpoint.block_number
        while low <= high:  # highest stored block still on the node
            middle = (low + high) // 2
            number = stored[middle]
            stored_hash = self.store.block_hash(number)
            if stored_hash is not None and self._node_has(number, stored_hash):
                ancestor, low = number, middle + 1
            else:
                diverged, high = number, middle - 1
        if ancestor is None:
            origin = self._header(self.start_block - 1)
            if origin is None:
                raise IndexerError("the node lost the blocks before the deployment")
            ref = origin
        else:
            header = self._header(ancestor)
            assert header is not None
            ref = header
        removed = self.store.rollback_to(
            ref,
            reorg={
                "checkpoint_number": checkpoint.block_number,
                "checkpoint_hash": checkpoint.block_hash,
                "node_hash": None if node_hash is None else node_hash.hash,
            },
        )
        self.reorgs += 1
        self.metrics.reorgs.inc()
        log.error(
            "audit.reorg",
            alarm=True,
            checkpoint=checkpoint.block_number,
            checkpoint_hash=checkpoint.block_hash,
            node_hash=None if node_hash is None else node_hash.hash,
            node_head=node_head,
            ancestor=ref.number,
            first_diverged=diverged,
            removed_events=removed,
        )
        return True

    # the loop

    def run(
        self,
        *,
        follow: bool = False,
        to_block: int | None = None,
        stop: threading.Event | None = None,
        progress: bool = False,
    ) -> IndexSummary:
        """Indexes up to the head (minus confirmations) or `to_block`; with `follow`, keeps
        going until `stop` is set. Node outages are retried (for `node_timeout` when not
        following, forever when following)."""
        stop = stop or threading.Event()
        started = time.perf_counter()
        summary = IndexSummary()
        down_since: float | None = None
        bar = _ProgressBar() if progress and sys.stderr.isatty() else None
        self._fetch_workers()  # worker processes start while the store is checked
        self.store.checkpoint_in_background()  # the writer never waits for a WAL checkpoint
        checkpoint = self._retrying(self._checkpoint, follow, stop)
        summary.start_block = checkpoint.block_number
        try:
            while not stop.is_set():
                try:
                    checkpoint = self._checkpoint()
                    head = self._head() - self.confirmations
                    target = head if to_block is None else min(head, to_block)
                    summary.head_block = head
                    self.metrics.lag.set(max(0, head - checkpoint.block_number))
                    if down_since is not None:
                        log.info("audit.node_back", seconds=round(time.monotonic() - down_since, 1))
                        down_since = None
                    if checkpoint.block_number >= target:
                        if self.reconcile(checkpoint):
                            continue
                        self._build_indexes()
                        self.retry_cohorts()
                        if not follow:
                            break
                        stop.wait(self.poll_interval)
                        continue
                    if bar is not None:
                        bar.show(checkpoint.block_number, target)
                    with _gc_relaxed():
                        self._catch_up(checkpoint, target, summary, stop, bar)
                except NodeUnavailableError as exc:
                    now = time.monotonic()
                    down_since = down_since or now
                    if not follow and now - down_since > self.node_timeout:
                        raise
                    log.warning("audit.node_unavailable", error=str(exc))
                    stop.wait(min(5.0, 0.2 + (now - down_since) / 4))
        finally:
            if bar is not None:
                bar.close()
        final = self.store.checkpoint()
        assert final is not None
        summary.checkpoint_block = final.block_number
        summary.checkpoint_hash = final.block_hash
        summary.reorgs = self.reorgs
        summary.refused_ranges = self.sizer.refused
        summary.cohorts_settled_late = self.cohorts_settled_late
        summary.quarantined = self.quarantined
        summary.seconds = round(time.perf_counter() - started, 3)
        summary.events_per_s = round(summary.events / summary.seconds, 1) if summary.seconds else 0
        return summary

    def _catch_up(
        self,
        checkpoint: StoredCheckpoint,
        target: int,
        summary: IndexSummary,
        stop: threading.Event,
        bar: _ProgressBar | None,
    ) -> None:
        """Writes prefetched pages from the checkpoint towards `target` until done, stopped,
        or the chain is found to have moved (then reconciled; the caller loops again)."""
        if self._indexes_pending is None:
            self._indexes_pending = self.defer_indexes and (
                self.store.defer_indexes() or bool(self.store.missing_indexes())
            )
        self._epoch += 1
        fetcher = Pipeline(
            self._fetch_workers(),
            self.sizer,
            checkpoint.block_number + 1,
            target,
            depth=max(1, self.fetch_workers) + 1,
            epoch=self._epoch,
            max_bytes=self.fetcher.max_page_bytes,
            stop=stop,
            gas_of=self.fetcher.gas_used if self.fit_to_gas else None,
            gas_beside=isinstance(self._workers, ProcessWorkers),
        )
        group = _PageGroup(self)
        fetcher.waiting = lambda: self._account(group.commit(), summary, bar)
        try:
            for item in fetcher:
                if not isinstance(item, Page):  # what was written so far is kept first
                    self._account(group.commit(), summary, bar)
                if isinstance(item, ChainMovedError):
                    log.warning("audit.chain_moved", error=item.message)
                    self.reconcile(checkpoint)
                    return
                if isinstance(item, BaseException):
                    raise item
                page = item
                if page.first != checkpoint.block_number + 1:
                    raise IndexerError(f"page at {page.first} after checkpoint {checkpoint}")
                if page.parent_hash != checkpoint.block_hash:
                    self._account(group.commit(), summary, bar)
                    if not self.reconcile(checkpoint):
                        log.warning("audit.chain_moved", first=page.first,
                                    reason="parent hash changed")  # fmt: skip
                    return
                if self.apply_check is None and self.before_checkpoint is None:
                    with _gc_paused():
                        written = group.add(page, checkpoint.block_number)
                    if group.full() or fetcher.next > fetcher.target or stop.is_set():
                        written += group.commit()
                else:  # the test seams: a transaction of its own for each page
                    with _gc_paused():
                        self._write(page, checkpoint.block_number)
                    written = [page]
                checkpoint = StoredCheckpoint(
                    checkpoint.chain_id, checkpoint.contracts, page.last.number, page.last.hash
                )
                self._account(written, summary, bar)
                if stop.is_set():
                    return
        except BaseException:
            group.abandon()  # a crash's outcome: the pages not committed are read again
            raise
        finally:
            self._account(group.commit(), summary, bar)
            fetcher.close()

    def _account(self, pages: list[Page], summary: IndexSummary, bar: _ProgressBar | None) -> None:
        """Pages committed: counted, and shown on the progress bar."""
        for page in pages:
            summary.pages += 1
            summary.events += page.count
            self.metrics.events.inc(page.count)
            self.metrics.checkpoint.set(page.last.number)
            if bar is not None:
                bar.advance(page.last.number - page.first + 1, summary.events)
            log.debug("audit.page", first=page.first, last=page.last.number,
                      events=page.count)  # fmt: skip

    def _build_indexes(self) -> None:
        """Caught up: the indexes a first catch-up deferred are built now."""
        if self._indexes_pending:
            started = time.perf_counter()
            built = self.store.build_indexes()
            self._indexes_pending = False
            if built:
                log.info("audit.indexes_built", indexes=built,
                         seconds=round(time.perf_counter() - started, 2))  # fmt: skip

    def _write(self, page: Page, previous: int) -> None:
        """Writes a page; an event the store refuses (or the `apply_check` seam) is quarantined
        with its error and the rest of the page is written, so indexing goes on past it."""
        quarantined = list(page.quarantined)
        if self.apply_check is None:
            try:  # the common case: the prepared rows as they are
                self._write_checked(page, page.prepared, quarantined, previous)
                return
            except _UNAPPLICABLE as exc:
                log.warning("audit.page_refused", first=page.first, last=page.last.number,
                            error=repr(exc)[:300])  # fmt: skip
            events = page.events
        else:
            events = []
            for ev in page.events:
                try:
                    self.apply_check(ev)
                    events.append(ev)
                except Exception as exc:  # the seam's refusal, whatever it raises
                    quarantined.append(_quarantine_event(ev, exc))
            try:
                self._write_checked(page, events, quarantined, previous)
                return
            except _UNAPPLICABLE as exc:
                log.warning("audit.page_refused", first=page.first, last=page.last.number,
                            error=repr(exc)[:300])  # fmt: skip
        refused = self._refused(page, events, previous)
        keep = [ev for ev in events if ev.position not in refused]
        quarantined += [_quarantine_event(ev, refused[ev.position]) for ev in events
                        if ev.position in refused]  # fmt: skip
        self._write_checked(page, keep, quarantined, previous)

    def _write_checked(
        self,
        page: Page,
        events: list[DecodedEvent] | PreparedPage,
        quarantined: list[Quarantine],
        previous: int,
    ) -> None:
        cohorts = page.cohorts
        if cohorts is not None and isinstance(events, list) and len(events) != page.count:
            cohorts = cohorts.only({ev.position for ev in events
                                    if ev.name == "AccessRecorded"})  # fmt: skip
        self.store.write_page(
            page.first,
            page.last,
            events,
            previous_checkpoint=previous,
            before_checkpoint=self.before_checkpoint,
            cohorts=cohorts,
            quarantined=sorted(quarantined, key=lambda q: q.position),
        )
        self._report_quarantined(quarantined)

    def _report_quarantined(self, quarantined: Sequence[Quarantine]) -> None:
        for q in quarantined:
            log.error("audit.event_quarantined", alarm=True, block=q.block_number,
                      tx_index=q.tx_index, log_index=q.log_index, tx_hash=q.tx_hash,
                      stage=q.stage, error=q.error[:300])  # fmt: skip
        self.metrics.quarantined.inc(len(quarantined))
        self.quarantined += len(quarantined)

    def _refused(
        self, page: Page, events: list[DecodedEvent], previous: int
    ) -> dict[tuple[int, int, int], Exception]:
        """The events the store refuses, by position with the error: halves are probed in
        rolled-back transactions down to single events; events refused only together (a
        clash inside the page) are then found by adding the rest one at a time."""

        def probe(subset: list[DecodedEvent]) -> Exception | None:
            found = self.store.probe(page.first, page.last, subset, previous_checkpoint=previous)
            if found is not None and not isinstance(found, _UNAPPLICABLE):
                raise found  # the store itself is failing: not the events' fault
            return found

        refused: dict[tuple[int, int, int], Exception] = {}

        def bisect(subset: list[DecodedEvent], error: Exception) -> None:
            if len(subset) == 1:
                refused[subset[0].position] = error
                return
            middle = len(subset) // 2
            for half in (subset[:middle], subset[middle:]):
                found = probe(half)
                if found is not None:
                    bisect(half, found)

        first_error = probe(events)
        if first_error is None:
            return refused
        bisect(events, first_error)
        kept = [ev for ev in events if ev.position not in refused]
        if probe(kept) is not None:
            accepted: list[DecodedEvent] = []
            for ev in kept:
                found = probe([*accepted, ev])
                if found is None:
                    accepted.append(ev)
                else:
                    refused[ev.position] = found
        return refused

    def retry_cohorts(self, *, force: bool = False) -> int:
        """Asks the sources again for cohorts they did not hold when indexed (the gateway may
        have been down, or its store not configured yet), at most every `cohort_retry_s`;
        returns how many were settled."""
        if not self.cohort_sources:
            return 0
        now = time.monotonic()
        last = self._cohorts_retried_at
        if not force and last is not None and now - last < self.cohort_retry_s:
            return 0
        self._cohorts_retried_at = now
        pending = self.store.unavailable_cohorts()
        if not pending:
            return 0
        settled = self.store.settle_cohorts(resolve(self.cohort_sources, pending))
        if settled:
            self.cohorts_settled_late += settled
            log.info("audit.cohorts_settled", settled=settled, pending=len(pending) - settled)
        return settled

    def _retrying(
        self, action: Callable[[], StoredCheckpoint], follow: bool, stop: threading.Event
    ) -> StoredCheckpoint:
        deadline = time.monotonic() + self.node_timeout
        while True:
            try:
                return action()
            except NodeUnavailableError as exc:
                if (not follow and time.monotonic() > deadline) or stop.is_set():
                    raise
                log.warning("audit.node_unavailable", error=str(exc))
                stop.wait(1.0)


class _PageGroup:
    """A catch-up's pages written in one open transaction (`AuditStore.pages`), committed
    once they hold `EVENTS` events or `Indexer.commit_seconds` of the catch-up, at its end,
    and whenever no answer came from the fetch workers for half a second (the pipeline's
    `waiting`): SQLite wrote every b-tree page a commit had dirtied, the unique index of
    access ids nearly whole at each page's commit (measured on dul bench's pages, the
    writer's CPU per event: ~13 us one page a transaction, ~11 five, ~9.5 ten, ~9.3 twenty;
    pages of 2,500 events, 20,000 events held are ~40 MB). A crash loses the pages not
    committed, as it lost the page in flight; the restart reads them again. A row the store
    refuses rolls the open pages back and they are written one page a transaction, where
    the refused events are quarantined."""

    EVENTS = 20_000

    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self.open: Any = None
        self.batch: Any = None
        self.pages: list[tuple[Page, int]] = []
        """The pages written and not committed, with the checkpoint each followed."""
        self.events = 0
        self.opened = 0.0

    def add(self, page: Page, previous: int) -> list[Page]:
        """Writes `page` into the open transaction; returns the pages committed meanwhile."""
        if self.open is None:
            self.open = self.indexer.store.pages()
            self.batch = self.open.__enter__()
            self.opened = time.monotonic()
        try:
            quarantined = sorted(page.quarantined, key=lambda q: q.position)
            self.batch.write(page.first, page.last, page.prepared, previous_checkpoint=previous,
                             cohorts=page.cohorts, quarantined=quarantined)  # fmt: skip
        except _UNAPPLICABLE:
            held = [*self.pages, (page, previous)]
            self.abandon()
            for each, before in held:
                self.indexer._write(each, before)
            return [each for each, _ in held]
        self.pages.append((page, previous))
        self.events += page.count
        return []

    def full(self) -> bool:
        age = time.monotonic() - self.opened
        return self.events >= self.EVENTS or age >= self.indexer.commit_seconds

    def commit(self) -> list[Page]:
        """Commits the open pages; returns them."""
        if self.open is None:
            return []
        opened, committed = self.open, [page for page, _ in self.pages]
        self._reset()  # a failed commit leaves nothing open: the pages are read again
        with _gc_paused():
            opened.__exit__(None, None, None)
        for page in committed:
            self.indexer._report_quarantined(page.quarantined)
        return committed

    def abandon(self) -> None:
        """Rolls the open pages back."""
        opened = self.open
        self._reset()
        if opened is not None:
            opened.__exit__(_RolledBackError, _RolledBackError("pages rolled back"), None)

    def _reset(self) -> None:
        self.open = self.batch = None
        self.pages = []
        self.events = 0


class _RolledBackError(Exception):
    """Thrown into an open page transaction to roll it back."""


class _ProgressBar:
    """A rich progress bar on stderr for long catch-ups (terminals only)."""

    MIN_BLOCKS = 5_000

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("indexing blocks"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[events]} events"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.task: Any = None

    def show(self, done: int, target: int) -> None:
        if self.task is None:
            if target - done < self.MIN_BLOCKS:  # short catch-ups and following: no bar
                return
            self.progress.start()
            self.task = self.progress.add_task("index", total=0, events=0)
            self.base = done
        self.progress.update(self.task, total=target - self.base)

    def advance(self, blocks: int, events: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=blocks, events=events)

    def close(self) -> None:
        if self.task is not None:
            self.progress.stop()


def _unapplicable() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [
        IntegrityError, DataError, ProgrammingError, sqlite3.IntegrityError, sqlite3.DataError,
        ValueError, KeyError, TypeError, ArithmeticError,
    ]  # fmt: skip
    with contextlib.suppress(ImportError):  # the bulk writes raise the driver's own errors
        import psycopg

        errors += [psycopg.IntegrityError, psycopg.DataError]
    return tuple(errors)


_UNAPPLICABLE = _unapplicable()
"""What the store raises for rows it cannot hold (a connection failure is not one of them)."""


def _quarantine(entry: Mapping[str, Any], stage: str, error: BaseException) -> Quarantine:
    """A raw log that did not decode, at its position."""

    def number(key: str) -> int:
        try:
            return int(str(entry.get(key)), 16)
        except ValueError:
            return -1

    return Quarantine(
        block_number=number("blockNumber"),
        tx_index=number("transactionIndex"),
        log_index=number("logIndex"),
        block_hash=str(entry.get("blockHash", "")).lower(),
        tx_hash=str(entry.get("transactionHash", "")).lower(),
        address=str(entry.get("address", "")).lower(),
        stage=stage,
        error=f"{type(error).__name__}: {error}",
        log={k: entry[k] for k in ("address", "topics", "data", "blockNumber", "blockHash",
                                   "transactionHash", "transactionIndex", "logIndex")
             if k in entry},
    )  # fmt: skip


def _quarantine_event(ev: DecodedEvent, error: BaseException) -> Quarantine:
    """A decoded event the store did not take."""
    return Quarantine(
        ev.block_number, ev.tx_index, ev.log_index, ev.block_hash, ev.tx_hash, ev.address,
        "apply", f"{type(error).__name__}: {error}",
        {"contract": ev.contract, "name": ev.name, "args": json.loads(ev.args_json)},
    )  # fmt: skip


def _block_number(entry: Any) -> int:
    """A raw log's block number, -1 when it has none readable."""
    try:
        return int(entry["blockNumber"], 16)
    except (KeyError, TypeError, ValueError):
        return -1


def decode_logs(decoder: EventDecoder, logs: Sequence[Mapping[str, Any]]) -> list[DecodedEvent]:
    """Decodes a list of raw logs (the benchmark's raw fetch + decode rate uses this too)."""
    decode = decoder.decode
    return [decode(entry) for entry in logs]
