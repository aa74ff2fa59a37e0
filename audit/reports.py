"""The agreement compliance report: what a regulator reads first about one agreement.

Accesses granted and denied (denials by reason), quota use, results released (by kind, with
sizes), the signatures and the status history, each with its chain reference; and the patients'
side: the consent policy, accesses whose cohort the gateway filtered by consent and how many
subjects they admitted, how their cohorts checked against the chain (`audit.cohorts`), denials
for a missing consent or an invalid authorization code, codes redeemed, and the break-glass
accesses with their review (those unreviewed past their window named: `audit.break_glass`).
Counts are aggregates in the database (one grouped query per table), so a report over a million
accesses reads no row into Python. Compute-to-data: the artifacts derived from the agreement's
releases (directly or through parent artifacts), those registered after its revocation
(flagged), any release no granted access allowed, and artifacts another organization
registered under the result hash of one of its releases (flagged: `audit.verify_artifacts`). As
JSON (`AgreementReport`) and as a rich table.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from rich.console import Group, RenderableType
from rich.table import Table
from sqlalchemy import Engine, text

from audit.break_glass import CASE_LINES, BreakGlassCase, cases
from audit.provenance import (
    ChainRef,
    Kind,
    NotFoundError,
    effective_status,
    indexed_time,
    iso_time,
    parse_id,
    readable,
    store_errors,
)
from audit.verify_artifacts import (
    DERIVED_FROM_AGREEMENT_SQL,
    FOREIGN_CLAIMS_SQL,
    RELEASES_WITH_ACCESS_SQL,
    release_row_fault,
    revocations_of,
)
from dul.domain import (
    AgreementStatus,
    ArtifactKind,
    ConsentPolicy,
    Decision,
    DenyReason,
    ReleaseKind,
    Scenario,
    Tier,
)

ARTIFACT_LINES = 1_000


def _name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name)
    except ValueError:
        return str(value)


class SignatureLine(BaseModel):
    signer: str
    party: int
    chain: ChainRef


class StatusLine(BaseModel):
    event: str
    status: str
    by: str | None
    reason: str | None
    chain: ChainRef


class ArtifactLine(BaseModel):
    """An artifact derived from the agreement's released results."""

    artifact_id: str
    kind: str
    owner: str
    direct: bool = Field(description="names one of the agreement's releases itself (else "
                         "derived through parent artifacts)")  # fmt: skip
    after_revocation: bool = Field(
        description="registered after the agreement was revoked (a verify finding: "
        "artifact_from_revoked_agreement)"
    )
    chain: ChainRef


class ForeignClaimLine(BaseModel):
    """An artifact of another organization registered under the result hash of one of the
    agreement's releases, without deriving from it (a verify finding:
    artifact_claims_foreign_result)."""

    artifact_id: str = Field(description="= the result hash of the release")
    kind: str
    owner: str = Field(description="the organization that registered it")
    access_id: str = Field(description="the access the result was released from")
    recipient: str = Field(description="the organization the result was released to")
    chain: ChainRef = Field(description="the artifact's registration")


class ReleaseFaultLine(BaseModel):
    """A release under the agreement that no granted access allowed (a verify finding)."""

    check: str = Field(description="release_without_grant | release_not_allowed")
    access_id: str
    result_hash: str
    kind: str
    why: str
    chain: ChainRef


