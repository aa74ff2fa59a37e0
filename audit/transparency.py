"""The patient transparency report: who used this subject's data, under what, and the proof.

For one subject reference (a keyed hash: the report never needs, and never shows, anything
else about the patient) it lists

- every access whose admitted cohort included the subject: agreement, dataset, requester and
  its organization, scenario, tier, operation, decision, time, the chain reference of the
  `AccessRecorded` event, and the RFC 9162 inclusion proof {root, size, index, proof} that
  anyone can check against that event's `cohortRoot` / `cohortSize` — with
  `ConsentRegistry.cohortIncludes(root, size, index, subject, proof)` on chain or
  `dul.cohort.verify_inclusion` — without trusting this service;
- every authorization code issued for the subject, with its revocation or the access that
  redeemed it;
- every consent and its history (recorded, withdrawn: by whom, when, where on chain).

Everything is an index look-up (`cohort_member` by subject in chain order, the access and its
agreement by key), so a report costs about the same over a million indexed accesses as over a
hundred. An unknown subject gets an empty report: "nothing recorded" is an answer.

A report asked for by an organization, or by a patient through a token a hospital vouches for,
holds that organization's records only (`holder`): the accesses of agreements it holds, the
consents and subject keys it holds, the codes it holds or was granted. A subject reference is
read by every member in the consent events on chain, and any steward can record something of
its own for it (a key, a consent); unfiltered, that would open another hospital's off-chain
cohort membership of the patient. A regulator's report holds everything.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from rich.console import Group, RenderableType
from rich.table import Table
from sqlalchemy import Connection, Engine

from audit.cohorts import split_proof
from audit.provenance import ChainRef, Kind, _json, _text, parse_id, readable, store_errors
from dul.consent_terms import disease_term
from dul.domain import (
    AuthorizationStatus,
    BreakGlassOutcome,
    BreakGlassReason,
    ConsentStatus,
    Decision,
    DenyReason,
    Operation,
    Scenario,
    Tier,
)

VERIFY_HINT = (
    "Each proof is an RFC 9162 audit path: check it against the cohortRoot and cohortSize of "
    "the AccessRecorded event at `chain` (eth_getTransactionReceipt of chain.tx_hash, log "
    "chain.log_index), e.g. with ConsentRegistry.cohortIncludes(root, size, index, subject, "
    "proof) on chain."
)


_NAMES: dict[Any, dict[int, str]] = {
    enum: {int(member): member.name for member in enum}
    for enum in (
        AuthorizationStatus,
        BreakGlassOutcome,
        BreakGlassReason,
        ConsentStatus,
        Decision,
        DenyReason,
        Operation,
        Scenario,
        Tier,
    )
}


def _name(enum: Any, value: int | None) -> str | None:
    if value is None:
        return None
    return _NAMES[enum].get(int(value), str(value))


def _time(timestamp: Any) -> str | None:
    if timestamp is None:
        return None
    try:  # isoformat: a third of strftime's cost, and a report formats hundreds
        return datetime.fromtimestamp(int(timestamp), UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # "valid until forever" (2**64 - 1)
        return "never" if int(timestamp) > 2**40 else str(timestamp)


def scenario_names(bits: int) -> list[str]:
    return [s.name for s in Scenario if bits >> s & 1]


class InclusionProof(BaseModel):
    """The subject is leaf `index` of the tree with head (`root`, `size`)."""

    root: str
    size: int
    index: int
    proof: list[str] = Field(description="sibling hashes, bottom up (RFC 9162 audit path)")


class BreakGlass(BaseModel):
    """An emergency access that opened the subject's records without their code: why, and the
    holder steward's review, due by `review_due`."""

    reason: str | None = Field(description="BreakGlassReason, e.g. PATIENT_INCAPACITATED")
    review_due: int = Field(description="block time the review is due by")
    review_due_time: str | None
    outcome: str | None = Field(description="UPHELD | REFERRED, once reviewed")
    reviewed: ChainRef | None = None
    overdue: bool = Field(description="not reviewed and past its due time now")


