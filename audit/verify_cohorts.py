"""`verify`'s patient checks: cohorts against their roots, consents behind them, redemptions.

Run by `audit.verify.verify_store` beside its other passes; every discrepancy is a finding with
a stable check code:

- **Cohort rows against the chain's roots.** A verified cohort's members must rebuild exactly
  the tree whose head (`cohortRoot`, `cohortSize`) the access recorded on chain: every leaf
  there (`cohort_members_missing`), each stored proof the audit path of its leaf
  (`cohort_proof_invalid`, naming the row). The chain's side, `access_event`, is itself
  compared with the logs by the chain pass, so neither side can be edited unnoticed: a member
  inserted, deleted, moved or re-pointed at another access breaks the rebuild. A cohort row
  without its access, or naming another, is `cohort_not_on_chain`; a consented-members count
  that the stored rows do not give is `cohort_count_differs`.
- **Leaves missing or wrong.** A granted access under a consent-requiring agreement whose
  leaves no cohort store gave is `cohort_leaves_unavailable` (the regulator cannot see who was
  admitted); leaves that hash to another root are `cohort_root_mismatch` under any agreement.
- **Consent behind every admitted subject.** Under a COHORT_CONSENT agreement every subject
  of a verified cohort must have had a consent covering the access (`audit.consents`: the
  agreement's holder and scenario, a scope naming the study — its agreement id, requester and
  disease term — when the consent is specific, recorded before, inside its window, not
  withdrawn more than `consent_lag` seconds before the access's block): else
  `subject_without_consent`, which names a specific consent that did not cover the study.
- **Cohorts a hospital's store holds and the audit store lists none of.** Given the cohort
  stores (`DUL_AUDIT_COHORT_SOURCES`), every granted access with a cohort whose cohort is not
  verified in the audit store is asked of them: leaves there that rebuild the chain's tree head
  are `cohort_rows_missing` (rows deleted, or a status edited: the patients' reports would not
  show the access), under any agreement — one that needs no consent included, where a missing
  cohort is otherwise no finding.
- **Redemptions.** A granted PATIENT_AUTHORIZATION access must have redeemed its code
  (`authorization_not_redeemed`); a redemption must belong to a granted access with that code
  (`redemption_without_access`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, text

from audit.cohorts import (
    ZERO32,
    CohortAccess,
    CohortSource,
    CohortStatus,
    audit_paths,
    resolve,
    split_proof,
)
from audit.consents import (
    CONSENT_FACTS_SQL,
    ConsentFacts,
    StudyFacts,
    consent_facts,
    covering,
    in_scope,
)
from audit.store import CONSENTED_COUNT_SQL
from dul.cohort import CohortTree, verify_inclusion
from dul.consent_terms import disease_term
from dul.domain import ConsentPolicy, Decision, Scenario, slug_of


class Findings(Protocol):
    checked: Counter[str]

    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


def _pos(block: int, tx: int, log_index: int) -> str:
    return f"{block}/{tx}/{log_index}"


_COHORTS = text(
    "SELECT c.block_number, c.tx_index, c.log_index, c.access_id, c.status, c.source, c.leaves, "
    "c.found_root, c.consented, a.access_id AS a_access, a.cohort_root, a.cohort_size, a.decision, "
    "g.consent_policy, g.holder_org, g.scenario, g.agreement_id, g.requester_org, "
    "g.disease_code, b.timestamp "
    "FROM cohort c "
    "LEFT JOIN access_event a ON a.block_number = c.block_number "
    "AND a.tx_index = c.tx_index AND a.log_index = c.log_index "
    "LEFT JOIN agreement g ON g.agreement_id = a.agreement_id "
    "LEFT JOIN block b ON b.number = c.block_number "
    "ORDER BY c.block_number, c.tx_index, c.log_index"
)
_UNRESOLVED = text(
    "SELECT a.block_number, a.tx_index, a.log_index, a.access_id, g.consent_policy "
    "FROM access_event a JOIN agreement g ON g.agreement_id = a.agreement_id "
    "LEFT JOIN cohort c ON c.block_number = a.block_number "
    "AND c.tx_index = a.tx_index AND c.log_index = a.log_index "
    "WHERE g.consent_policy <> :none AND a.decision = :granted AND a.cohort_size > 0 "
    "AND c.access_id IS NULL ORDER BY a.block_number, a.tx_index, a.log_index"
)
_MEMBERS = text(
    "SELECT leaf_index, subject_ref, access_id, proof FROM cohort_member "
    "WHERE block_number = :b AND tx_index = :t AND log_index = :i ORDER BY leaf_index"
)
_NOT_VERIFIED = text(
    "SELECT a.block_number, a.tx_index, a.log_index, a.access_id, a.cohort_root, a.cohort_size, "
    "a.authorization_ref FROM access_event a "
    "LEFT JOIN cohort c ON c.block_number = a.block_number "
    "AND c.tx_index = a.tx_index AND c.log_index = a.log_index "
    "WHERE a.decision = :granted AND a.cohort_size > 0 AND a.cohort_root <> :zero "
    "AND (c.access_id IS NULL OR c.status <> :verified) "
    "ORDER BY a.block_number, a.tx_index, a.log_index"
)
_ORPHANS = text(
    "SELECT m.block_number, m.tx_index, m.log_index, count(*) AS n FROM cohort_member m "
    "LEFT JOIN cohort c ON c.block_number = m.block_number AND c.tx_index = m.tx_index "
    "AND c.log_index = m.log_index AND c.status = :verified "
    "WHERE c.access_id IS NULL GROUP BY m.block_number, m.tx_index, m.log_index"
)
_NOT_REDEEMED = text(
    "SELECT a.block_number, a.tx_index, a.log_index, a.access_id, a.authorization_ref, "
    "r.code_hash FROM access_event a JOIN agreement g ON g.agreement_id = a.agreement_id "
    "LEFT JOIN authorization_redemption r ON r.access_id = a.access_id "
    "LEFT JOIN break_glass_access x ON x.access_id = a.access_id "
    "WHERE g.consent_policy = :authorization AND a.decision = :granted AND x.access_id IS NULL "
    "AND (r.code_hash IS NULL OR r.code_hash <> a.authorization_ref)"
)
_STRAY_REDEMPTIONS = text(
    "SELECT r.block_number, r.tx_index, r.log_index, r.access_id, r.code_hash, a.decision, "
    "a.authorization_ref FROM authorization_redemption r "
    "LEFT JOIN access_event a ON a.access_id = r.access_id "
    "WHERE a.access_id IS NULL OR a.decision <> :granted OR a.authorization_ref <> r.code_hash"
)
_CONSENTS_OF = text(
    CONSENT_FACTS_SQL + " WHERE c.holder_org = :h AND c.subject IN :subjects "
    "ORDER BY c.block_number, c.tx_index, c.log_index"
).bindparams(bindparam("subjects", expanding=True))
_CONSENT_BATCH = 500
_CONSENTED = text(CONSENTED_COUNT_SQL)


def _named(enum: Any, value: Any) -> str:
    """An enum member's name, or the raw value the chain recorded when it names none."""
    try:
        return str(enum(int(value)).name)
    except ValueError:
        return str(value)


