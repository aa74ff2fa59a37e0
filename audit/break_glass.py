"""Break-glass accesses and their reviews, as the regulator reads them.

An agreement that allows break-glass (`agreement.break_glass_review_hours`) lets its requester open
one patient's records without the patient's code in an emergency; the chain flags each such
access (`break_glass_access`: reason, review deadline) and a steward of the holder must review it
by the deadline (`break_glass_review`: UPHELD, or REFERRED to the regulator). Here:

- `cases` lists them (one agreement's, or all), each with its state at `now`: unreviewed,
  unreviewed past its deadline (overdue), or reviewed (on time or late);
- `check_break_glass` is `verify`'s part: one `break_glass_review_overdue` finding per access
  unreviewed past its deadline, and the unreviewed ones (overdue or not) for the report.

`now` is wall-clock time unless given: a deadline passes whether or not a block is mined.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Connection, text

from dul.domain import BreakGlassOutcome, BreakGlassReason

#: At most this many cases are listed in one report (the counts cover them all).
CASE_LINES = 1_000

_CASES = (
    "SELECT x.block_number, x.tx_index, x.log_index, x.tx_hash, x.access_id, x.agreement_id, "
    "x.holder_org, x.reason, x.review_due, b.timestamp AS accessed_at, r.outcome, r.reviewer, "
    "r.finding_hash, r.block_number AS reviewed_block, r.tx_hash AS review_tx, "
    "rb.timestamp AS reviewed_at "
    "FROM break_glass_access x "
    "LEFT JOIN break_glass_review r ON r.access_id = x.access_id "
    "AND r.agreement_id = x.agreement_id "
    "LEFT JOIN block b ON b.number = x.block_number "
    "LEFT JOIN block rb ON rb.number = r.block_number "
)

State = Literal["unreviewed", "overdue", "upheld", "referred"]


class BreakGlassCase(BaseModel):
    """One break-glass access and where its review stands."""

    access_id: str
    agreement_id: str
    holder: str
    reason: str = Field(description="why the glass was broken (BreakGlassReason)")
    block: int
    position: str = Field(description="block/tx/log of the BreakGlassAccess event")
    tx_hash: str
    accessed_at: int | None = Field(None, description="the access's block time, when known")
    review_due: int = Field(description="block time by which a holder steward must review it")
    state: State = Field(
        description="unreviewed (still within its window), overdue (unreviewed past it), "
        "upheld or referred (to the regulator)"
    )
    reviewer: str | None = None
    finding_hash: str | None = Field(None, description="keccak256 of the written finding")
    reviewed_at: int | None = None
    review_tx: str | None = None
    late: bool = Field(False, description="reviewed after its deadline")


class Findings(Protocol):
    checked: Counter[str]

    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


def _name(enum: Any, value: Any) -> str:
    try:
        return str(enum(int(value)).name)
    except ValueError:
        return str(value)


def _case(row: Any, now: float) -> BreakGlassCase:
    due = int(row["review_due"])
    outcome = row["outcome"]
    reviewed_at = None if row["reviewed_at"] is None else int(row["reviewed_at"])
    state: State
    if outcome is None:
        state = "overdue" if now > due else "unreviewed"
    else:
        state = "upheld" if int(outcome) == BreakGlassOutcome.UPHELD else "referred"
    return BreakGlassCase(
        access_id=str(row["access_id"]),
        agreement_id=str(row["agreement_id"]),
        holder=str(row["holder_org"]),
        reason=_name(BreakGlassReason, row["reason"]),
        block=int(row["block_number"]),
        position=f"{row['block_number']}/{row['tx_index']}/{row['log_index']}",
        tx_hash=str(row["tx_hash"]),
        accessed_at=None if row["accessed_at"] is None else int(row["accessed_at"]),
        review_due=due,
        state=state,
        reviewer=row["reviewer"],
        finding_hash=row["finding_hash"],
        reviewed_at=reviewed_at,
        review_tx=row["review_tx"],
        late=reviewed_at is not None and reviewed_at > due,
    )


def _all(conn: Connection, agreement_id: str | None, now: float) -> Iterator[BreakGlassCase]:
    where = "" if agreement_id is None else "WHERE x.agreement_id = :a "
    order = "ORDER BY x.block_number, x.tx_index, x.log_index"
    for row in conn.execute(text(_CASES + where + order), {"a": agreement_id}).mappings():
        yield _case(row, now)


def cases(
    conn: Connection, *, agreement_id: str | None = None, now: float | None = None
) -> tuple[list[BreakGlassCase], Counter[str]]:
    """The break-glass accesses (of `agreement_id`, or all) in chain order, the first
    `CASE_LINES` of them, and the count of all by state (and `reviewed_late`)."""
    listed: list[BreakGlassCase] = []
    counts: Counter[str] = Counter()
    for case in _all(conn, agreement_id, time.time() if now is None else now):
        counts[case.state] += 1
        counts["reviewed_late"] += case.late
        if len(listed) < CASE_LINES:
            listed.append(case)
    return listed, counts


def check_break_glass(
    conn: Connection, out: Findings, *, now: float | None = None
) -> list[BreakGlassCase]:
    """`verify`'s part: a finding per access unreviewed past its deadline; the unreviewed
    accesses (the first `CASE_LINES`), overdue or not."""
    unreviewed: list[BreakGlassCase] = []
    for case in _all(conn, None, time.time() if now is None else now):
        out.checked["break_glass_accesses"] += 1
        if case.state not in ("unreviewed", "overdue"):
            continue
        if len(unreviewed) < CASE_LINES:
            unreviewed.append(case)
        if case.state == "overdue":
            out.add(
                "break_glass_review_overdue",
                f"break-glass access {case.access_id} ({case.reason}) under agreement "
                f"{case.agreement_id} was due for review by a steward of {case.holder} at "
                f"{case.review_due} (block time) and is not reviewed",
                table="break_glass_access", position=case.position, key=case.access_id,
                details={"review_due": case.review_due, "holder": case.holder},
            )  # fmt: skip
    return unreviewed