class SubjectAccess(BaseModel):
    access_id: str
    agreement_id: str
    dataset_id: str
    dataset: str = Field(description="the dataset's readable slug, or its id")
    holder_org: str | None
    requester: str = Field(description="the requester's account (it signed the request)")
    requester_org: str | None
    requester_org_name: str | None
    scenario: str | None
    tier: str | None
    operation: str | None
    decision: str | None
    reason: str | None
    timestamp: int | None = Field(description="block time, unix seconds")
    time: str | None
    admitted_by: str = Field(
        description="authorization (the access redeemed a code of the subject's), break-glass "
        "(an emergency access without a code) or cohort"
    )
    authorization: str | None = Field(description="the redeemed code's hash, if any")
    chain: ChainRef = Field(description="the AccessRecorded event holding the root")
    inclusion: InclusionProof
    break_glass: BreakGlass | None = Field(None, description="an emergency access, and its review")


class AuthorizationEntry(BaseModel):
    code_hash: str
    holder_org: str
    grantee_org: str
    grantee_name: str | None
    dataset_id: str
    scenario: str | None
    tier: str | None
    expires_at: int
    status: str | None
    issued_by: str = Field("steward", description="patient (signed with their key) | steward")
    issued: ChainRef
    issued_time: str | None
    revoked: ChainRef | None = None
    revoked_by: str | None = Field(None, description="patient | steward, once revoked")
    redeemed: ChainRef | None = None
    redeemed_by_access: str | None = Field(
        None, description="the request id of the access that (last) used it"
    )
    redeemed_by_agreement: str | None = Field(
        None,
        description="that access's agreement: a request id names one access per agreement, so "
        "the access is `redeemed_by_access` under this agreement",
    )
    multi_use: bool = Field(False, description="usable until it expires, not once")
    uses: int = Field(0, description="how many accesses redeemed it")


class ConsentChange(BaseModel):
    event: str = Field(description="recorded | withdrawn")
    by: str
    by_subject: bool = False
    time: str | None
    chain: ChainRef


class ConsentEntry(BaseModel):
    consent_id: str
    holder_org: str
    scenarios: list[str]
    duo_codes: list[str]
    studies: list[str] = Field(
        default_factory=list, description="agreement ids it is limited to (empty: any study)"
    )
    requesters: list[str] = Field(
        default_factory=list, description="requesting organizations it is limited to (empty: any)"
    )
    disease: str | None = Field(
        None, description="disease term of a disease-specific consent (DUO:0000007)"
    )
    valid_from: int
    valid_until: int
    status: str | None
    history: list[ConsentChange]


class SubjectKeyChange(BaseModel):
    """A key a steward registered (rotated, or removed: the zero address) for the subject: the
    key whose signatures issue and revoke the subject's authorization codes."""

    holder_org: str
    key: str
    previous: str
    by: str
    time: str | None
    chain: ChainRef


class SubjectReport(BaseModel):
    subject: str
    checkpoint_block: int | None = Field(description="the store is the chain up to this block")
    accesses: list[SubjectAccess]
    authorizations: list[AuthorizationEntry]
    consents: list[ConsentEntry]
    keys: list[SubjectKeyChange] = Field(default_factory=list)
    truncated: bool = Field(False, description="more accesses than `limit`: the first shown")
    how_to_verify: str = VERIFY_HINT