def check_cohort_sources(
    conn: Connection, sources: Sequence[CohortSource], out: Findings, *, batch: int = 500
) -> None:
    """`cohort_rows_missing`: accesses whose cohort the stores hold, rebuilding the chain's
    tree head, that the audit store does not list as verified (in batches of `batch`)."""
    rows = conn.execute(
        _NOT_VERIFIED,
        {"granted": int(Decision.GRANTED), "zero": ZERO32,
         "verified": CohortStatus.VERIFIED.value},
    ).all()  # fmt: skip
    for start in range(0, len(rows), batch):
        accesses = [
            CohortAccess(int(r[0]), int(r[1]), int(r[2]), str(r[3]), str(r[4]), int(r[5]),
                         str(r[6]))
            for r in rows[start : start + batch]
        ]  # fmt: skip
        found = resolve(sources, accesses)
        for access in accesses:
            out.checked["cohorts_asked_of_stores"] += 1
            if found.status(access.position) != CohortStatus.VERIFIED.value:
                continue
            where = _pos(*access.position)
            out.add("cohort_rows_missing", f"access {access.access_id}: a cohort store holds "
                    f"its {access.size} subjects, whose tree is the chain's, and the audit store "
                    "lists none (its patients' reports would not show it)", table="cohort",
                    position=where, key=access.access_id)  # fmt: skip


