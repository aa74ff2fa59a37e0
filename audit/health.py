"""The indexer's health as the store and the node show it: how far behind the head its
checkpoint is (blocks and seconds of chain time), how many logs it quarantined, and how many
history rewrites (reorg incidents) nobody acknowledged yet.

Read by the audit service's `/readyz` (not ready while behind or failing) and Prometheus
collector, `dul up`, `dul chain status` and the console's header. The indexer runs in its own
process; everything here is read from the store it writes, plus two node calls (the head and
its timestamp).

    status   failing  logs are quarantined, or the store has no checkpoint
             behind   the checkpoint is more than `index_behind_blocks` blocks or
                      `index_behind_s` seconds of chain time behind the head
             ok       otherwise
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from pydantic import BaseModel
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from audit.indexer import IndexerError
from dul.chain.rpc import NodeError, RpcClient

Status = Literal["ok", "behind", "failing"]


class IndexerHealth(BaseModel):
    status: Status
    ready: bool
    reasons: list[str]
    checkpoint_block: int | None = None
    checkpoint_time: int | None = None
    head_block: int | None = None
    head_time: int | None = None
    lag_blocks: int | None = None
    lag_seconds: int | None = None
    quarantined: int = 0
    incidents_unacknowledged: int = 0
    max_lag_blocks: int
    max_lag_seconds: float


class StoreState(BaseModel):
    checkpoint_block: int | None
    checkpoint_time: int | None
    quarantined: int
    incidents_unacknowledged: int


def store_state(conn: Connection) -> StoreState:
    """The indexer's own record, read from its store in one go."""
    row = conn.execute(
        text(
            "SELECT c.block_number, b.timestamp FROM checkpoint c "
            "LEFT JOIN block b ON b.number = c.block_number"
        )
    ).first()
    quarantined = int(conn.execute(text("SELECT count(*) FROM quarantined_event")).scalar_one())
    incidents = int(
        conn.execute(text("SELECT count(*) FROM reorg WHERE acknowledged_at IS NULL")).scalar_one()
    )
    return StoreState(
        checkpoint_block=None if row is None else int(row[0]),
        checkpoint_time=None if row is None or row[1] is None else int(row[1]),
        quarantined=quarantined,
        incidents_unacknowledged=incidents,
    )


def chain_head(rpc: RpcClient) -> tuple[int, int | None]:
    """The node's head block and its timestamp."""
    head = int(rpc.request("eth_blockNumber"), 16)
    header = rpc.request("eth_getBlockByNumber", hex(head), False)
    return head, None if header is None else int(header["timestamp"], 16)


def lag_reasons(
    checkpoint: int,
    checkpoint_time: int | None,
    head: int,
    head_time: int | None,
    *,
    max_blocks: int,
    max_seconds: float,
) -> tuple[int, int | None, list[str]]:
    """(blocks behind, seconds of chain time behind, why that is too far)."""
    blocks = max(0, head - checkpoint)
    seconds = None
    if checkpoint_time is not None and head_time is not None:
        seconds = max(0, head_time - checkpoint_time)
    reasons = []
    if blocks > max_blocks:
        reasons.append(f"the index is {blocks} blocks behind the head (more than {max_blocks})")
    if seconds is not None and seconds > max_seconds:
        reasons.append(
            f"the index is {seconds} s of chain time behind the head (more than {max_seconds:g} s)"
        )
    return blocks, seconds, reasons


def assess(
    state: StoreState,
    head: tuple[int, int | None] | None,
    *,
    max_blocks: int,
    max_seconds: float,
    node_error: str | None = None,
) -> IndexerHealth:
    """The health of the store's indexer against the node's `head` (None: unreachable)."""
    health = IndexerHealth(
        status="ok", ready=True, reasons=[], checkpoint_block=state.checkpoint_block,
        checkpoint_time=state.checkpoint_time, quarantined=state.quarantined,
        incidents_unacknowledged=state.incidents_unacknowledged, max_lag_blocks=max_blocks,
        max_lag_seconds=max_seconds,
    )  # fmt: skip
    failing: list[str] = []
    behind: list[str] = []
    if state.checkpoint_block is None:
        failing.append("the store has no checkpoint: the indexer has not started")
    if state.quarantined:
        failing.append(
            f"{state.quarantined} event(s) quarantined: the indexer could not apply them "
            "(see `dul audit verify`)"
        )
    if head is None:
        behind.append(f"the chain node is unreachable ({node_error or 'no answer'})")
    elif state.checkpoint_block is not None:
        health.head_block, health.head_time = head
        health.lag_blocks, health.lag_seconds, too_far = lag_reasons(
            state.checkpoint_block, state.checkpoint_time, head[0], head[1],
            max_blocks=max_blocks, max_seconds=max_seconds,
        )  # fmt: skip
        behind.extend(too_far)
    health.reasons = failing + behind
    health.status = "failing" if failing else "behind" if behind else "ok"
    health.ready = not health.reasons
    return health