_ACCESSES = (
    "SELECT m.leaf_index, m.proof, a.block_number, a.tx_index, a.log_index, a.tx_hash, "
    "a.access_id, a.agreement_id, a.dataset_id, a.requester, a.decision, a.reason, a.tier, "
    "a.operation, a.cohort_root, a.cohort_size, a.authorization_ref, g.scenario, g.holder_org, "
    "g.requester_org, o.name AS requester_org_name, b.timestamp, "
    "x.reason AS bg_reason, x.review_due AS bg_due, r.outcome AS bg_outcome, "
    "r.block_number AS bg_block, r.tx_index AS bg_tx, r.log_index AS bg_log, "
    "r.tx_hash AS bg_hash "
    "FROM cohort_member m "
    "JOIN access_event a ON a.block_number = m.block_number AND a.tx_index = m.tx_index "
    "AND a.log_index = m.log_index "
    "LEFT JOIN agreement g ON g.agreement_id = a.agreement_id "
    "LEFT JOIN organization o ON o.org_id = g.requester_org "
    "LEFT JOIN block b ON b.number = a.block_number "
    "LEFT JOIN break_glass_access x ON x.access_id = a.access_id "
    "AND x.agreement_id = a.agreement_id "
    "LEFT JOIN break_glass_review r ON r.access_id = a.access_id "
    "AND r.agreement_id = a.agreement_id "
    "WHERE m.subject_ref = :s HOLDER "
    "ORDER BY m.block_number, m.tx_index, m.log_index LIMIT :limit"
)
_AUTHORIZATIONS = (
    "SELECT p.*, o.name AS grantee_name, b.timestamp, "
    "r.block_number AS r_block, r.tx_index AS r_tx, r.log_index AS r_log, r.tx_hash AS r_hash, "
    "r.access_id AS r_access, a.agreement_id AS r_agreement, "
    "v.block_number AS v_block, v.tx_index AS v_tx, v.log_index AS v_log, v.tx_hash AS v_hash, "
    "v.by_subject AS v_self "
    "FROM patient_authorization p "
    "LEFT JOIN authorization_redemption r ON r.code_hash = p.code_hash "
    # its access is the next log of the redemption's transaction (the access log redeems, then
    # records): the agreement names it where the request id names accesses elsewhere too
    "LEFT JOIN access_event a ON a.block_number = r.block_number AND a.tx_index = r.tx_index "
    "AND a.log_index = r.log_index + 1 "
    "LEFT JOIN authorization_revocation v ON v.code_hash = p.code_hash "
    "LEFT JOIN organization o ON o.org_id = p.grantee_org "
    "LEFT JOIN block b ON b.number = p.block_number "
    "WHERE p.subject = :s HOLDER ORDER BY p.block_number, p.tx_index, p.log_index, "
    "r.block_number, r.tx_index, r.log_index"
)
"""One row per code and redemption (a multi-use code: one per use, oldest first)."""
_KEYS = (
    "SELECT k.*, b.timestamp FROM subject_key k LEFT JOIN block b ON b.number = k.block_number "
    "WHERE k.subject = :s HOLDER ORDER BY k.block_number, k.tx_index, k.log_index"
)
_CONSENTS = (
    "SELECT c.*, b.timestamp, w.block_number AS w_block, w.tx_index AS w_tx, "
    "w.log_index AS w_log, w.tx_hash AS w_hash, w.by_account AS w_by, w.by_subject AS w_self, "
    "wb.timestamp AS w_time "
    "FROM consent c "
    "LEFT JOIN consent_withdrawal w ON w.consent_id = c.consent_id "
    "LEFT JOIN block b ON b.number = c.block_number "
    "LEFT JOIN block wb ON wb.number = w.block_number "
    "WHERE c.subject = :s HOLDER ORDER BY c.block_number, c.tx_index, c.log_index"
)
_HOLDER = {  # each query's rows of one organization: what it holds (a code: or was granted)
    _ACCESSES: "AND g.holder_org = :o ",
    _AUTHORIZATIONS: "AND (p.holder_org = :o OR p.grantee_org = :o) ",
    _KEYS: "AND k.holder_org = :o ",
    _CONSENTS: "AND c.holder_org = :o ",
}


def _query(sql: str, holder: str | None) -> str:
    return sql.replace(" HOLDER", "" if holder is None else " " + _HOLDER[sql].rstrip())


Plain = dict[str, Any]
"""The report is built as plain data and validated once (pydantic's core does that for a
whole report faster than `model_construct` does for one access)."""


def _chain(row: Any) -> Plain:
    return {
        "block": row["block_number"],
        "tx_index": row["tx_index"],
        "log_index": row["log_index"],
        "tx_hash": row["tx_hash"],
    }


def _chain_of(row: Any, prefix: str) -> Plain | None:
    """The chain reference of a joined row (`{prefix}block`, …), None when there is none."""
    if row[f"{prefix}block"] is None:
        return None
    return {
        "block": row[f"{prefix}block"],
        "tx_index": row[f"{prefix}tx"],
        "log_index": row[f"{prefix}log"],
        "tx_hash": row[f"{prefix}hash"],
    }


def subject_report(
    engine: Engine,
    raw_ref: str,
    *,
    limit: int = 10_000,
    empty: bool = False,
    holder: str | None = None,
) -> SubjectReport:
    """The transparency report of one subject reference (0x + 64 hex digits). Raises
    MalformedIdError (422) and StoreUnavailableError (503); an unknown subject is an empty
    report, and `empty` gives exactly that report whatever the store holds. `holder` (an
    organization's 0x id) keeps that organization's records only; None keeps everything."""
    subject = parse_id(Kind.SUBJECT, raw_ref)
    with store_errors(), engine.connect() as conn:
        checkpoint = conn.execute(_text("SELECT block_number FROM checkpoint")).scalar()
        if empty:
            accesses, authorizations, consents, keys = [], [], [], []
        else:
            accesses, authorizations, consents, keys = _subject_rows(conn, subject, limit, holder)
    truncated = len(accesses) > limit
    return SubjectReport.model_validate(
        {
            "subject": subject,
            "checkpoint_block": checkpoint,
            "accesses": [_access(row) for row in accesses[:limit]],
            "authorizations": [_authorization(row) for row in authorizations],
            "consents": [_consent(row) for row in consents],
            "keys": [_key(row) for row in keys],
            "truncated": truncated,
        }
    )


