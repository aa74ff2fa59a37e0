"""Integrity verification: is the audit store the chain's, and did the chain keep its rules?

A regulator must be sure an answer is the chain's, not an edited database's. `verify_store`
runs three independent checks and names every discrepancy (check code, table, position):

1. **Chain comparison** — re-reads every log of the audited contracts from the node, page by
   page, projects it exactly as the indexer does (`audit.store.project`) and compares with the
   stored rows of every table in the same block range: a changed value (`row_differs`), a row
   the chain has and the store lacks (`row_missing`), a row the chain never emitted
   (`row_not_on_chain`); a value an edit gave the wrong type is named the same way, and a
   check that cannot read one stops with `store_value_invalid`. Stored block hashes are
   compared with the node's (`block_hash_mismatch`, `checkpoint_mismatch`: a rewritten
   chain), stored block times too (`row_differs`: they date every access and judge its
   window), and status columns are recomputed from the recorded changes (`status_differs`).
2. **Signatures, off chain** — every agreement's EIP-712 digest is recomputed from the stored
   terms (`agreement_digest_mismatch`) and every party signature must recover to its stored
   signer (`agreement_signature_invalid`); every access request's digest is recomputed and its
   signature must recover to the stored requester (`access_signature_invalid`).
3. **Agreement invariants over the recorded accesses** — granted count ≤ quota
   (`quota_exceeded`); a grant only inside the window (`access_outside_window`, by block
   timestamp), only while the recorded status history says ACTIVE
   (`access_while_not_active`), only on a dataset in scope (`dataset_not_in_scope`), with
   fields ⊆ allowed (`fields_not_allowed`), tier ≤ max tier (`tier_above_ceiling`), an allowed
   operation (`operation_not_allowed`); a release only from a granted access of the same
   agreement that may release that kind (`release_without_grant`, `release_not_allowed`).

4. **Patients** (`audit.verify_cohorts`) — every verified cohort rebuilds the root the chain
   recorded and every stored inclusion proof is its leaf's (`cohort_proof_invalid`,
   `cohort_members_missing`); leaves no hospital store gave for a consent-requiring agreement
   (`cohort_leaves_unavailable`) or that hash to another root (`cohort_root_mismatch`); every
   subject admitted under a COHORT_CONSENT agreement had a covering consent at the time
   (`subject_without_consent`, with the `consent_lag` grace of `audit.consents`); every granted
   PATIENT_AUTHORIZATION access redeemed its code (`authorization_not_redeemed`,
   `redemption_without_access`), unless it was a break-glass access: those are listed while no
   steward of the holder has reviewed them (`break_glass_unreviewed` in the report), and one
   unreviewed past its deadline is `break_glass_review_overdue` (`audit.break_glass`). The
   consent registry's events are rows like any other: the
   chain comparison of (1) covers them, their status columns included.

5. **Artifacts** (`audit.verify_artifacts`) — every release an artifact names is a stored
   release (`artifact_release_unknown`), every parent was registered before it
   (`artifact_parent_unknown`); an artifact derived, directly or through parent artifacts, from
   a release no granted access allowed (`artifact_from_disallowed_release`) or from the results
   of an agreement revoked before the artifact was registered (`artifact_from_revoked_agreement`,
   which the chain allows: the results had left before the revocation); an artifact registered
   under the result hash of a release that went to another organization, without naming that
   release (`artifact_claims_foreign_result`, which the chain allows too: the first
   registration of an id wins).

6. **The indexer** (`audit.verify_health`) — every log it quarantined (`event_quarantined`)
   and any that does not decode (`event_undecodable`), a checkpoint too far behind the head
   (`index_behind`), every rollback no operator acknowledged (`history_rewritten`).

One consistent read: the checkpoint and every row checked come from one snapshot of the store
(a read transaction on SQLite, an exported REPEATABLE READ snapshot shared by both passes on
PostgreSQL), so a verify that runs while the indexer writes checks the store as of the
checkpoint it read, never rows written after it.

The chain already refuses most of what (3) checks; finding one here means the store was edited
or the contracts are wrong — either way a regulator must hear of it.

Scale: everything streams (one page of logs, one batch of rows at a time) and the signature
checks, the dominant cost (~65 us a row: libsecp256k1's recovery ~50, the digest's two keccaks
through `dul.keccak` ~6), run in worker processes beside the chain pass.
"""

from __future__ import annotations

import bisect
import json
import multiprocessing
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, Field
from sqlalchemy import Connection, Engine, text

from audit.break_glass import BreakGlassCase, check_break_glass
from audit.chain_reads import block_hashes, block_headers
from audit.checkpoints import check_checkpoints, checkpoint_files, load_checkpoints
from audit.cohorts import CohortSource
from audit.events import AUDITED_CONTRACTS, DecodedEvent, EventDecodeError, EventDecoder
from audit.provenance import store_errors
from audit.store import COLUMNS, project
from audit.verify_artifacts import RELEASABLE, check_artifacts
from audit.verify_cohorts import check_cohort_sources, check_patients
from audit.verify_health import check_incidents, check_lag, check_quarantine
from audit.verify_state import ChainStateCheck
from dul.chain.log_pages import PageSizer
from dul.chain.rpc import RangeRefusedError, RpcClient
from dul.contracts.typed_data import (
    ACCESS_LOG_DOMAIN_NAME,
    ACCESS_REQUEST_TYPES,
    DOMAIN_VERSION,
    AgreementTerms,
    agreement_domain,
)
from dul.domain import (
    AgreementStatus,
    AuthorizationStatus,
    ConsentPolicy,
    ConsentStatus,
    Decision,
    OrgStatus,
    Scenario,
    Tier,
)
from dul.keccak import keccak
from dul.signing import (
    InvalidSignatureError,
    checksum_address,
    domain_separator,
    encode_type,
    recover,
)

log = structlog.get_logger("audit.verify")


# --- the report -------------------------------------------------------------------------------


