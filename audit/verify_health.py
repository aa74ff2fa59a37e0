"""Verify's checks of the indexer itself: a stalled or failing index is never "verified".

- `event_quarantined`: each log the indexer could not apply (`quarantined_event`), with its
  position, stage and error; the chain comparison leaves those positions to this finding.
- `index_behind`: the checkpoint is more than `max_lag_blocks` blocks, or `max_lag_s`
  seconds of chain time, behind the node's head (two node calls, whatever the store's size).
- `history_rewritten`: each rollback the indexer made (a reorg: an incident on a finality
  chain) that no operator acknowledged, with the old and new block hashes and the agreements,
  accesses, consents, artifacts and releases that vanished; acknowledged ones are listed in the
  report's notes with who acknowledged them, when and why.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, text

from audit.health import chain_head, lag_reasons
from dul.chain.rpc import RpcClient


class Findings(Protocol):
    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


def _pos(block: int, tx: int, log_index: int) -> str:
    return f"{block}/{tx}/{log_index}"


def check_quarantine(conn: Connection, out: Findings) -> int:
    """One finding per quarantined log; returns how many."""
    count = 0
    for row in conn.execute(
        text(
            "SELECT block_number, tx_index, log_index, block_hash, tx_hash, address, stage, "
            "error FROM quarantined_event ORDER BY block_number, tx_index, log_index"
        )
    ).mappings():
        count += 1
        where = _pos(int(row["block_number"]), int(row["tx_index"]), int(row["log_index"]))
        out.add("event_quarantined", f"the indexer could not apply the log at {where} "
                f"(tx {row['tx_hash']}, {row['stage']}): {row['error']}",
                table="quarantined_event", position=where,
                details={"stage": row["stage"], "error": row["error"], "tx_hash": row["tx_hash"],
                         "block_hash": row["block_hash"], "address": row["address"]})  # fmt: skip
    return count


def check_incidents(conn: Connection, out: Findings) -> list[str]:
    """One finding per unacknowledged rollback; notes for the acknowledged ones."""
    notes: list[str] = []
    for row in conn.execute(
        text(
            "SELECT id, detected_at, checkpoint_number, checkpoint_hash, node_hash, "
            "ancestor_number, ancestor_hash, removed_events, vanished, acknowledged_at, "
            "acknowledged_by, acknowledged_reason FROM reorg ORDER BY id"
        )
    ).mappings():
        vanished = row["vanished"]
        if isinstance(vanished, str):
            vanished = json.loads(vanished)
        vanished = vanished or {}
        counts = vanished.get("counts", {})
        at = datetime.fromtimestamp(float(row["detected_at"]), UTC).isoformat(timespec="seconds")
        if row["acknowledged_at"] is not None:
            when = datetime.fromtimestamp(float(row["acknowledged_at"]), UTC)
            notes.append(
                f"incident {row['id']} (rollback from block {row['checkpoint_number']} to "
                f"{row['ancestor_number']} at {at}) acknowledged by {row['acknowledged_by']} at "
                f"{when.isoformat(timespec='seconds')}: {row['acknowledged_reason']}"
            )
            continue
        gone = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()) if n) or "no record"
        out.add("history_rewritten", f"incident {row['id']}: at {at} the chain no longer held "
                f"block {row['checkpoint_number']} ({row['checkpoint_hash']}; the node has "
                f"{row['node_hash'] or 'no such block'}); the index was rolled back to block "
                f"{row['ancestor_number']} and {gone} vanished. Acknowledge with `dul audit "
                f"acknowledge {row['id']} --reason …`", table="reorg", key=str(row["id"]),
                details={
                    "incident": int(row["id"]), "detected_at": float(row["detected_at"]),
                    "old_block": int(row["checkpoint_number"]),
                    "old_hash": row["checkpoint_hash"], "new_hash": row["node_hash"],
                    "ancestor_block": int(row["ancestor_number"]),
                    "ancestor_hash": row["ancestor_hash"],
                    "removed_events": int(row["removed_events"]), "vanished": vanished,
                })  # fmt: skip
    return notes


def check_lag(
    conn: Connection,
    rpc: RpcClient,
    checkpoint: int,
    out: Findings,
    *,
    max_blocks: int,
    max_seconds: float,
) -> int:
    """`index_behind` when the checkpoint lags the head too far; returns the head block."""
    stamp = conn.execute(
        text("SELECT timestamp FROM block WHERE number = :n"), {"n": checkpoint}
    ).scalar()
    head, head_time = chain_head(rpc)
    blocks, seconds, reasons = lag_reasons(
        checkpoint, None if stamp is None else int(stamp), head, head_time,
        max_blocks=max_blocks, max_seconds=max_seconds,
    )  # fmt: skip
    if reasons:
        out.add("index_behind", f"the store's checkpoint is block {checkpoint}, the chain's head "
                f"{head}: {'; '.join(reasons)} — the index is stalled or not keeping up, and "
                "everything after its checkpoint is unverified", table="checkpoint",
                key=str(checkpoint),
                details={"checkpoint": checkpoint, "head": head, "lag_blocks": blocks,
                         "lag_seconds": seconds, "max_lag_blocks": max_blocks,
                         "max_lag_seconds": max_seconds})  # fmt: skip
    return head
