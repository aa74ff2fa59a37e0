"""Artifacts (ArtifactRegistry) in `verify` and in the compliance report.

At registration the registry checks that every release an artifact names was released to the
registrant's organization and that every parent artifact is registered; it does not stop an
artifact made from the results of an agreement revoked since (the results had already left, the
registry only records what was made of them). So a regulator needs the audit to say so. On the
store, in chain order:

- `artifact_release_unknown` — a release an artifact names that the store does not hold (the
  same access, agreement and result hash): the registry would have refused it, so the store was
  edited.
- `artifact_parent_unknown` — a parent artifact not registered before the artifact.
- `artifact_from_disallowed_release` — an artifact derived, directly or through its parent
  artifacts, from a release that no granted access allowed (the release's own findings are
  `release_without_grant` / `release_not_allowed`).
- `artifact_from_revoked_agreement` — an artifact derived, directly or through its parent
  artifacts, from the results of an agreement whose revocation lies before the artifact's
  registration in chain order. Artifacts registered before the revocation are not flagged; what
  is derived from them afterwards is.
- `artifact_claims_foreign_result` — an artifact whose id is the result hash of a release whose
  recipient (the agreement's requester organization) is not the artifact's owner, and which does
  not name that release itself. Result hashes are public (ResultReleased) and the first
  registration of an id wins, so another organization's requester can take the id of a result
  it never received (naming some registered parent instead) and keep its recipient from ever
  registering it; the registry allows it. An artifact that names the release is its recipient's
  (the registry checked that at registration) and is not flagged. A release whose agreement the
  store lacks has no known recipient and is left out (the chain comparison names the missing
  row). A result hash released to several organizations is flagged once per release that went
  to another organization than the owner.

A release is allowed when its access is a GRANTED access of the same agreement whose tier and
operation may release that kind (`AccessRules.releasable` of the contracts, `RELEASABLE`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, text

from dul.domain import ArtifactKind, Decision, Operation, ReleaseKind, Tier

RELEASABLE: dict[int, Callable[[int, int], bool]] = {
    ReleaseKind.AGGREGATE_RESULT: lambda tier, op: op != Operation.TRAIN,
    ReleaseKind.MODEL_UPDATE: lambda tier, op: op == Operation.TRAIN,
    ReleaseKind.DEIDENTIFIED_EXTRACT: lambda tier, op: (
        op == Operation.EXPORT_RESULT and tier >= Tier.DEIDENTIFIED
    ),
    ReleaseKind.PSEUDONYMIZED_EXTRACT: lambda tier, op: (
        op == Operation.EXPORT_RESULT and tier >= Tier.PSEUDONYMIZED
    ),
    ReleaseKind.IDENTIFIED_EXTRACT: lambda tier, op: (
        op == Operation.EXPORT_RESULT and tier == Tier.IDENTIFIED
    ),
}
"""`AccessRules.releasable` of the contracts."""

Position = tuple[int, int, int]


class Findings(Protocol):
    checked: Counter[str]

    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


def _pos(position: Position) -> str:
    return "/".join(str(p) for p in position)


def release_fault(
    release_agreement: str,
    kind: int,
    access: tuple[str, int, int, int] | None,
) -> tuple[str, str] | None:
    """(check, why) when no granted access allowed this release, else None. `access` is the
    released access's (agreement, decision, tier, operation), None when the store has none."""
    if access is None:
        return "release_without_grant", "no such access"
    agreement, decision, tier, operation = access
    if decision != Decision.GRANTED:
        return "release_without_grant", "the access was not granted"
    if agreement != release_agreement:
        return "release_without_grant", "the access is of another agreement"
    allowed = RELEASABLE.get(int(kind))
    if allowed is None or not allowed(tier, operation):
        return "release_not_allowed", (
            f"a release of kind {kind} may not leave an access at tier {tier} for operation "
            f"{operation}"
        )
    return None


RELEASES_WITH_ACCESS_SQL = (
    "SELECT r.block_number, r.tx_index, r.log_index, r.tx_hash, r.access_id, r.agreement_id, "
    "r.result_hash, r.kind, r.size, a.agreement_id AS a_agreement, a.decision AS a_decision, "
    "a.tier AS a_tier, a.operation AS a_operation FROM result_release r "
    "LEFT JOIN access_event a ON a.access_id = r.access_id AND a.agreement_id = r.agreement_id"
)


