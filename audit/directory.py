"""The console's front door: pages of organizations, agreements and recent accesses, scoped to
the caller (a regulator everything; an organization itself, the agreements it is a party to
and their accesses).

Each list is newest first (organizations oldest first: the directory in the order it grew) and
paged by a keyset cursor, the event position `block-tx-log` of the last row: the next page
starts below it through an index (the primary key of `access_event`, the agreement's block
index), so a page costs the same on the millionth access as on the first.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine

from audit.provenance import (
    ChainRef,
    MalformedIdError,
    _checksummed,
    _enum_name,
    _text,
    effective_status,
    indexed_time,
    iso_time,
    readable,
    store_errors,
)
from audit.scope import Caller, CallerRole
from dul.domain import (
    AgreementStatus,
    Decision,
    DenyReason,
    Operation,
    OrgKind,
    OrgStatus,
    Scenario,
    Tier,
)

MAX_LIMIT = 200
_CURSOR = re.compile(r"^(\d{1,19})-(\d{1,9})-(\d{1,9})$")
_INT64_MAX = (1 << 63) - 1
ListedStatus = Literal["PROPOSED", "ACTIVE", "SUSPENDED", "REVOKED", "EXPIRED", "SUPERSEDED"]


class OrganizationLine(BaseModel):
    org_id: str
    slug: str = Field(description="the readable slug the id was made from, or the id")
    name: str
    kind: str
    status: str
    chain: ChainRef


class AgreementLine(BaseModel):
    agreement_id: str
    version: int
    status: str = Field(description="as the chain says it now: ACTIVE or SUSPENDED past the "
                        "window's end is EXPIRED")  # fmt: skip
    expired_at: str | None = None
    holder: str
    holder_name: str | None
    requester: str
    requester_name: str | None
    scenario: str
    max_tier: str
    valid_from: str
    valid_until: str
    quota: int
    granted: int = Field(description="granted accesses (quota used)")
    chain: ChainRef


class AccessLine(BaseModel):
    access_id: str
    agreement_id: str
    dataset: str = Field(description="the dataset's readable slug, or its id")
    requester: str = Field(description="the requesting account (EIP-55)")
    requester_org: str | None
    decision: str
    reason: str
    tier: str
    operation: str
    time: str | None = Field(description="the block's time (ISO 8601), when the store has it")
    chain: ChainRef


_NEXT = "pass as `cursor` for the next page; null on the last"


class OrganizationPage(BaseModel):
    items: list[OrganizationLine]
    next_cursor: str | None = Field(description=_NEXT)


class AgreementPage(BaseModel):
    items: list[AgreementLine]
    next_cursor: str | None = Field(description=_NEXT)


class AccessPage(BaseModel):
    items: list[AccessLine]
    next_cursor: str | None = Field(description=_NEXT)


def parse_cursor(raw: str | None) -> tuple[int, int, int] | None:
    if raw is None:
        return None
    match = _CURSOR.match(raw)
    if match is None or int(match.group(1)) > _INT64_MAX:
        raise MalformedIdError(
            f"{raw[:40]!r} is not a cursor (block-tx-log, as next_cursor gives it)",
            code="malformed_cursor",
        )
    block, tx, log_index = (int(g) for g in match.groups())
    return block, tx, log_index


def _ref(row: Any) -> ChainRef:
    return ChainRef(block=int(row["block_number"]), tx_index=int(row["tx_index"]),
                    log_index=int(row["log_index"]), tx_hash=str(row["tx_hash"]))  # fmt: skip


def _next(rows: list[Any], limit: int) -> str | None:
    if len(rows) <= limit:
        return None
    last = rows[limit - 1]
    return f"{last['block_number']}-{last['tx_index']}-{last['log_index']}"


_BEFORE = ("(x.block_number < :b OR (x.block_number = :b AND (x.tx_index < :t OR "
           "(x.tx_index = :t AND x.log_index < :i))))")  # fmt: skip
_AFTER = _BEFORE.replace("<", ">")
_NEWEST = "x.block_number DESC, x.tx_index DESC, x.log_index DESC"


def _position(cursor: tuple[int, int, int] | None) -> dict[str, int]:
    return {} if cursor is None else dict(zip(("b", "t", "i"), cursor, strict=True))


def organizations(
    engine: Engine, caller: Caller, limit: int, cursor: str | None
) -> OrganizationPage:
    """Every organization for a regulator; an organization's caller its own only."""
    after = parse_cursor(cursor)
    where = ["1 = 1"]
    params: dict[str, Any] = {"n": limit + 1, **_position(after)}
    if after is not None:
        where.append(_AFTER)
    if caller.role != CallerRole.REGULATOR:
        where.append("x.org_id = :o")
        params["o"] = caller.org or ""
    sql = (f"SELECT * FROM organization x WHERE {' AND '.join(where)} "  # noqa: S608 - fixed SQL
           "ORDER BY x.block_number, x.tx_index, x.log_index LIMIT :n")  # fmt: skip
    with store_errors(), engine.connect() as conn:
        rows = list(conn.execute(_text(sql), params).mappings())
    items = [
        OrganizationLine(
            org_id=r["org_id"],
            slug=readable(r["org_id"]),
            name=r["name"],
            kind=_enum_name(OrgKind, int(r["kind"])),
            status=_enum_name(OrgStatus, int(r["status"])),
            chain=_ref(r),
        )
        for r in rows[:limit]
    ]
    return OrganizationPage(items=items, next_cursor=_next(rows, limit))