class Finding(BaseModel):
    """One discrepancy. `check` is a stable code; `table` and `position` (block/tx/log, or
    the row key for tables keyed by id) name the row."""

    check: str
    table: str | None = None
    position: str | None = None
    key: str | None = None
    contract: str | None = Field(
        None, description="the contract whose state or transaction the finding is about"
    )
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class VerifyReport(BaseModel):
    ok: bool
    chain_id: int | None
    first_block: int | None
    checkpoint_block: int | None
    head_block: int | None = Field(
        None, description="the chain's head when the lag was checked (`index_behind`)"
    )
    checked: dict[str, int] = Field(
        default_factory=dict, description="rows, signatures and accesses checked, by kind"
    )
    findings_by_check: dict[str, int] = Field(default_factory=dict)
    findings_total: int = 0
    findings: list[Finding] = Field(
        default_factory=list, description="the first `max_findings` findings"
    )
    skipped: list[str] = Field(default_factory=list, description="checks not run, and why")
    notes: list[str] = Field(default_factory=list)
    break_glass_unreviewed: list[BreakGlassCase] = Field(
        default_factory=list,
        description="break-glass accesses no steward of the holder has reviewed yet, overdue "
        "(a `break_glass_review_overdue` finding) or still within their window",
    )
    seconds: dict[str, float] = Field(default_factory=dict)


@dataclass
class _Collector:
    max_findings: int
    findings: list[Finding] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    checked: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, check: str, message: str, **kwargs: Any) -> None:
        with self.lock:
            self.counts[check] += 1
            if len(self.findings) < self.max_findings:
                self.findings.append(Finding(check=check, message=message, **kwargs))


def _named(enum: Any, value: int) -> str:
    """An enum member's name, or the raw value when it names none."""
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


def _pos(block: int, tx: int, log_index: int) -> str:
    return f"{block}/{tx}/{log_index}"


# --- normalization ----------------------------------------------------------------------------

_JSON_COLUMNS = {
    ("event", "args"),
    ("dataset", "fields"),
    ("agreement", "duo_codes"),
    ("consent", "duo_codes"),
}
_KEYS: dict[str, tuple[str, ...]] = {
    "organization": ("org_id",),
    "dataset": ("dataset_id",),
    "agreement": ("agreement_id",),
    "agreement_dataset": ("agreement_id", "dataset_id"),
    "consent": ("consent_id",),
    "patient_authorization": ("code_hash",),
    "artifact": ("artifact_id",),
    "artifact_release_parent": ("artifact_id", "access_id", "result_hash", "agreement_id"),
    "artifact_parent": ("artifact_id", "parent_id"),
}
"""Tables keyed by id; every other table is keyed by its event position."""
_SKIP = {
    ("organization", "status"),
    ("agreement", "status"),
    ("consent", "status"),
    ("patient_authorization", "status"),
}
"""Recomputed from the change tables, checked as `status_differs` instead."""


def _norm(value: Any, is_json: bool) -> Any:
    if is_json:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value  # not JSON (an edit): differs from the chain's, named as such
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    if isinstance(value, bool):
        return int(value)
    return value