def release_row_fault(row: Any) -> tuple[str, str] | None:
    """`release_fault` of a row of `RELEASES_WITH_ACCESS_SQL`."""
    access = (
        None
        if row["a_decision"] is None
        else (
            str(row["a_agreement"]),
            int(row["a_decision"]),
            int(row["a_tier"]),
            int(row["a_operation"]),
        )
    )
    return release_fault(str(row["agreement_id"]), int(row["kind"]), access)


def revocations(conn: Connection) -> dict[str, Position]:
    """Agreement -> the chain position of its revocation."""
    out: dict[str, Position] = {}
    for agreement, b, t, i in conn.execute(
        text(
            "SELECT agreement_id, block_number, tx_index, log_index FROM agreement_status_change "
            "WHERE event = 'AgreementRevoked' ORDER BY block_number, tx_index, log_index"
        )
    ):
        out.setdefault(str(agreement), (int(b), int(t), int(i)))
    return out


def revocations_of(conn: Connection, agreement: str) -> Position | None:
    """The chain position of `agreement`'s revocation, if it was revoked."""
    row = conn.execute(
        text(
            "SELECT block_number, tx_index, log_index FROM agreement_status_change "
            "WHERE agreement_id = :k AND event = 'AgreementRevoked' "
            "ORDER BY block_number, tx_index, log_index LIMIT 1"
        ),
        {"k": agreement},
    ).first()
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]))


@dataclass
class _Lineage:
    agreements: dict[str, bool]
    """Agreements whose results it was derived from -> whether directly (a release it names)."""
    disallowed: str | None
    """A release no granted access allowed, found in its derivation (key text)."""


FOREIGN_CLAIMS_SQL = (
    "SELECT a.artifact_id, a.owner_org, a.kind, a.block_number, a.tx_index, a.log_index, "
    "a.tx_hash, r.access_id AS claimed_access, r.agreement_id AS claimed_agreement, "
    "g.requester_org AS recipient_org, r.block_number AS released_block, "
    "r.tx_index AS released_tx, r.log_index AS released_log "
    "FROM artifact a JOIN result_release r ON r.result_hash = a.artifact_id "
    "JOIN agreement g ON g.agreement_id = r.agreement_id "
    "WHERE g.requester_org <> a.owner_org AND NOT EXISTS (SELECT 1 FROM artifact_release_parent p "
    "WHERE p.artifact_id = a.artifact_id AND p.access_id = r.access_id "
    "AND p.agreement_id = r.agreement_id AND p.result_hash = r.result_hash)"
)
"""Every (artifact, release) where the artifact's id is the release's result hash, the release
went to another organization than the artifact's owner, and the artifact does not name it
(`artifact_claims_foreign_result`). Ends in its WHERE clause: a caller may add `AND ...`."""


def _foreign_claims(conn: Connection) -> dict[str, list[Any]]:
    """Artifact -> its rows of `FOREIGN_CLAIMS_SQL`, in release chain order."""
    claims: dict[str, list[Any]] = {}
    for row in conn.execute(
        text(FOREIGN_CLAIMS_SQL + " ORDER BY r.block_number, r.tx_index, r.log_index")
    ).mappings():
        claims.setdefault(str(row["artifact_id"]), []).append(row)
    return claims