def check_patients(conn: Connection, out: Findings, *, consent_lag: float) -> None:
    """Every check of the module docstring, streamed cohort by cohort."""
    for row in conn.execute(_COHORTS).mappings():
        _check_cohort(conn, row, out, consent_lag)
    for row in conn.execute(
        _UNRESOLVED,
        {"none": int(ConsentPolicy.NONE), "granted": int(Decision.GRANTED)},
    ).mappings():
        out.checked["cohorts"] += 1
        where = _pos(row["block_number"], row["tx_index"], row["log_index"])
        out.add("cohort_leaves_unavailable", f"access {row['access_id']} under a "
                f"{_named(ConsentPolicy, row['consent_policy'])} agreement: no cohort store gave "
                "its subjects (is DUL_AUDIT_COHORT_SOURCES set to the hospital's gateway "
                "store?)", table="cohort", position=where, key=row["access_id"])  # fmt: skip
    for row in conn.execute(_ORPHANS, {"verified": CohortStatus.VERIFIED.value}).mappings():
        where = _pos(row["block_number"], row["tx_index"], row["log_index"])
        out.add("cohort_not_on_chain", f"{row['n']} cohort member row(s) at {where} belong to no "
                "verified cohort", table="cohort_member", position=where)  # fmt: skip
    _check_redemptions(conn, out)


def _check_cohort(conn: Connection, row: Any, out: Findings, lag: float) -> None:
    position = (int(row["block_number"]), int(row["tx_index"]), int(row["log_index"]))
    where = _pos(*position)
    access_id = str(row["access_id"])
    out.checked["cohorts"] += 1
    if row["a_access"] is None or row["a_access"] != access_id:
        out.add("cohort_not_on_chain", f"cohort row of access {access_id} at {where}: the chain "
                "recorded " + ("no access there" if row["a_access"] is None
                               else f"access {row['a_access']} there"),
                table="cohort", position=where, key=access_id)  # fmt: skip
        return
    status = str(row["status"])
    policy = row["consent_policy"]
    if status == CohortStatus.ROOT_MISMATCH.value:
        out.add("cohort_root_mismatch", f"access {access_id}: the {row['leaves']} subjects "
                f"{row['source']} holds hash to {row['found_root']}, the chain recorded "
                f"{row['cohort_root']} of {row['cohort_size']}", table="cohort", position=where,
                key=access_id, details={"source": row["source"]})  # fmt: skip
        return
    if status != CohortStatus.VERIFIED.value:
        if policy is not None and int(policy) != ConsentPolicy.NONE:
            out.add("cohort_leaves_unavailable", f"access {access_id} under a "
                    f"{_named(ConsentPolicy, policy)} agreement: no cohort store gave its "
                    "subjects", table="cohort", position=where, key=access_id)  # fmt: skip
        else:
            out.checked["cohorts_unavailable_without_consent_policy"] += 1
        return
    members = conn.execute(_MEMBERS, {"b": position[0], "t": position[1], "i": position[2]}).all()
    subjects = _check_members(members, row, where, access_id, out)
    if subjects is None:
        return
    consented = conn.execute(
        _CONSENTED, {"b": position[0], "t": position[1], "i": position[2]}
    ).scalar_one()
    if row["consented"] is None or int(row["consented"]) != int(consented):
        out.add("cohort_count_differs", f"access {access_id}: the store counts "
                f"{row['consented']} consented members, its rows give {consented}",
                table="cohort", position=where, key=access_id)  # fmt: skip
    if policy is None or int(policy) != ConsentPolicy.COHORT_CONSENT:
        return
    _check_consents(conn, subjects, row, position, access_id, lag, out)