class AgreementReport(BaseModel):
    agreement_id: str
    version: int
    previous_id: str | None
    amended_by: list[str]
    status: str
    """As the chain says it now: ACTIVE or SUSPENDED past the window's end is EXPIRED."""
    expired_at: str | None = None
    """When EXPIRED by its window: the moment the window ended (ISO 8601, UTC)."""
    scenario: str
    max_tier: str
    holder: str
    requester: str
    valid_from: int
    valid_until: int
    quota: int
    accesses: int
    granted: int
    denied: int
    quota_used: float = Field(description="granted / quota")
    denials_by_reason: dict[str, int]
    granted_by_tier: dict[str, int]
    releases: int
    releases_by_kind: dict[str, int]
    released_bytes: int
    signatures: list[SignatureLine]
    status_history: list[StatusLine]
    proposed: ChainRef
    consent_policy: str
    consent_filtered_accesses: int = Field(
        description="granted accesses whose cohort the gateway filtered by consent "
        "(COHORT_CONSENT agreements)"
    )
    cohort_subjects: int = Field(description="subjects admitted, summed over granted accesses")
    cohorts_by_status: dict[str, int] = Field(
        description="granted accesses with a cohort by how it checked against the chain: "
        "verified, leaves_unavailable, root_mismatch"
    )
    denied_consent_missing: int
    denied_authorization_invalid: int
    authorization_redemptions: int
    break_glass_review_hours: int = Field(
        0, description="the signed review window of break-glass accesses (0: none allowed)"
    )
    break_glass_by_state: dict[str, int] = Field(
        default_factory=dict,
        description="break-glass accesses by review state: unreviewed, overdue (unreviewed past "
        "the window), upheld, referred; and reviewed_late",
    )
    break_glass: list[BreakGlassCase] = Field(
        default_factory=list,
        description=f"the first {CASE_LINES} break-glass accesses, in chain order, each with its "
        "reason, review deadline and review",
    )
    releases_not_allowed: list[ReleaseFaultLine] = Field(
        default_factory=list,
        description="releases under this agreement that no granted access allowed (the chain "
        "refuses them: finding one means the store or the contracts are wrong)",
    )
    derived_artifacts: int = Field(
        0, description="registered artifacts derived from its releases, directly or through "
        "parent artifacts"
    )  # fmt: skip
    artifacts: list[ArtifactLine] = Field(
        default_factory=list, description=f"the first {ARTIFACT_LINES} of those, in chain order"
    )
    artifacts_after_revocation: list[str] = Field(
        default_factory=list,
        description="ids of those registered after the agreement was revoked (flagged)",
    )
    results_claimed_by_others: list[ForeignClaimLine] = Field(
        default_factory=list,
        description="artifacts another organization registered under the result hash of one of "
        "its releases, without deriving from that release (flagged), in chain order",
    )


def _chain(row: Any) -> ChainRef:
    return ChainRef(
        block=int(row["block_number"]),
        tx_index=int(row["tx_index"]),
        log_index=int(row["log_index"]),
        tx_hash=str(row["tx_hash"]),
    )