def _status_filter(status: str, now: int | None, params: dict[str, Any]) -> str:
    """SQL for the effective status `status` (EXPIRED: ACTIVE or SUSPENDED past the window's
    end at the newest indexed block's time, as `effective_status` judges one row)."""
    live = (int(AgreementStatus.ACTIVE), int(AgreementStatus.SUSPENDED))
    params["live_a"], params["live_s"] = live
    if now is None:  # no block time yet: nothing has expired
        params["stored"] = int(AgreementStatus[status])
        return "x.status = :stored"
    params["now"] = now
    if status == "EXPIRED":
        params["stored"] = int(AgreementStatus.EXPIRED)
        return ("(x.status = :stored OR (x.status IN (:live_a, :live_s) "
                "AND x.valid_until < :now))")  # fmt: skip
    params["stored"] = int(AgreementStatus[status])
    if status in ("ACTIVE", "SUSPENDED"):
        return "(x.status = :stored AND x.valid_until >= :now)"
    return "x.status = :stored"


def agreements(
    engine: Engine, caller: Caller, status: str | None, limit: int, cursor: str | None
) -> AgreementPage:
    """Agreement versions newest first, with their effective status and quota use."""
    before = parse_cursor(cursor)
    where = ["1 = 1"]
    params: dict[str, Any] = {"n": limit + 1, **_position(before)}
    if before is not None:
        where.append(_BEFORE)
    if caller.role != CallerRole.REGULATOR:
        where.append("(x.holder_org = :o OR x.requester_org = :o)")
        params["o"] = caller.org or ""
    with store_errors(), engine.connect() as conn:
        now = indexed_time(conn)
        if status is not None:
            where.append(_status_filter(status, now, params))
        sql = (f"SELECT * FROM agreement x WHERE {' AND '.join(where)} "  # noqa: S608 - fixed SQL
               f"ORDER BY {_NEWEST} LIMIT :n")  # fmt: skip
        rows = list(conn.execute(_text(sql), params).mappings())[: limit + 1]
        page = rows[:limit]
        granted = _granted(conn, [r["agreement_id"] for r in page])
        names = _org_names(conn, {r[c] for r in page for c in ("holder_org", "requester_org")})
    items = []
    for r in page:
        effective, expired_at = effective_status(int(r["status"]), int(r["valid_until"]), now)
        items.append(AgreementLine(
            agreement_id=r["agreement_id"], version=int(r["version"]), status=effective,
            expired_at=expired_at, holder=readable(r["holder_org"]),
            holder_name=names.get(r["holder_org"]), requester=readable(r["requester_org"]),
            requester_name=names.get(r["requester_org"]),
            scenario=_enum_name(Scenario, int(r["scenario"])),
            max_tier=_enum_name(Tier, int(r["max_tier"])),
            valid_from=_moment(int(r["valid_from"])), valid_until=_moment(int(r["valid_until"])),
            quota=int(r["quota"]), granted=granted.get(r["agreement_id"], 0), chain=_ref(r),
        ))  # fmt: skip
    return AgreementPage(items=items, next_cursor=_next(rows, limit))