def check_artifacts(conn: Connection, out: Findings) -> None:
    """The checks of the module docstring, over every artifact in chain order."""
    releases: dict[tuple[str, str, str], tuple[str, str] | None] = {}
    for row in conn.execute(text(RELEASES_WITH_ACCESS_SQL)).mappings():
        key = (str(row["access_id"]), str(row["agreement_id"]), str(row["result_hash"]))
        releases[key] = release_row_fault(row)
    named: dict[str, list[tuple[str, str, str]]] = {}
    for artifact, access, agreement, result in conn.execute(
        text(
            "SELECT artifact_id, access_id, agreement_id, result_hash FROM artifact_release_parent"
        )
    ):
        named.setdefault(str(artifact), []).append((str(access), str(agreement), str(result)))
    parents: dict[str, list[str]] = {}
    for artifact, parent in conn.execute(
        text("SELECT artifact_id, parent_id FROM artifact_parent ORDER BY parent_id")
    ):
        parents.setdefault(str(artifact), []).append(str(parent))
    revoked = revocations(conn)
    claims = _foreign_claims(conn)
    lineages: dict[str, _Lineage] = {}
    for artifact_id, kind, b, t, i in conn.execute(
        text(
            "SELECT artifact_id, kind, block_number, tx_index, log_index FROM artifact "
            "ORDER BY block_number, tx_index, log_index"
        )
    ):
        artifact = str(artifact_id)
        position = (int(b), int(t), int(i))
        where = {"table": "artifact", "position": _pos(position), "key": artifact}
        out.checked["artifacts"] += 1
        lineage = _Lineage({}, None)
        for access, agreement, result in sorted(named.get(artifact, ())):
            lineage.agreements[agreement] = True
            if (access, agreement, result) not in releases:
                out.add("artifact_release_unknown", f"artifact {artifact} names result {result} "
                        f"of access {access} under agreement {agreement}, which the store does "
                        "not hold as released", details={"access_id": access,
                        "agreement_id": agreement, "result_hash": result}, **where)  # fmt: skip
            elif releases[(access, agreement, result)] is not None and lineage.disallowed is None:
                lineage.disallowed = f"result {result} of access {access}@{agreement}"
        for parent in parents.get(artifact, ()):
            inherited = lineages.get(parent)
            if inherited is None:
                out.add("artifact_parent_unknown", f"artifact {artifact} is derived from "
                        f"{parent}, which was not registered before it",
                        details={"parent": parent}, **where)  # fmt: skip
                continue
            for agreement in inherited.agreements:
                lineage.agreements.setdefault(agreement, False)
            if lineage.disallowed is None and inherited.disallowed is not None:
                lineage.disallowed = inherited.disallowed
        lineages[artifact] = lineage
        if lineage.disallowed is not None:
            out.add("artifact_from_disallowed_release", f"artifact {artifact} is derived from "
                    f"{lineage.disallowed}, which no granted access allowed to leave",
                    details={"release": lineage.disallowed}, **where)  # fmt: skip
        for agreement, direct in sorted(lineage.agreements.items()):
            at = revoked.get(agreement)
            if at is not None and at < position:
                out.add("artifact_from_revoked_agreement", f"{_kind(kind)} {artifact} was "
                        f"registered at {_pos(position)}, after agreement {agreement} was "
                        f"revoked at {_pos(at)}, and is derived from its results"
                        + ("" if direct else " through earlier artifacts"),
                        details={"agreement_id": agreement, "revoked_at": _pos(at),
                                 "direct": direct}, **where)  # fmt: skip
        for claim in claims.get(artifact, ()):
            owner, recipient = str(claim["owner_org"]), str(claim["recipient_org"])
            access, agreement = str(claim["claimed_access"]), str(claim["claimed_agreement"])
            released = (
                int(claim["released_block"]), int(claim["released_tx"]), int(claim["released_log"])
            )  # fmt: skip
            out.add("artifact_claims_foreign_result", f"{_kind(kind)} {artifact} of organization "
                    f"{owner} is registered under the result hash released from access {access} "
                    f"under agreement {agreement} to organization {recipient}, and does not "
                    "derive from that release", details={"owner": owner, "access_id": access,
                    "agreement_id": agreement, "result_hash": artifact, "recipient": recipient,
                    "released_at": _pos(released)}, **where)  # fmt: skip


def _kind(kind: Any) -> str:
    try:
        return ArtifactKind(int(kind)).name.lower().replace("_", " ")
    except ValueError:
        return "artifact"


DERIVED_FROM_AGREEMENT_SQL = (
    "WITH RECURSIVE derived(artifact_id) AS ("
    "SELECT artifact_id FROM artifact_release_parent WHERE agreement_id = :k "
    "UNION SELECT p.artifact_id FROM artifact_parent p "
    "JOIN derived d ON p.parent_id = d.artifact_id) "
    "SELECT a.*, EXISTS (SELECT 1 FROM artifact_release_parent r "
    "WHERE r.artifact_id = a.artifact_id AND r.agreement_id = :k) AS direct "
    "FROM artifact a JOIN derived d ON d.artifact_id = a.artifact_id "
    "ORDER BY a.block_number, a.tx_index, a.log_index"
)
"""Every artifact derived from agreement :k's releases, directly or through parent artifacts
(`UNION` keeps the walk finite: the derivations form a DAG and each artifact is visited once)."""