def agreement_report(engine: Engine, raw_id: str, *, now: float | None = None) -> AgreementReport:
    """Raises MalformedIdError, NotFoundError (`agreement_not_found`), StoreUnavailableError.
    `now`: the time break-glass review deadlines are judged at (default: the wall clock)."""
    key = parse_id(Kind.AGREEMENT, raw_id)
    with store_errors(), engine.connect() as conn:

        def rows(sql: str) -> list[Any]:
            return list(conn.execute(text(sql), {"k": key}).mappings())

        found = rows("SELECT * FROM agreement WHERE agreement_id = :k")
        if not found:
            raise NotFoundError(
                f"the store holds no agreement {raw_id}", code="agreement_not_found"
            )
        row = found[0]
        status, expired_at = effective_status(
            int(row["status"]), int(row["valid_until"]), indexed_time(conn)
        )
        orgs = {
            r["org_id"]: r["name"]
            for r in rows(
                "SELECT org_id, name FROM organization WHERE org_id IN "
                "(SELECT holder_org FROM agreement WHERE agreement_id = :k UNION "
                "SELECT requester_org FROM agreement WHERE agreement_id = :k)"
            )
        }
        decisions = rows(
            "SELECT decision, reason, tier, count(*) AS n FROM access_event "
            "WHERE agreement_id = :k GROUP BY decision, reason, tier"
        )
        releases = rows(
            "SELECT kind, count(*) AS n FROM result_release WHERE agreement_id = :k GROUP BY kind"
        )
        # Summed here: sizes are uint64, and SQLite's sum() overflows past 2**63 - 1.
        released_bytes = sum(
            int(r["size"]) for r in rows("SELECT size FROM result_release WHERE agreement_id = :k")
        )
        signatures = rows(
            "SELECT * FROM agreement_signature WHERE agreement_id = :k "
            "ORDER BY block_number, tx_index, log_index"
        )
        history = rows(
            "SELECT * FROM agreement_status_change WHERE agreement_id = :k "
            "ORDER BY block_number, tx_index, log_index"
        )
        amended = [r["agreement_id"] for r in rows("SELECT agreement_id FROM agreement "
                                                   "WHERE previous_id = :k")]  # fmt: skip
        cohorts = rows(
            "SELECT c.status, count(*) AS n, sum(a.cohort_size) AS subjects "
            "FROM access_event a LEFT JOIN cohort c ON c.block_number = a.block_number "
            "AND c.tx_index = a.tx_index AND c.log_index = a.log_index "
            "WHERE a.agreement_id = :k AND a.decision = 1 "  # Decision.GRANTED
            "AND a.cohort_size > 0 GROUP BY c.status"
        )
        redemptions = rows(
            "SELECT count(*) AS n FROM authorization_redemption r "
            "JOIN access_event a ON a.block_number = r.block_number AND a.tx_index = r.tx_index "
            "AND a.log_index = r.log_index + 1 WHERE a.agreement_id = :k"
        )
        glass, glass_counts = cases(conn, agreement_id=key, now=now)
        faults: list[ReleaseFaultLine] = []
        for r in rows(RELEASES_WITH_ACCESS_SQL + " WHERE r.agreement_id = :k "
                      "ORDER BY r.block_number, r.tx_index, r.log_index"):  # fmt: skip
            fault = release_row_fault(r)
            if fault is not None:
                faults.append(ReleaseFaultLine(
                    check=fault[0], access_id=r["access_id"], result_hash=r["result_hash"],
                    kind=_name(ReleaseKind, r["kind"]), why=fault[1], chain=_chain(r),
                ))  # fmt: skip
        claimed = [
            ForeignClaimLine(
                artifact_id=c["artifact_id"], kind=_name(ArtifactKind, c["kind"]),
                owner=readable(str(c["owner_org"])), access_id=c["claimed_access"],
                recipient=readable(str(c["recipient_org"])), chain=_chain(c),
            )
            for c in rows(FOREIGN_CLAIMS_SQL + " AND r.agreement_id = :k "
                          "ORDER BY a.block_number, a.tx_index, a.log_index, r.access_id")
        ]  # fmt: skip
        revoked_at = revocations_of(conn, key)
        derived: list[ArtifactLine] = []
        flagged: list[str] = []
        count = 0
        for a in rows(DERIVED_FROM_AGREEMENT_SQL):
            count += 1
            chain = _chain(a)
            after = revoked_at is not None and (chain.block, chain.tx_index, chain.log_index) > (
                revoked_at
            )
            if after:
                flagged.append(str(a["artifact_id"]))
            if len(derived) < ARTIFACT_LINES:
                derived.append(ArtifactLine(
                    artifact_id=a["artifact_id"], kind=_name(ArtifactKind, a["kind"]),
                    owner=readable(str(a["owner_org"])), direct=bool(a["direct"]),
                    after_revocation=after, chain=chain,
                ))  # fmt: skip
    granted = sum(int(d["n"]) for d in decisions if d["decision"] == Decision.GRANTED)
    denied = sum(int(d["n"]) for d in decisions if d["decision"] == Decision.DENIED)
    by_reason: dict[str, int] = {}
    by_tier: dict[str, int] = {}
    for d in decisions:
        if d["decision"] == Decision.DENIED:
            name = _name(DenyReason, d["reason"])
            by_reason[name] = by_reason.get(name, 0) + int(d["n"])
        elif d["decision"] == Decision.GRANTED:
            name = _name(Tier, d["tier"])
            by_tier[name] = by_tier.get(name, 0) + int(d["n"])
    quota = int(row["quota"])
    by_status: dict[str, int] = {}
    for c in cohorts:
        cohort_status = str(c["status"] or "leaves_unavailable")  # no store asked: no leaves
        by_status[cohort_status] = by_status.get(cohort_status, 0) + int(c["n"])
    with_cohort = sum(int(c["n"]) for c in cohorts)
    policy = int(row["consent_policy"])
    return AgreementReport(
        agreement_id=key,
        version=int(row["version"]),
        previous_id=row["previous_id"],
        amended_by=amended,
        status=status,
        expired_at=expired_at,
        scenario=_name(Scenario, row["scenario"]),
        max_tier=_name(Tier, row["max_tier"]),
        holder=f"{orgs.get(row['holder_org'], '?')} ({readable(row['holder_org'])})",
        requester=f"{orgs.get(row['requester_org'], '?')} ({readable(row['requester_org'])})",
        valid_from=int(row["valid_from"]),
        valid_until=int(row["valid_until"]),
        quota=quota,
        accesses=granted + denied,
        granted=granted,
        denied=denied,
        quota_used=round(granted / quota, 6) if quota else 0.0,
        denials_by_reason=dict(sorted(by_reason.items())),
        granted_by_tier=dict(sorted(by_tier.items())),
        releases=sum(int(r["n"]) for r in releases),
        releases_by_kind={_name(ReleaseKind, r["kind"]): int(r["n"]) for r in releases},
        released_bytes=released_bytes,
        signatures=[
            SignatureLine(signer=s["signer"], party=int(s["party"]), chain=_chain(s))
            for s in signatures
        ],
        status_history=[
            StatusLine(
                event=h["event"],
                status=_name(AgreementStatus, h["status"]),
                by=h["by_account"],
                reason=h["reason"],
                chain=_chain(h),
            )
            for h in history
        ],
        proposed=_chain(row),
        consent_policy=_name(ConsentPolicy, policy),
        consent_filtered_accesses=with_cohort if policy == ConsentPolicy.COHORT_CONSENT else 0,
        cohort_subjects=sum(int(c["subjects"] or 0) for c in cohorts),
        cohorts_by_status=dict(sorted(by_status.items())),
        denied_consent_missing=by_reason.get(DenyReason.CONSENT_MISSING.name, 0),
        denied_authorization_invalid=by_reason.get(DenyReason.AUTHORIZATION_INVALID.name, 0),
        authorization_redemptions=int(redemptions[0]["n"]) if redemptions else 0,
        break_glass_review_hours=int(row["break_glass_review_hours"]),
        break_glass_by_state=dict(sorted((k, v) for k, v in glass_counts.items() if v)),
        break_glass=glass,
        releases_not_allowed=faults,
        derived_artifacts=count,
        artifacts=derived,
        artifacts_after_revocation=flagged,
        results_claimed_by_others=claimed,
    )