@dataclass(frozen=True)
class _TableSpec:
    name: str
    columns: tuple[str, ...]
    compared: tuple[int, ...]
    json_at: frozenset[int]
    key_at: tuple[int, ...]
    exact: bool
    """Every column is compared: a plain tuple equality can confirm a row before the
    normalizing comparison (which parses JSON) has to run."""

    @classmethod
    def of(cls, name: str) -> _TableSpec:
        columns = COLUMNS[name]
        key = _KEYS.get(name, ("block_number", "tx_index", "log_index"))
        return cls(
            name,
            columns,
            tuple(i for i, c in enumerate(columns) if (name, c) not in _SKIP),
            frozenset(i for i, c in enumerate(columns) if (name, c) in _JSON_COLUMNS),
            tuple(columns.index(k) for k in key),
            all((name, c) not in _SKIP for c in columns),
        )

    def key(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(row[i] for i in self.key_at)

    def values(self, row: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(_norm(row[i], i in self.json_at) for i in self.compared)

    def where(self, row: Sequence[Any]) -> dict[str, Any]:
        """How a finding names the row: position for positioned tables, key otherwise."""
        if self.columns[: len(self.key_at)] == ("block_number", "tx_index", "log_index"):
            return {"position": _pos(row[0], row[1], row[2])}
        block = row[self.columns.index("block_number")]
        return {"key": "/".join(str(v) for v in self.key(row)), "details": {"block": block}}


_AGREEMENT_STATUS_OF = {
    "AgreementProposed": AgreementStatus.PROPOSED,
    "AgreementActivated": AgreementStatus.ACTIVE,
    "AgreementSuspended": AgreementStatus.SUSPENDED,
    "AgreementResumed": AgreementStatus.ACTIVE,
    "AgreementRevoked": AgreementStatus.REVOKED,
    "AgreementExpired": AgreementStatus.EXPIRED,
    "AgreementSuperseded": AgreementStatus.SUPERSEDED,
}
_ORG_STATUS_OF = {
    "OrganizationRegistered": OrgStatus.ACTIVE,
    "OrganizationSuspended": OrgStatus.SUSPENDED,
    "OrganizationReinstated": OrgStatus.ACTIVE,
}
_CONSENT_STATUS_OF = {
    "ConsentRecorded": ConsentStatus.GRANTED,
    "ConsentWithdrawn": ConsentStatus.WITHDRAWN,
}
_AUTHORIZATION_STATUS_OF = {
    "AuthorizationIssued": AuthorizationStatus.ISSUED,
    "AuthorizationRevoked": AuthorizationStatus.REVOKED,
    "AuthorizationRedeemed": AuthorizationStatus.REDEEMED,
}


# --- 1. chain comparison ----------------------------------------------------------------------


Undecodable = tuple[tuple[int, int, int], str]
"""A log that does not decode: its position and the error."""


def _decode_all(
    decoder: EventDecoder, logs: Sequence[Mapping[str, Any]]
) -> tuple[list[DecodedEvent], list[Undecodable]]:
    """Every log decoded; the ones that do not decode (what the indexer quarantines) apart."""
    try:
        return [decoder.decode(entry) for entry in logs], []
    except (EventDecodeError, ValueError, KeyError, TypeError):
        pass  # rare: sort them out one by one
    events: list[DecodedEvent] = []
    bad: list[Undecodable] = []
    for entry in logs:
        try:
            events.append(decoder.decode(entry))
        except (EventDecodeError, ValueError, KeyError, TypeError) as exc:
            position = tuple(int(str(entry.get(k, "-0x1")), 16)
                             for k in ("blockNumber", "transactionIndex", "logIndex"))  # fmt: skip
            bad.append(((position[0], position[1], position[2]), f"{type(exc).__name__}: {exc}"))
    return events, bad


def _pages(
    rpc: RpcClient, decoder: EventDecoder, first: int, last: int, sizer: PageSizer
) -> Iterator[tuple[int, int, list[DecodedEvent], list[Undecodable]]]:
    """(from, to, decoded events, undecodable logs) pages over `first..last`, shrinking on
    refusal."""
    while first <= last:
        to = min(last, first + sizer.size - 1)
        try:
            logs = rpc.request(
                "eth_getLogs",
                {"fromBlock": hex(first), "toBlock": hex(to), "address": decoder.addresses},
            )
        except RangeRefusedError:
            if not sizer.refuse(to - first + 1):
                raise
            continue
        events, bad = _decode_all(decoder, logs)
        sizer.after(to - first + 1, len(events))
        yield first, to, events, bad
        first = to + 1


def _header_hash(rpc: RpcClient, number: int) -> str | None:
    header = rpc.request("eth_getBlockByNumber", hex(number), False)
    return None if header is None else str(header["hash"]).lower()


def _compare_chain(
    conn: Connection,
    rpc: RpcClient,
    contracts: Mapping[str, str],
    first: int,
    last: int,
    out: _Collector,
    observer: ChainStateCheck | None = None,
) -> None:
    decoder = EventDecoder({n: a for n, a in contracts.items() if n in AUDITED_CONTRACTS})
    specs = [_TableSpec.of(name) for name in COLUMNS]
    sizer = PageSizer(1_000, 50_000, 5_000)
    org_status: dict[str, int] = {}
    agreement_status: dict[str, int] = {}
    consent_status: dict[str, int] = {}
    codes: dict[str, dict[str, bool]] = {}
    """Per code, which of its events the range holds (and, once issued, whether multi-use)."""
    quarantined = {
        (int(b), int(t), int(i))
        for b, t, i in conn.execute(
            text("SELECT block_number, tx_index, log_index FROM quarantined_event")
        )
    }
    for a, b, events, undecodable in _pages(rpc, decoder, first, last, sizer):
        for position, error in undecodable:
            if position not in quarantined:
                out.add("event_undecodable", f"the log at {_pos(*position)} does not decode as "
                        f"the audited event it claims to be, and the store has not quarantined "
                        f"it ({error})", table="event", position=_pos(*position))  # fmt: skip
        if quarantined:  # reported as event_quarantined: not compared row by row
            events = [ev for ev in events if ev.position not in quarantined]
        if observer is not None:
            observer.page(events)
        page = project(events)
        for ev in events:
            if ev.name in _ORG_STATUS_OF:
                org_status[ev.args["org"]] = int(_ORG_STATUS_OF[ev.name])
            elif ev.name in _AGREEMENT_STATUS_OF:
                agreement_status[ev.args["id"]] = int(_AGREEMENT_STATUS_OF[ev.name])
            elif ev.name in _CONSENT_STATUS_OF:
                consent_status[ev.args["consentId"]] = int(_CONSENT_STATUS_OF[ev.name])
            elif ev.name in _AUTHORIZATION_STATUS_OF:
                seen = codes.setdefault(ev.args["codeHash"], {})
                seen[ev.name] = True
                if ev.name == "AuthorizationIssued":
                    seen["multi"] = bool(ev.args["authorization"]["multiUse"])
        for spec in specs:
            expected = {spec.key(r): r for r in page.rows.get(spec.name, ())}
            stored_rows = conn.execute(
                text(
                    f"SELECT {', '.join(spec.columns)} FROM {spec.name} "  # noqa: S608 - fixed names
                    "WHERE block_number >= :a AND block_number <= :b"
                ),
                {"a": a, "b": b},
            ).all()
            out.checked[f"rows.{spec.name}"] += len(stored_rows)
            for row in stored_rows:
                key = spec.key(row)
                chain_row = expected.pop(key, None)
                if chain_row is None:
                    out.add("row_not_on_chain", f"{spec.name} row {key} was never emitted by the "
                            "chain", table=spec.name, **spec.where(row))  # fmt: skip
                    continue
                if spec.exact and tuple(row) == chain_row:
                    continue  # the common case: same values, same types (JSON as the same text)
                have, want = spec.values(row), spec.values(chain_row)
                if have != want:
                    differing = {
                        spec.columns[i]: {"store": h, "chain": w}
                        for i, h, w in zip(spec.compared, have, want, strict=True)
                        if h != w
                    }
                    where = spec.where(row)
                    where.setdefault("details", {}).update({"columns": differing})
                    out.add("row_differs", f"{spec.name} row {key} differs from the chain in "
                            f"{', '.join(differing)}", table=spec.name, **where)  # fmt: skip
            for key, chain_row in expected.items():
                out.add("row_missing", f"{spec.name} row {key} is on the chain but not in the "
                        "store", table=spec.name, **spec.where(chain_row))  # fmt: skip
        _compare_blocks(conn, rpc, a, b, events, last, out)
    _compare_outside(conn, specs, first, last, out)
    _compare_status(conn, "organization", "org_id", org_status, out)
    _compare_status(conn, "agreement", "agreement_id", agreement_status, out)
    _compare_status(conn, "consent", "consent_id", consent_status, out)
    _compare_status(conn, "patient_authorization", "code_hash", _code_status(codes), out)


def _compare_blocks(
    conn: Connection,
    rpc: RpcClient,
    a: int,
    b: int,
    events: Sequence[DecodedEvent],
    checkpoint: int,
    out: _Collector,
) -> None:
    """Stored block hashes and times against the node's: from the logs where the block has
    events (and its logs carry the block's time, as anvil's do), from the headers otherwise
    (the checkpoint block; every block on a node whose logs carry no time), read in batches.
    A stored time dates every access in the reports and judges each grant's window."""
    chain_blocks: dict[int, tuple[str, int, int | None]] = {}
    for ev in events:
        block_hash, count, stamp = chain_blocks.get(
            ev.block_number, (ev.block_hash, 0, ev.block_timestamp)
        )
        chain_blocks[ev.block_number] = (block_hash, count + 1, stamp)
    stored = conn.execute(
        text(
            "SELECT number, hash, events, timestamp FROM block "
            "WHERE number >= :a AND number <= :b ORDER BY number"
        ),
        {"a": a, "b": b},
    ).all()
    out.checked["rows.block"] += len(stored)
    unstamped = [
        int(row[0])
        for row in stored
        if int(row[0]) not in chain_blocks or chain_blocks[int(row[0])][2] is None
    ]
    headers = block_headers(rpc, unstamped) if unstamped else {}
    for number, stored_hash, count, stored_time in stored:
        number = int(number)
        chain = chain_blocks.pop(number, None)
        header = headers.get(number)
        if chain is None:
            node_hash = None if header is None else header[0]
            if node_hash != stored_hash:
                out.add("block_hash_mismatch", f"block {number}: the store has {stored_hash}, "
                        f"the node {node_hash}", table="block", key=str(number),
                        details={"store": stored_hash, "node": node_hash})  # fmt: skip
                continue
            if count:
                out.add("row_differs", f"block {number} has no events on the chain but the "
                        f"store counts {count}", table="block", key=str(number))  # fmt: skip
        else:
            if stored_hash != chain[0]:
                out.add("block_hash_mismatch", f"block {number}: the store has {stored_hash}, "
                        f"the node {chain[0]}", table="block", key=str(number),
                        details={"store": stored_hash, "node": chain[0]})  # fmt: skip
                continue
            if int(count) != chain[1]:
                out.add("row_differs", f"block {number}: the store counts {count} events, the "
                        f"chain has {chain[1]}", table="block", key=str(number))  # fmt: skip
        node_time = chain[2] if chain is not None and chain[2] is not None else (
            None if header is None else header[1]
        )  # fmt: skip
        stored_int = None if stored_time is None else int(stored_time)
        if node_time is not None and stored_int != node_time:
            out.add("row_differs", f"block {number}: the store dates it {stored_int}, the "
                    f"chain {node_time}", table="block", key=str(number),
                    details={"columns": {"timestamp": {"store": stored_int,
                                                       "chain": node_time}}})  # fmt: skip
    for number, (block_hash, _, _) in chain_blocks.items():
        out.add("row_missing", f"block {number} ({block_hash}) holds events but is not in "
                "the store", table="block", key=str(number))  # fmt: skip


def _compare_outside(
    conn: Connection, specs: Sequence[_TableSpec], first: int, last: int, out: _Collector
) -> None:
    """Rows outside the verified range cannot have come from the chain's audited history."""
    for spec in specs:
        for row in conn.execute(
            text(
                f"SELECT {', '.join(spec.columns)} FROM {spec.name} "  # noqa: S608 - fixed names
                "WHERE block_number < :a OR block_number > :b"
            ),
            {"a": first, "b": last},
        ):
            out.add("row_not_on_chain", f"{spec.name} row {spec.key(row)} lies outside the "
                    f"indexed blocks {first}..{last}", table=spec.name,
                    **spec.where(row))  # fmt: skip
    for (number,) in conn.execute(text("SELECT number FROM block WHERE number > :b"), {"b": last}):
        out.add("row_not_on_chain", f"block {number} lies beyond the checkpoint {last}",
                table="block", key=str(number))  # fmt: skip


def _code_status(codes: Mapping[str, Mapping[str, bool]]) -> dict[str, int]:
    """A code's status from its events, as the registry keeps it: REDEEMED once a single-use
    code is redeemed, REVOKED once revoked, ISSUED otherwise — a multi-use code stays ISSUED
    while redeemed. A redemption of a code issued before the range says nothing (single- or
    multi-use is in its issuance)."""
    out: dict[str, int] = {}
    for code, seen in codes.items():
        redeemed = seen.get("AuthorizationRedeemed", False)
        multi = seen.get("multi")
        if redeemed and multi is False:
            out[code] = int(AuthorizationStatus.REDEEMED)
        elif seen.get("AuthorizationRevoked"):
            out[code] = int(AuthorizationStatus.REVOKED)
        elif multi is not None:
            out[code] = int(AuthorizationStatus.ISSUED)
    return out


def _compare_status(
    conn: Connection, table: str, key: str, expected: Mapping[str, int], out: _Collector
) -> None:
    for entity, status in conn.execute(text(f"SELECT {key}, status FROM {table}")):  # noqa: S608 - fixed names
        want = expected.get(entity)
        if want is not None and _as_int(status) != want:
            out.add("status_differs", f"{table} {entity}: the store says status {status!r}, "
                    f"the recorded changes give {want}", table=table, key=entity,
                    details={"store": _as_int(status), "chain": want})  # fmt: skip


def _check_contracts(
    stored: Mapping[str, str], deployment: Mapping[str, str], out: _Collector
) -> dict[str, str]:
    """The store's contracts against the deployment manifest's (each that differs named); the
    manifest's addresses win for the audited contracts it names."""
    contracts = dict(stored)
    for name in (n for n in AUDITED_CONTRACTS if n in deployment):
        want = str(deployment[name]).lower()
        have = stored.get(name)
        if have is None or str(have).lower() != want:
            out.add("contracts_differ", f"the store records {name} at {have}, the deployment "
                    f"manifest at {want}: it is not the index of this deployment",
                    table="checkpoint", key=name, contract=name,
                    details={"store": have, "deployment": want})  # fmt: skip
        contracts[name] = want
    return contracts


def _as_int(value: Any) -> Any:
    """An integer column's value, or as stored when an edit put something else there
    (SQLite keeps any value in any column)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return value


_BAD_VALUE = (ArithmeticError, AttributeError, KeyError, TypeError, ValueError)


@contextmanager
def _stored_values(out: _Collector, what: str) -> Iterator[None]:
    """A check that meets a stored value of the wrong type or shape (a hand edit) stops with
    a finding instead of a traceback; the other checks still run."""
    try:
        yield
    except _BAD_VALUE as exc:
        out.add("store_value_invalid", f"the {what} check stopped at a stored value it cannot "
                f"read ({type(exc).__name__}: {str(exc)[:200]}): the store was edited",
                details={"check": what})  # fmt: skip


# --- 2. signatures ----------------------------------------------------------------------------

_ACCESS_TYPEHASH = keccak(encode_type("AccessRequest", ACCESS_REQUEST_TYPES).encode())


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def access_request_digest(separator: bytes, row: Sequence[Any]) -> bytes:
    """The EIP-712 digest of a stored access request, straight from its columns.

    `row` = (access_id, agreement_id, dataset_id, field_mask, tier, operation, request_hash,
    authorization_ref, deadline). Every member is a static type, so hashStruct is one keccak
    over fixed words (4x faster than the generic encoder; equal to it by test)."""
    (access_id, agreement_id, dataset_id, mask, tier, operation, request_hash, auth, deadline) = row
    struct = keccak(
        _ACCESS_TYPEHASH
        + bytes.fromhex(access_id[2:])
        + bytes.fromhex(agreement_id[2:])
        + bytes.fromhex(dataset_id[2:])
        + _word(int(mask, 16))
        + _word(int(tier))
        + _word(int(operation))
        + bytes.fromhex(request_hash[2:])
        + bytes.fromhex(auth[2:])
        + _word(int(deadline))
    )
    return keccak(b"\x19\x01" + separator + struct)


_AccessSig = tuple[str, str, tuple[Any, ...], str, str, int, str]
"""(position, access id, digest columns, sig r, sig s, sig v, requester)."""


def check_access_signatures(
    separator: bytes, rows: Sequence[_AccessSig]
) -> list[tuple[str, str, str]]:
    """(position, access id, why) of every row whose signature does not recover to its
    requester. Runs in worker processes: plain data in, plain data out."""
    bad: list[tuple[str, str, str]] = []
    for position, access_id, columns, r, s, v, requester in rows:
        try:
            signature = bytes.fromhex(r[2:]) + bytes.fromhex(s[2:]) + bytes((int(v),))
            signer = recover(access_request_digest(separator, columns), signature).lower()
        except (InvalidSignatureError, ValueError) as exc:
            bad.append((position, access_id, str(exc)))
            continue
        if signer != requester:
            bad.append((position, access_id, f"recovers to {signer}, not {requester}"))
    return bad


@dataclass
class _Terms:
    agreement_id: str
    status_positions: list[tuple[int, int, int]]
    statuses: list[int]
    valid_from: int
    valid_until: int
    quota: int
    max_tier: int
    operations: int
    scope: dict[str, int]
    granted: int = 0

    def status_at(self, position: tuple[int, int, int]) -> int:
        at = bisect.bisect_left(self.status_positions, position)
        return self.statuses[at - 1] if at else int(AgreementStatus.PROPOSED)


def _agreements(
    conn: Connection, chain_id: int, contracts: Mapping[str, str], out: _Collector
) -> dict[str, _Terms]:
    """Loads every agreement's terms and history; recomputes digests and party signatures."""
    domain = agreement_domain(chain_id, _address(contracts["AgreementRegistry"]))
    scopes: dict[str, dict[str, int]] = {}
    for agreement, dataset, mask in conn.execute(
        text("SELECT agreement_id, dataset_id, field_mask FROM agreement_dataset")
    ):
        scopes.setdefault(agreement, {})[dataset] = int(mask, 16)
    history: dict[str, list[tuple[tuple[int, int, int], int]]] = {}
    for agreement, b, t, i, status in conn.execute(
        text(
            "SELECT agreement_id, block_number, tx_index, log_index, status "
            "FROM agreement_status_change ORDER BY block_number, tx_index, log_index"
        )
    ):
        history.setdefault(agreement, []).append(((int(b), int(t), int(i)), int(status)))
    signatures: dict[str, list[Any]] = {}
    for sig in conn.execute(text("SELECT * FROM agreement_signature")).mappings():
        signatures.setdefault(sig["agreement_id"], []).append(sig)
    terms: dict[str, _Terms] = {}
    for row in conn.execute(text("SELECT * FROM agreement")).mappings():
        agreement = str(row["agreement_id"])
        scope = scopes.get(agreement, {})
        changes = history.get(agreement, [])
        where = {"table": "agreement", "key": agreement}
        try:
            order = _dataset_order(conn, row, scope)
            terms[agreement] = _Terms(
                agreement, [p for p, _ in changes], [s for _, s in changes],
                int(row["valid_from"]), int(row["valid_until"]), int(row["quota"]),
                int(row["max_tier"]), int(row["operations"]), scope,
            )  # fmt: skip
            stored = AgreementTerms(
                holder=bytes.fromhex(row["holder_org"][2:]),
                requester=bytes.fromhex(row["requester_org"][2:]),
                datasets=tuple(bytes.fromhex(d[2:]) for d in order),
                field_masks=tuple(scope[d] for d in order),
                scenario=Scenario(row["scenario"]),
                max_tier=Tier(row["max_tier"]),
                operations=int(row["operations"]),
                valid_from=int(row["valid_from"]),
                valid_until=int(row["valid_until"]),
                quota=int(row["quota"]),
                consent_policy=ConsentPolicy(row["consent_policy"]),
                terms_hash=bytes.fromhex(row["terms_hash"][2:]),
                nonce=int(row["nonce"], 16),
                deadline=int(row["deadline"]),
                duo_codes=tuple(int(c) for c in _loads(row["duo_codes"])),
                disease_code=bytes.fromhex(row["disease_code"][2:]),
                ethics_approval=bytes.fromhex(row["ethics_approval"][2:]),
                break_glass_review_hours=int(row["break_glass_review_hours"]),
            )
            previous = bytes.fromhex(row["previous_id"][2:]) if row["previous_id"] else bytes(32)
            digest = stored.digest(domain, int(row["version"]), previous)
        except (ValueError, KeyError, TypeError) as exc:
            out.add("agreement_digest_mismatch", f"agreement {agreement}: the stored terms do "
                    f"not form an Agreement ({exc})", **where)  # fmt: skip
            continue
        out.checked["agreement_digests"] += 1
        if "0x" + stored.agreement_id.hex() != agreement:
            out.add("agreement_digest_mismatch", f"agreement {agreement}: id is not "
                    "keccak(holder, requester, nonce) of the stored terms", **where)  # fmt: skip
        if "0x" + digest.hex() != row["digest"]:
            out.add("agreement_digest_mismatch", f"agreement {agreement}: the stored terms hash "
                    f"to 0x{digest.hex()}, the stored digest is {row['digest']}",
                    **where)  # fmt: skip
        for sig in signatures.get(agreement, []):
            out.checked["agreement_signatures"] += 1
            try:
                signer = recover(digest, bytes.fromhex(sig["signature"][2:])).lower()
            except (InvalidSignatureError, ValueError) as exc:
                signer = f"nobody ({exc})"
            if signer != sig["signer"]:
                out.add("agreement_signature_invalid", f"agreement {agreement}: the signature "
                        f"of {sig['signer']} over the stored terms recovers to {signer}",
                        table="agreement_signature",
                        position=_pos(sig["block_number"], sig["tx_index"], sig["log_index"]),
                        key=agreement)  # fmt: skip
    return terms


def _address(value: str) -> Any:
    return checksum_address(bytes.fromhex(value[2:]))


def _loads(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _dataset_order(conn: Connection, row: Any, scope: Mapping[str, int]) -> list[str]:
    """Datasets in the order the parties signed them (the proposal event's terms): the digest
    depends on it and `agreement_dataset` keeps a set."""
    args = conn.execute(
        text("SELECT args FROM event WHERE block_number = :b AND tx_index = :t AND log_index = :i"),
        {"b": row["block_number"], "t": row["tx_index"], "i": row["log_index"]},
    ).scalar()
    if args is not None:
        datasets = _loads(args).get("terms", {}).get("datasets")
        if isinstance(datasets, list) and sorted(datasets) == sorted(scope):
            return [str(d) for d in datasets]
    return sorted(scope)


# --- 3. invariants over the accesses ----------------------------------------------------------

_RELEASABLE = RELEASABLE

_ACCESS_COLUMNS = (
    "block_number, tx_index, log_index, access_id, agreement_id, dataset_id, field_mask, tier, "
    "operation, request_hash, authorization_ref, deadline, sig_r, sig_s, sig_v, requester, "
    "decision"
)
SIGNATURE_CHUNK = 5_000


def _check_accesses(
    conn: Connection,
    chain_id: int,
    contracts: Mapping[str, str],
    terms: dict[str, _Terms],
    out: _Collector,
    workers: int,
    signatures: bool,
) -> None:
    """One streamed pass over access_event in chain order; signatures go to a process pool."""
    separator = domain_separator(
        ACCESS_LOG_DOMAIN_NAME,
        DOMAIN_VERSION,
        chain_id,
        _address(contracts["AccessLog"]),
    )
    timestamps = {
        int(n): None if t is None else int(t)
        for n, t in conn.execute(text("SELECT number, timestamp FROM block"))
    }
    releases = conn.execute(text("SELECT * FROM result_release")).mappings().all()
    # an access is its request id and its agreement: a release names both
    released = {(r["access_id"], r["agreement_id"]) for r in releases}
    released_ids = {access_id for access_id, _ in released}
    release_of: dict[tuple[str, str], tuple[int, int, int]] = {}
    other_agreement: set[str] = set()
    """Request ids released from that the store holds under some other agreement."""
    pools: list[ProcessPoolExecutor] = []
    pending: list[Future[list[tuple[str, str, str]]]] = []
    chunk: list[_AccessSig] = []

    def flush() -> None:
        if not chunk:
            return
        batch = list(chunk)
        chunk.clear()
        out.checked["access_signatures"] += len(batch)
        if not pools and workers > 1 and out.checked["access_signatures"] > 2 * SIGNATURE_CHUNK:
            # Worker processes take a second to start: only worth it for a big store.
            pools.append(
                ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            )
        if not pools:
            _report_signatures(check_access_signatures(separator, batch), out)
        else:
            pending.append(pools[0].submit(check_access_signatures, separator, batch))
            while len(pending) > 2 * workers:
                _report_signatures(pending.pop(0).result(), out)

    unchecked_window = 0
    try:
        result = conn.execution_options(yield_per=10_000).execute(
            text(
                f"SELECT {_ACCESS_COLUMNS} FROM access_event "  # noqa: S608 - fixed names
                "ORDER BY block_number, tx_index, log_index"
            )
        )
        for partition in result.partitions():
            for row in partition:
                (b, t, i, access_id, agreement_id, dataset_id, mask, tier, operation,
                 request_hash, auth, deadline, sig_r, sig_s, sig_v, requester,
                 decision) = row  # fmt: skip
                position = (int(b), int(t), int(i))
                where = _pos(*position)
                if signatures:
                    chunk.append((
                        where, access_id,
                        (access_id, agreement_id, dataset_id, mask, tier, operation,
                         request_hash, auth, deadline),
                        sig_r, sig_s, int(sig_v), requester,
                    ))  # fmt: skip
                    if len(chunk) >= SIGNATURE_CHUNK:
                        flush()
                out.checked["accesses"] += 1
                if access_id in released_ids:
                    if (access_id, agreement_id) in released:
                        release_of[access_id, agreement_id] = (
                            int(decision), int(tier), int(operation),
                        )  # fmt: skip
                    else:
                        other_agreement.add(access_id)
                agreement = terms.get(agreement_id)
                if agreement is None:
                    out.add("unknown_agreement", f"access {access_id} names agreement "
                            f"{agreement_id}, which the store does not hold",
                            table="access_event", position=where, key=access_id)  # fmt: skip
                    continue
                if int(decision) != Decision.GRANTED:
                    continue
                agreement.granted += 1
                unchecked_window += _check_grant(
                    agreement, position, timestamps.get(position[0]), access_id, dataset_id,
                    int(mask, 16), int(tier), int(operation), out,
                )  # fmt: skip
        flush()
        for future in pending:
            _report_signatures(future.result(), out)
    finally:
        for pool in pools:
            pool.shutdown(cancel_futures=True)
    for agreement in terms.values():
        if agreement.granted > agreement.quota:
            out.add("quota_exceeded", f"agreement {agreement.agreement_id}: {agreement.granted} "
                    f"granted accesses, quota {agreement.quota}", table="agreement",
                    key=agreement.agreement_id,
                    details={"granted": agreement.granted, "quota": agreement.quota})  # fmt: skip
    for r in releases:
        where = _pos(r["block_number"], r["tx_index"], r["log_index"])
        out.checked["releases"] += 1
        access = release_of.get((r["access_id"], r["agreement_id"]))
        if access is None or access[0] != Decision.GRANTED:
            if access is not None:
                why = "the access was not granted"
            elif r["access_id"] in other_agreement:
                why = "the access is of another agreement"
            else:
                why = "no such access"
            out.add("release_without_grant", f"result {r['result_hash']} released from access "
                    f"{r['access_id']}@{r['agreement_id']}: {why}", table="result_release",
                    position=where,
                    key=r["access_id"])  # fmt: skip
            continue
        allowed = _RELEASABLE.get(int(r["kind"]))
        if allowed is None or not allowed(access[1], access[2]):
            out.add("release_not_allowed", f"result {r['result_hash']} of kind {r['kind']} may "
                    f"not leave access {r['access_id']}@{r['agreement_id']} at tier {access[1]} "
                    f"for operation {access[2]}",
                    table="result_release", position=where, key=r["access_id"])  # fmt: skip
    if unchecked_window:
        out.checked["grants_without_block_timestamp"] += unchecked_window


def _check_grant(
    agreement: _Terms,
    position: tuple[int, int, int],
    timestamp: int | None,
    access_id: str,
    dataset_id: str,
    mask: int,
    tier: int,
    operation: int,
    out: _Collector,
) -> int:
    """The agreement's rules for one granted access; returns 1 when the window was unchecked
    (no block timestamp stored)."""
    where = {"table": "access_event", "position": _pos(*position), "key": access_id}
    status = agreement.status_at(position)
    if status != AgreementStatus.ACTIVE:
        out.add("access_while_not_active", f"access {access_id} granted while agreement "
                f"{agreement.agreement_id} was {_named(AgreementStatus, status)}",
                **where)  # fmt: skip
    unchecked = 0
    if timestamp is None:
        unchecked = 1
    elif not agreement.valid_from <= timestamp <= agreement.valid_until:
        out.add("access_outside_window", f"access {access_id} granted at {timestamp}, outside "
                f"{agreement.valid_from}..{agreement.valid_until}", **where)  # fmt: skip
    allowed = agreement.scope.get(dataset_id)
    if allowed is None:
        out.add("dataset_not_in_scope", f"access {access_id} granted on dataset {dataset_id}, "
                "not in the agreement's scope", **where)  # fmt: skip
    elif mask & ~allowed:
        out.add("fields_not_allowed", f"access {access_id} granted fields {hex(mask)}, allowed "
                f"{hex(allowed)}", **where)  # fmt: skip
    if tier > agreement.max_tier:
        out.add("tier_above_ceiling", f"access {access_id} granted at tier {tier}, above "
                f"{agreement.max_tier}", **where)  # fmt: skip
    if not agreement.operations >> operation & 1:
        out.add("operation_not_allowed", f"access {access_id} granted operation {operation}, "
                "not allowed by the agreement", **where)  # fmt: skip
    return unchecked


def _report_signatures(bad: list[tuple[str, str, str]], out: _Collector) -> None:
    for position, access_id, why in bad:
        out.add("access_signature_invalid", f"access {access_id}: the requester signature "
                f"{why}", table="access_event", position=position, key=access_id)  # fmt: skip


# --- entry point ------------------------------------------------------------------------------


_CHECKPOINT = text("SELECT chain_id, contracts, block_number, block_hash FROM checkpoint")
_PG_SNAPSHOT = re.compile(r"^[0-9A-Fa-f-]{1,64}$")


@contextmanager
def _snapshot(engine: Engine) -> Iterator[tuple[Connection, Connection]]:
    """Two connections that read one state of the store (the chain pass and the access pass
    run on one each, in parallel): on PostgreSQL a REPEATABLE READ transaction whose snapshot
    the second imports; on SQLite (WAL) a read transaction on each, begun until both see the
    same checkpoint (every indexer commit moves or rewrites it)."""
    with engine.connect() as first, engine.connect() as second:
        if engine.dialect.name == "postgresql":
            first.execution_options(isolation_level="REPEATABLE READ")
            second.execution_options(isolation_level="REPEATABLE READ")
            exported = str(first.execute(text("SELECT pg_export_snapshot()")).scalar_one())
            if not _PG_SNAPSHOT.match(exported):  # pragma: no cover - the server's own id
                raise ValueError(f"unexpected snapshot id {exported!r}")
            second.execute(text(f"SET TRANSACTION SNAPSHOT '{exported}'"))
            yield first, second
            return
        if engine.dialect.name == "sqlite":
            for _ in range(50):
                first.exec_driver_sql("BEGIN")
                second.exec_driver_sql("BEGIN")
                seen = [c.execute(_CHECKPOINT).first() for c in (first, second)]
                if seen[0] == seen[1]:
                    break
                first.rollback()
                second.rollback()
        yield first, second


def verify_store(
    engine: Engine,
    rpc: RpcClient | None,
    *,
    start_block: int | None = None,
    chain: bool = True,
    signatures: bool = True,
    workers: int | None = None,
    max_findings: int = 1_000,
    consent_lag: float = 60.0,
    after_checkpoint: Callable[[], object] | None = None,
    checkpoints: Path | None = None,
    max_lag_blocks: int | None = None,
    max_lag_s: float | None = None,
    deployment: Mapping[str, str] | None = None,
    now: float | None = None,
    cohort_sources: Sequence[CohortSource] = (),
) -> VerifyReport:
    """Runs the checks above; `rpc=None` or `chain=False` skips the chain comparison (said so
    in `skipped`). `start_block` is the deployment block (default: the first stored block —
    then rows deleted below it go unnoticed, which `skipped` says, as it says when no
    `deployment` is given). Raises
    StoreUnavailableError when the store cannot be read, NodeUnavailableError when the node
    cannot. `consent_lag` is `consent_lag_s` (see `audit.consents`). `after_checkpoint` is a
    test seam: called once the checkpoint is read (an indexer may write then). `checkpoints`
    is a directory of signed checkpoint files to check (`audit.checkpoints`); CheckpointError
    when it cannot be read. With the chain pass and `max_lag_blocks` / `max_lag_s`
    (`index_behind_blocks` / `index_behind_s`), a checkpoint that far behind the head is
    `index_behind` (`audit.verify_health`). `deployment` is the manifest's contract addresses:
    the store's own record of which contracts it indexed is checked against it
    (`contracts_differ`) and the chain is read at the manifest's addresses, so a store emptied
    and pointed at addresses that never emitted a log does not verify. `now` is the time
    break-glass review deadlines are judged at (default: the wall clock). `cohort_sources`
    (the hospitals' cohort stores) are asked for every granted access whose cohort the store
    does not list as verified (`cohort_rows_missing`)."""
    started = time.perf_counter()
    loaded = None if checkpoints is None else load_checkpoints(checkpoint_files(checkpoints))
    out = _Collector(max_findings)
    report = VerifyReport(ok=False, chain_id=None, first_block=None, checkpoint_block=None)
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    with store_errors(), _snapshot(engine) as (conn, own):
        checkpoint = conn.execute(_CHECKPOINT).first()
        if after_checkpoint is not None:
            after_checkpoint()
        if checkpoint is None:
            report.ok = True
            report.skipped.append("the store is empty (no checkpoint yet)")
            if loaded is not None:
                report.skipped.append("checkpoint files (nothing indexed to compare with)")
            return report
        chain_id, contracts, last, last_hash = (
            int(checkpoint[0]), _loads(checkpoint[1]), int(checkpoint[2]), str(checkpoint[3])
        )  # fmt: skip
        if start_block is None:
            lowest = conn.execute(text("SELECT min(number) FROM block")).scalar()
            start_block = int(lowest) if lowest is not None else last
            report.skipped.append("rows below the first stored block (no deployment block "
                                  "given: the store's own first block is trusted)")  # fmt: skip
        report.chain_id, report.first_block, report.checkpoint_block = chain_id, start_block, last
        if deployment is not None:
            contracts = _check_contracts(contracts, deployment, out)
        else:  # a store emptied and pointed at contracts that never emitted would verify
            report.skipped.append("the store's contracts against a deployment manifest (none "
                                  "given: the store's own record of what it indexed is "
                                  "trusted)")  # fmt: skip

        check_quarantine(conn, out)
        report.notes.extend(check_incidents(conn, out))
        if chain and rpc is not None and (max_lag_blocks is not None or max_lag_s is not None):
            report.head_block = check_lag(
                conn, rpc, last, out, max_blocks=max_lag_blocks if max_lag_blocks is not None
                else 2**62, max_seconds=max_lag_s if max_lag_s is not None else float("inf"),
            )  # fmt: skip

        phase = time.perf_counter()
        terms: dict[str, _Terms] = {}
        with _stored_values(out, "agreements"):
            terms = _agreements(conn, chain_id, contracts, out)
        report.seconds["agreements"] = round(time.perf_counter() - phase, 3)

        # The chain pass runs here while the access pass (signatures in worker processes)
        # runs in a thread on its own connection: the two dominant costs overlap.
        access_error: list[BaseException] = []

        def access_pass() -> None:
            try:
                # on the second connection of the snapshot
                begun = time.perf_counter()
                with _stored_values(out, "accesses and signatures"):
                    _check_accesses(own, chain_id, contracts, terms, out, workers, signatures)
                report.seconds["accesses_and_signatures"] = round(time.perf_counter() - begun, 3)
                begun = time.perf_counter()
                with _stored_values(out, "patients"):
                    check_patients(own, out, consent_lag=consent_lag)
                    if cohort_sources:
                        check_cohort_sources(own, cohort_sources, out)
                    report.break_glass_unreviewed = check_break_glass(own, out, now=now)
                report.seconds["patients"] = round(time.perf_counter() - begun, 3)
                begun = time.perf_counter()
                with _stored_values(out, "artifacts"):
                    check_artifacts(own, out)
                report.seconds["artifacts"] = round(time.perf_counter() - begun, 3)
            except BaseException as exc:  # re-raised in the caller's thread below
                access_error.append(exc)

        thread = threading.Thread(target=access_pass, name="audit-verify-accesses")
        thread.start()
        try:
            if chain and rpc is not None:
                phase = time.perf_counter()
                node_hash = _header_hash(rpc, last)
                if node_hash != last_hash:
                    out.add("checkpoint_mismatch", f"checkpoint block {last}: the store has "
                            f"{last_hash}, the node {node_hash}", table="checkpoint",
                            key=str(last),
                            details={"store": last_hash, "node": node_hash})  # fmt: skip
                state = ChainStateCheck(rpc, contracts, chain_id, last, out, out.checked)
                try:
                    with _stored_values(out, "chain comparison"):
                        _compare_chain(conn, rpc, contracts, start_block, last, out, state)
                    report.seconds["chain_compare"] = round(time.perf_counter() - phase, 3)
                    phase = time.perf_counter()
                    state.finish()
                finally:
                    state.close()
                report.seconds["state_and_transactions"] = round(time.perf_counter() - phase, 3)
                if state.unavailable is not None:
                    report.skipped.append(f"contract state at block {last} ({state.unavailable})")
                if state.transactions.unavailable is not None:
                    report.skipped.append(
                        f"transaction signatures ({state.transactions.unavailable})"
                    )
            else:
                # (the contract state and transaction checks are part of the chain comparison)
                report.skipped.append("chain comparison (no node given)")
            if loaded is not None:
                phase = time.perf_counter()
                hashes = None
                if chain and rpc is not None:
                    hashes = block_hashes(rpc, loaded.blocks)
                else:
                    report.skipped.append("checkpoint blocks against the chain (no node given)")
                check_checkpoints(conn, loaded, chain_id, last, hashes, out, out.checked)
                report.seconds["checkpoints"] = round(time.perf_counter() - phase, 3)
        finally:
            thread.join()
        if access_error:
            raise access_error[0]
    if not signatures:
        report.skipped.append("access-request signatures (not requested)")
    report.checked = dict(out.checked)
    report.findings_by_check = dict(out.counts)
    report.findings_total = sum(out.counts.values())
    report.findings = sorted(out.findings, key=lambda f: (f.check, f.table or "", f.position or ""))
    report.ok = report.findings_total == 0
    report.seconds["total"] = round(time.perf_counter() - started, 3)
    log.info("audit.verified", ok=report.ok, findings=report.findings_total,
             seconds=report.seconds["total"], **{k: v for k, v in report.checked.items()
                                                 if k == "accesses"})  # fmt: skip
    return report