def _moment(seconds: int) -> str:
    try:
        return iso_time(seconds)
    except (OverflowError, OSError, ValueError):
        return "no end"


def _granted(conn: Connection, ids: list[str]) -> dict[str, int]:
    """Granted accesses of each agreement: one grouped count over the agreement index."""
    if not ids:
        return {}
    marks = ", ".join(f":a{i}" for i in range(len(ids)))
    sql = (f"SELECT agreement_id, count(*) AS n FROM access_event WHERE agreement_id IN ({marks})"  # noqa: S608 - bind marks
           f" AND decision = {int(Decision.GRANTED)} GROUP BY agreement_id")  # fmt: skip
    params = {f"a{i}": key for i, key in enumerate(ids)}
    return {r["agreement_id"]: int(r["n"]) for r in conn.execute(_text(sql), params).mappings()}


def _org_names(conn: Connection, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    ordered = sorted(ids)
    marks = ", ".join(f":o{i}" for i in range(len(ordered)))
    params = {f"o{i}": key for i, key in enumerate(ordered)}
    sql = f"SELECT org_id, name FROM organization WHERE org_id IN ({marks})"  # noqa: S608 - bind marks
    rows = conn.execute(_text(sql), params).mappings()
    return {r["org_id"]: str(r["name"]) for r in rows}


def accesses(engine: Engine, caller: Caller, limit: int, cursor: str | None) -> AccessPage:
    """Access decisions newest first (an organization's: those under its agreements)."""
    before = parse_cursor(cursor)
    where = ["1 = 1"]
    params: dict[str, Any] = {"n": limit + 1, **_position(before)}
    if before is not None:
        where.append(_BEFORE)
    sql = (
        "SELECT x.*, g.requester_org, b.timestamp FROM access_event x "  # noqa: S608 - fixed SQL
        "LEFT JOIN agreement g ON g.agreement_id = x.agreement_id "
        "LEFT JOIN block b ON b.number = x.block_number WHERE {where} "
        f"ORDER BY {_NEWEST} LIMIT :n"
    )
    with store_errors(), engine.connect() as conn:
        if caller.role == CallerRole.REGULATOR:
            every = _text(sql.format(where=" AND ".join(where)))
            rows = list(conn.execute(every, params).mappings())
        else:
            # The newest of each of its agreements (through the agreement-and-position index),
            # merged: a page costs one short index read per agreement, never a scan of others'.
            mine = conn.execute(
                _text("SELECT agreement_id FROM agreement WHERE holder_org = :o OR "
                      "requester_org = :o"), {"o": caller.org or ""},
            ).scalars().all()  # fmt: skip
            each = _text(sql.format(where=" AND ".join([*where, "x.agreement_id = :a"])))
            rows = [r for a in mine for r in conn.execute(each, {**params, "a": a}).mappings()]
            rows.sort(key=lambda r: (r["block_number"], r["tx_index"], r["log_index"]),
                      reverse=True)  # fmt: skip
            rows = rows[: limit + 1]
        names = _org_names(conn, {r["requester_org"] for r in rows[:limit] if r["requester_org"]})
    items = [
        AccessLine(
            access_id=r["access_id"],
            agreement_id=r["agreement_id"],
            dataset=readable(r["dataset_id"]),
            requester=_checksummed(r["requester"]),
            requester_org=(
                names.get(r["requester_org"]) or readable(r["requester_org"])
                if r["requester_org"]
                else None
            ),
            decision=_enum_name(Decision, int(r["decision"])),
            reason=_enum_name(DenyReason, int(r["reason"])),
            tier=_enum_name(Tier, int(r["tier"])),
            operation=_enum_name(Operation, int(r["operation"])),
            time=None if r["timestamp"] is None else iso_time(int(r["timestamp"])),
            chain=_ref(r),
        )
        for r in rows[:limit]
    ]
    return AccessPage(items=items, next_cursor=_next(rows, limit))