def _at(chain: ChainRef) -> str:
    return f"block {chain.block}, tx {chain.tx_hash[:10]}…, log {chain.log_index}"


def render_report(report: AgreementReport) -> RenderableType:
    """The report as rich tables (the CLI prints this; `--json` prints the model)."""
    summary = Table(title=f"Agreement {report.agreement_id}", show_header=False, expand=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("version", f"{report.version}" + (
        f" (amends {report.previous_id})" if report.previous_id else ""))  # fmt: skip
    if report.amended_by:
        summary.add_row("amended by", ", ".join(report.amended_by))
    summary.add_row("status", report.status)
    summary.add_row("scenario / max tier", f"{report.scenario} / {report.max_tier}")
    summary.add_row("holder → requester", f"{report.holder} → {report.requester}")
    summary.add_row("window", f"{iso_time(report.valid_from)} … {iso_time(report.valid_until)}")
    summary.add_row(
        "accesses", f"{report.accesses} ({report.granted} granted, {report.denied} denied)"
    )
    summary.add_row(
        "quota", f"{report.granted} / {report.quota} used ({100 * report.quota_used:.2f} %)"
    )
    summary.add_row(
        "results released",
        f"{report.releases} ({report.released_bytes} bytes)"
        + "".join(f"; {k}: {v}" for k, v in report.releases_by_kind.items()),
    )
    summary.add_row("consent policy", report.consent_policy)
    if report.consent_policy != ConsentPolicy.NONE.name or report.cohorts_by_status:
        summary.add_row(
            "consent-filtered accesses",
            f"{report.consent_filtered_accesses} ({report.cohort_subjects} subjects admitted; "
            + ", ".join(f"{k}: {v}" for k, v in report.cohorts_by_status.items())
            + ")",
        )
        summary.add_row(
            "patients",
            f"{report.denied_consent_missing} denied for a missing consent, "
            f"{report.denied_authorization_invalid} for an invalid authorization code, "
            f"{report.authorization_redemptions} code(s) redeemed",
        )
    if report.break_glass_review_hours or report.break_glass:
        overdue = [c for c in report.break_glass if c.state == "overdue"]
        summary.add_row(
            "break-glass",
            f"allowed, review within {report.break_glass_review_hours} h; "
            + (", ".join(f"{k}: {v}" for k, v in report.break_glass_by_state.items())
               or "no access")
            + ("".join(f"; ⚑ OVERDUE {c.access_id}" for c in overdue)),
        )  # fmt: skip
    if report.releases_not_allowed:
        summary.add_row(
            "⚑ releases not allowed",
            ", ".join(f"{f.result_hash[:10]}… ({f.check})" for f in report.releases_not_allowed),
        )
    summary.add_row(
        "artifacts derived",
        f"{report.derived_artifacts}"
        + (f" (⚑ {len(report.artifacts_after_revocation)} registered after the revocation)"
           if report.artifacts_after_revocation else ""),
    )  # fmt: skip
    if report.results_claimed_by_others:
        summary.add_row(
            "⚑ results claimed by others",
            ", ".join(f"{c.artifact_id[:10]}… by {c.owner}"
                      for c in report.results_claimed_by_others),
        )  # fmt: skip
    summary.add_row("proposed at", _at(report.proposed))
    parts: list[RenderableType] = [summary]
    if report.artifacts:
        artifacts = Table(title="Artifacts derived from its results")
        artifacts.add_column("artifact")
        artifacts.add_column("kind")
        artifacts.add_column("owner")
        artifacts.add_column("how")
        artifacts.add_column("chain reference")
        for a in report.artifacts:
            how = "directly" if a.direct else "through artifacts"
            if a.after_revocation:
                how += " ⚑ after revocation"
            artifacts.add_row(a.artifact_id, a.kind, a.owner, how, _at(a.chain))
        parts.append(artifacts)
    if report.break_glass:
        glass = Table(title="Break-glass accesses (no patient code; reviewed by the holder)")
        for column in ("access", "reason", "review due", "review", "chain reference"):
            glass.add_column(column)
        for c in report.break_glass:
            review = {"overdue": "⚑ OVERDUE, not reviewed", "unreviewed": "not reviewed yet"}.get(
                c.state, f"{c.state.upper()} by {c.reviewer}" + (" (late)" if c.late else "")
            )
            glass.add_row(c.access_id, c.reason, iso_time(c.review_due), review,
                          f"block {c.block}, tx {c.tx_hash[:10]}…")  # fmt: skip
        parts.append(glass)
    if report.denials_by_reason:
        denials = Table(title="Denials by reason")
        denials.add_column("reason")
        denials.add_column("count", justify="right")
        for reason, count in report.denials_by_reason.items():
            denials.add_row(reason, str(count))
        parts.append(denials)
    events = Table(title="Signatures and lifecycle")
    events.add_column("what")
    events.add_column("who")
    events.add_column("chain reference")
    for s in report.signatures:
        events.add_row(f"signed (party {s.party})", s.signer, _at(s.chain))
    for h in report.status_history:
        events.add_row(f"{h.event} → {h.status}", h.by or "", _at(h.chain))
    parts.append(events)
    return Group(*parts)