def _check_members(
    members: Sequence[Any], row: Any, where: str, access_id: str, out: Findings
) -> list[str] | None:
    """The cohort's subjects when its member rows are exactly the tree on chain, else None
    (after naming what is wrong)."""
    root = bytes.fromhex(str(row["cohort_root"])[2:])
    size = int(row["cohort_size"])
    out.checked["cohort_members"] += len(members)
    subjects = [bytes.fromhex(str(m[1])[2:]) for m in members]
    tree = CohortTree.build(subjects) if subjects else None
    if tree is None or tree.root != root or tree.size != size or len(members) != size:
        bad = 0
        for leaf_index, subject, member_access, proof in members:
            ok = member_access == access_id and verify_inclusion(
                root, size, int(leaf_index), bytes.fromhex(str(subject)[2:]),
                [bytes.fromhex(p[2:]) for p in split_proof(bytes(proof))],
            )  # fmt: skip
            if not ok:
                bad += 1
                out.add("cohort_proof_invalid", f"subject {subject} as leaf {leaf_index} of the "
                        f"cohort of access {access_id}: its proof does not reach the root on "
                        "chain", table="cohort_member", position=where,
                        key=f"{access_id}/{leaf_index}")  # fmt: skip
        if not bad or len(members) != size:
            out.add("cohort_members_missing", f"access {access_id}: the store holds "
                    f"{len(members)} member row(s) of a {size}-subject cohort, which do not "
                    "rebuild the root on chain", table="cohort_member", position=where,
                    key=access_id, details={"stored": len(members), "size": size})  # fmt: skip
        return None
    paths = audit_paths(tree)
    for leaf_index, subject, member_access, proof in members:
        index = int(leaf_index)
        if (
            member_access != access_id
            or index >= size
            or "0x" + tree.subjects[index].hex() != subject
            or bytes(proof) != paths[index]
        ):
            out.add("cohort_proof_invalid", f"subject {subject} as leaf {leaf_index} of the "
                    f"cohort of access {access_id}: the stored row is not the tree's",
                    table="cohort_member", position=where,
                    key=f"{access_id}/{leaf_index}")  # fmt: skip
    return ["0x" + s.hex() for s in tree.subjects]