def _subject_rows(
    conn: Connection, subject: str, limit: int, holder: str | None
) -> tuple[list[Any], ...]:
    def rows(sql: str, **params: Any) -> Any:
        return conn.execute(_text(_query(sql, holder)), {"s": subject, "o": holder, **params})

    accesses = list(rows(_ACCESSES, limit=limit + 1).mappings())
    authorizations = _latest_use(rows(_AUTHORIZATIONS).mappings())
    consents = list(rows(_CONSENTS).mappings())
    keys = list(rows(_KEYS).mappings())
    return accesses, authorizations, consents, keys


def _latest_use(rows: Any) -> list[Any]:
    """One row per code, its latest redemption's, with `uses`: how many accesses redeemed it."""
    latest: dict[str, Any] = {}
    uses: dict[str, int] = {}
    for row in rows:
        code = row["code_hash"]
        latest[code] = row
        uses[code] = uses.get(code, 0) + (row["r_block"] is not None)
    return [{**row, "uses": uses[code]} for code, row in latest.items()]


_ZERO = "0x" + "00" * 32


def _access(row: Any) -> Plain:
    authorization = row["authorization_ref"]
    no_code = authorization in (None, _ZERO)
    emergency = row["bg_reason"] is not None
    return {
        "access_id": row["access_id"],
        "agreement_id": row["agreement_id"],
        "dataset_id": row["dataset_id"],
        "dataset": readable(row["dataset_id"]),
        "holder_org": row["holder_org"],
        "requester": row["requester"],
        "requester_org": row["requester_org"],
        "requester_org_name": row["requester_org_name"],
        "scenario": _name(Scenario, row["scenario"]),
        "tier": _name(Tier, row["tier"]),
        "operation": _name(Operation, row["operation"]),
        "decision": _name(Decision, row["decision"]),
        "reason": _name(DenyReason, row["reason"]),
        "timestamp": row["timestamp"],
        "time": _time(row["timestamp"]),
        # members exist only for verified cohorts; one that redeemed a code is that code's
        "admitted_by": "break-glass" if emergency else "cohort" if no_code else "authorization",
        "authorization": None if no_code or emergency else authorization,
        "chain": _chain(row),
        "inclusion": {
            "root": row["cohort_root"],
            "size": row["cohort_size"],
            "index": row["leaf_index"],
            "proof": split_proof(bytes(row["proof"])),
        },
        "break_glass": _break_glass(row) if emergency else None,
    }


def _break_glass(row: Any) -> Plain:
    outcome = row["bg_outcome"]
    reviewed = outcome is not None and int(outcome) != int(BreakGlassOutcome.NONE)
    return {
        "reason": _name(BreakGlassReason, row["bg_reason"]),
        "review_due": int(row["bg_due"]),
        "review_due_time": _time(row["bg_due"]),
        "outcome": _name(BreakGlassOutcome, outcome) if reviewed else None,
        "reviewed": _chain_of(row, "bg_") if reviewed else None,
        "overdue": not reviewed and int(row["bg_due"]) < time.time(),
    }


def _authorization(row: Any) -> Plain:
    return {
        "code_hash": row["code_hash"],
        "holder_org": row["holder_org"],
        "grantee_org": row["grantee_org"],
        "grantee_name": row["grantee_name"],
        "dataset_id": row["dataset_id"],
        "scenario": _name(Scenario, row["scenario"]),
        "tier": _name(Tier, row["tier"]),
        "expires_at": row["expires_at"],
        "status": _name(AuthorizationStatus, row["status"]),
        "issued_by": "patient" if row["issued_by_subject"] else "steward",
        "issued": _chain(row),
        "issued_time": _time(row["timestamp"]),
        "revoked": _chain_of(row, "v_"),
        "revoked_by": None
        if row["v_block"] is None
        else ("patient" if row["v_self"] else "steward"),
        "redeemed": _chain_of(row, "r_"),
        "redeemed_by_access": row["r_access"],
        "redeemed_by_agreement": row["r_agreement"],
        "multi_use": bool(row["multi_use"]),
        "uses": row["uses"],
    }