def indexer_health(
    engine: Engine, rpc: RpcClient | None, *, max_blocks: int, max_seconds: float
) -> IndexerHealth:
    """Store and node read now; an unreadable store is `failing`, an unreachable node
    `behind` (nothing says the index keeps up)."""
    try:
        with engine.connect() as conn:
            state = store_state(conn)
    except SQLAlchemyError as exc:
        return IndexerHealth(
            status="failing", ready=False, max_lag_blocks=max_blocks, max_lag_seconds=max_seconds,
            reasons=[f"the audit store is unreadable ({type(exc).__name__})"],
        )  # fmt: skip
    head: tuple[int, int | None] | None = None
    error = None
    if rpc is None:
        error = "no node configured"
    else:
        try:
            head = chain_head(rpc)
        except (IndexerError, NodeError, ValueError, KeyError, TypeError) as exc:
            error = str(exc)[:200]
    return assess(state, head, max_blocks=max_blocks, max_seconds=max_seconds, node_error=error)


class StoreCollector(Collector):
    """Prometheus gauges read from the store at each scrape (the indexer is another
    process): quarantined events, unacknowledged incidents, the checkpoint block."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        try:
            with self.engine.connect() as conn:
                state = store_state(conn)
        except SQLAlchemyError:
            return
        quarantined = GaugeMetricFamily(
            "dul_audit_quarantined_events", "Logs the indexer quarantined (could not apply)"
        )
        quarantined.add_metric([], state.quarantined)
        yield quarantined
        incidents = GaugeMetricFamily(
            "dul_audit_unacknowledged_incidents",
            "History rewrites (rollbacks) no operator acknowledged yet",
        )
        incidents.add_metric([], state.incidents_unacknowledged)
        yield incidents
        if state.checkpoint_block is not None:
            checkpoint = GaugeMetricFamily(
                "dul_audit_store_checkpoint_block", "The store's checkpoint block"
            )
            checkpoint.add_metric([], state.checkpoint_block)
            yield checkpoint


def health_of(settings: Any, engine: Engine) -> IndexerHealth:
    """`indexer_health` with the thresholds and node of an `AuditSettings`."""
    from dul.errors import DulError

    try:
        rpc: RpcClient | None = RpcClient(settings.resolved_rpc_url(), timeout=5.0)
    except DulError:
        rpc = None
    return _health_closing(settings, engine, rpc)


def _health_closing(settings: Any, engine: Engine, rpc: RpcClient | None) -> IndexerHealth:
    """`indexer_health` with the settings' thresholds; closes `rpc`."""
    try:
        return indexer_health(
            engine, rpc, max_blocks=settings.index_behind_blocks,
            max_seconds=settings.index_behind_s,
        )  # fmt: skip
    finally:
        if rpc is not None:
            rpc.close()


def local_health(home: Any, rpc_url: str | None) -> IndexerHealth | None:
    """The health of the local stack's indexer (`dul up`, `dul chain status`): its store under
    `home` (or `DUL_AUDIT_DATABASE_URL`) against the node at `rpc_url`; None when there is no
    store yet."""
    from pathlib import Path

    from audit.cohorts import read_only_engine
    from audit.settings import AuditSettings

    settings = AuditSettings()
    url = settings.resolved_database_url(home)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = read_only_engine(url)
    try:
        return _health_closing(
            settings, engine, RpcClient(rpc_url, timeout=5.0) if rpc_url else None
        )
    finally:
        engine.dispose()


def settled_health(
    home: Any, rpc_url: str | None, *, timeout: float = 20.0
) -> IndexerHealth | None:
    """`local_health` once the indexer has caught up (or is failing), or as it is after
    `timeout` seconds: a freshly started indexer is behind for a moment."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        health = local_health(home, rpc_url)
        if health is not None and health.status != "behind":
            return health
        if time.monotonic() >= deadline:
            return health
        time.sleep(0.5)


def describe(health: IndexerHealth) -> str:
    """One line: the status, the checkpoint and the lag, and why it is not ok."""
    lag = (
        "lag unknown"
        if health.lag_blocks is None
        else f"{health.lag_blocks} block(s)"
        + ("" if health.lag_seconds is None else f" / {health.lag_seconds} s")
        + " behind the head"
    )
    line = f"{health.status}: checkpoint block {health.checkpoint_block}, {lag}"
    if health.incidents_unacknowledged:
        line += f"; {health.incidents_unacknowledged} unacknowledged history rewrite(s)"
    if health.reasons:
        line += " — " + "; ".join(health.reasons)
    return line