def _batches(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for at in range(0, len(items), size):
        yield list(items[at : at + size])


def _check_consents(
    conn: Connection,
    subjects: Sequence[str],
    row: Any,
    position: tuple[int, int, int],
    access_id: str,
    lag: float,
    out: Findings,
) -> None:
    holder, scenario = str(row["holder_org"]), int(row["scenario"])
    study = StudyFacts(
        str(row["agreement_id"]), str(row["requester_org"]), str(row["disease_code"])
    )
    timestamp = None if row["timestamp"] is None else int(row["timestamp"])
    where = _pos(*position)
    for batch in _batches(subjects, _CONSENT_BATCH):
        consents: dict[str, list[ConsentFacts]] = {}
        for consent in conn.execute(_CONSENTS_OF, {"h": holder, "subjects": batch}).mappings():
            subject, facts = consent_facts(consent)
            consents.setdefault(subject, []).append(facts)
        for subject in batch:
            out.checked["subject_consents"] += 1
            mine = consents.get(subject, [])
            if covering(mine, holder=holder, scenario=scenario, position=position,
                        timestamp=timestamp, lag=lag, study=study) is not None:  # fmt: skip
                continue
            out.add("subject_without_consent", f"access {access_id} admitted subject {subject}, "
                    + _why_not(mine, scenario, position, timestamp, lag, study),
                    table="cohort_member", position=where, key=f"{access_id}/{subject}",
                    details={"subject": subject,
                             "consents": [c.consent_id for c in mine]})  # fmt: skip


def _why_not(
    consents: Sequence[ConsentFacts],
    scenario: int,
    position: tuple[int, int, int],
    timestamp: int | None,
    lag: float,
    study: StudyFacts,
) -> str:
    try:
        name = Scenario(scenario).name
    except ValueError:
        name = str(scenario)
    permitting = [c for c in consents if c.scenarios >> scenario & 1]
    relevant = [c for c in permitting if in_scope(c, study)]
    if not consents:
        return "who has no consent at the holder"
    if not permitting:
        return f"whose consents do not permit {name}"
    if not relevant:
        named = ", ".join(c.consent_id for c in permitting)
        return (f"whose consent(s) for {name} ({named}) did not cover the study: "
                f"{_scope_miss(permitting[0], study)}")  # fmt: skip
    before = [c for c in relevant if c.recorded_at < position]
    if not before:
        return f"whose consent for {name} was recorded only after the access"
    for c in before:
        if c.withdrawn_at is not None and c.withdrawn_at < position:
            when = f" at {c.withdrawn_time}" if c.withdrawn_time is not None else ""
            return (f"whose consent {c.consent_id} for {name} was withdrawn{when} (block "
                    f"{c.withdrawn_at[0]}), before the access at {timestamp} (block "
                    f"{position[0]}; allowed lag {lag:g} s)")  # fmt: skip
    return f"outside the validity of its consent for {name} (access at {timestamp})"


def _scope_miss(consent: ConsentFacts, study: StudyFacts) -> str:
    """What of a specific consent's scope the study is outside of."""
    if consent.studies and study.agreement_id not in consent.studies:
        return f"it names other studies, not agreement {study.agreement_id}"
    if consent.requesters and study.requester not in consent.requesters:
        return f"it names other requesting organizations, not {_org(study.requester)}"
    return (f"it is limited to disease {_term(consent.disease_code)}, the agreement "
            f"carries {_term(study.disease_code) or 'no disease term'}")  # fmt: skip


def _term(code: str) -> str | None:
    return disease_term(bytes.fromhex(code[2:]))


def _org(org: str) -> str:
    return slug_of(bytes.fromhex(org[2:]))


def _check_redemptions(conn: Connection, out: Findings) -> None:
    granted = int(Decision.GRANTED)
    for row in conn.execute(
        _NOT_REDEEMED,
        {"authorization": int(ConsentPolicy.PATIENT_AUTHORIZATION), "granted": granted},
    ).mappings():
        where = _pos(row["block_number"], row["tx_index"], row["log_index"])
        out.add("authorization_not_redeemed", f"access {row['access_id']} granted under a "
                f"PATIENT_AUTHORIZATION agreement did not redeem its code "
                f"{row['authorization_ref']}", table="access_event", position=where,
                key=row["access_id"])  # fmt: skip
    for row in conn.execute(_STRAY_REDEMPTIONS, {"granted": granted}).mappings():
        where = _pos(row["block_number"], row["tx_index"], row["log_index"])
        if row["decision"] is None:
            why = "no such access"
        elif int(row["decision"]) != granted:
            why = "the access was not granted"
        else:
            why = f"the access names code {row['authorization_ref']}"
        out.add("redemption_without_access", f"code {row['code_hash']} redeemed by access "
                f"{row['access_id']}: {why}", table="authorization_redemption", position=where,
                key=row["access_id"])  # fmt: skip
    out.checked["redemptions"] += int(
        conn.execute(text("SELECT count(*) FROM authorization_redemption")).scalar_one()
    )