def _key(row: Any) -> Plain:
    return {
        "holder_org": row["holder_org"],
        "key": row["key"],
        "previous": row["previous"],
        "by": row["by_account"],
        "time": _time(row["timestamp"]),
        "chain": _chain(row),
    }


def _consent(row: Any) -> Plain:
    history = [
        {"event": "recorded", "by": row["recorder"], "by_subject": bool(row["by_subject"]),
         "time": _time(row["timestamp"]), "chain": _chain(row)}
    ]  # fmt: skip
    withdrawn = _chain_of(row, "w_")
    if withdrawn is not None:
        history.append(
            {"event": "withdrawn", "by": row["w_by"], "by_subject": bool(row["w_self"]),
             "time": _time(row["w_time"]), "chain": withdrawn}
        )  # fmt: skip
    return {
        "consent_id": row["consent_id"],
        "holder_org": row["holder_org"],
        "scenarios": scenario_names(int(row["scenarios"])),
        "duo_codes": [f"DUO:{int(c):07d}" for c in _json(row["duo_codes"])],
        "studies": str(row["studies"]).split(),
        "requesters": str(row["requesters"]).split(),
        "disease": disease_term(bytes.fromhex(str(row["disease_code"])[2:])),
        "valid_from": row["valid_from"],
        "valid_until": row["valid_until"],
        "status": _name(ConsentStatus, row["status"]),
        "history": history,
    }


def _redeemed_by(code: AuthorizationEntry) -> str:
    """The access that (last) used a code, as `request id@agreement` shortened."""
    if code.redeemed_by_access is None:
        return ""
    return f"{code.redeemed_by_access[:18]}…@{(code.redeemed_by_agreement or '?')[:10]}…"


def _at(chain: ChainRef | None) -> str:
    if chain is None:
        return ""
    return f"block {chain.block} log {chain.log_index} tx {chain.tx_hash[:10]}…"


def render_subject_report(report: SubjectReport) -> RenderableType:
    """The report as rich tables (the CLI prints this; `--json` prints the model)."""
    parts: list[RenderableType] = []
    accesses = Table(
        title=f"Uses of subject {report.subject[:18]}… ({len(report.accesses)} access(es)"
        + (", more not shown" if report.truncated else "")
        + f", indexed to block {report.checkpoint_block})"
    )
    for column in ("time", "who", "scenario / tier / operation", "decision", "via", "proof",
                   "chain reference"):  # fmt: skip
        accesses.add_column(column)
    for a in report.accesses:
        who = a.requester_org_name or (readable(a.requester_org) if a.requester_org else "?")
        accesses.add_row(
            a.time or "", f"{who} ({a.dataset})", f"{a.scenario} / {a.tier} / {a.operation}",
            a.decision or "", a.admitted_by,
            f"leaf {a.inclusion.index} of {a.inclusion.size}", _at(a.chain),
        )  # fmt: skip
    parts.append(accesses)
    if report.authorizations:
        codes = Table(title="Authorization codes")
        for column in ("code hash", "grantee", "scope", "status", "issued", "redeemed by"):
            codes.add_column(column)
        for c in report.authorizations:
            codes.add_row(
                c.code_hash[:18] + "…", c.grantee_name or readable(c.grantee_org),
                f"{readable(c.dataset_id)} {c.scenario} ≤ {c.tier}", c.status or "",
                f"{_at(c.issued)} by the {c.issued_by}", _redeemed_by(c),
            )  # fmt: skip
        parts.append(codes)
    consents = Table(title="Consents")
    for column in ("consent", "holder", "scenarios", "DUO", "valid", "status", "history"):
        consents.add_column(column)
    for k in report.consents:
        consents.add_row(
            k.consent_id[:18] + "…", readable(k.holder_org), ", ".join(k.scenarios),
            " ".join(k.duo_codes), f"{_time(k.valid_from)} … {_time(k.valid_until)}",
            k.status or "",
            "; ".join(f"{h.event} by {'the patient' if h.by_subject else h.by[:10]} "
                      f"({_at(h.chain)})" for h in k.history),
        )  # fmt: skip
    parts.append(consents)
    return Group(*parts)
