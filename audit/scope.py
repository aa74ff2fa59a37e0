"""Who sees what in the audit store (SPEC §1, fixed): a regulator everything; an organization
what it is a party to; a patient only their own transparency report.

An organization is a party to an agreement it holds or requests, and so to its signatures, its
accesses and their cohorts, and the results they released; to a dataset it holds or that one of
its agreements scopes; to an artifact it owns or that derives (through any parents) from a
result of one of its agreements; to a consent it holds, an authorization code it holds or was
granted; and to a subject reference that is its own patient (a consent or code it holds, or a
cohort of an agreement it holds that admitted it). Organizations and member accounts are the
data space's directory (every member reads them on chain) and appear in any graph; a query may
start at the caller's own organization only.

Checks are indexed look-ups on the request's connection, cached per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import Connection

from audit.provenance import ForbiddenError, NotFoundError, _text


class CallerRole(StrEnum):
    REGULATOR = "regulator"
    ORGANIZATION = "organization"
    PATIENT = "patient"


@dataclass(frozen=True)
class Caller:
    """Who is asking: a role, the organization (0x id) of an organization's caller, the subject
    reference (0x) of a patient's. `name` (a token name, an OIDC `sub`, the signing steward) is
    for the log only."""

    role: CallerRole
    via: str
    name: str
    org: str | None = None
    subject: str | None = None


_PARTY = "(g.holder_org = :o OR g.requester_org = :o)"

_SQL = {  # PARTY: one of the agreement `g`'s parties is the caller's organization
    "agreement": "SELECT 1 FROM agreement g WHERE g.agreement_id = :k AND PARTY",
    # an access is its request id and agreement (`access_key`): another agreement's access
    # under the same request id is another organization's, maybe
    "access": "SELECT 1 FROM access_event a JOIN agreement g ON g.agreement_id = a.agreement_id "
    "WHERE a.access_id = :k AND a.agreement_id = :g AND PARTY",
    "dataset": "SELECT 1 WHERE EXISTS (SELECT 1 FROM dataset WHERE dataset_id = :k AND "
    "holder_org = :o) OR EXISTS (SELECT 1 FROM agreement_dataset s JOIN agreement g ON "
    "g.agreement_id = s.agreement_id WHERE s.dataset_id = :k AND PARTY)",
    "signature": "SELECT 1 FROM agreement_signature s JOIN agreement g ON g.agreement_id = "
    "s.agreement_id WHERE s.block_number = :b AND s.tx_index = :t AND s.log_index = :i AND "
    "PARTY",
    # A released result or registered artifact, or anything made from one: up through parents.
    "artifact": "WITH RECURSIVE up_(id) AS (SELECT CAST(:k AS VARCHAR) UNION SELECT p.parent_id "
    "FROM artifact_parent p JOIN up_ ON p.artifact_id = up_.id) "
    "SELECT 1 FROM up_ WHERE EXISTS (SELECT 1 FROM artifact x WHERE x.artifact_id = up_.id AND "
    "x.owner_org = :o) OR EXISTS (SELECT 1 FROM artifact_release_parent r JOIN agreement g ON "
    "g.agreement_id = r.agreement_id WHERE r.artifact_id = up_.id AND PARTY) OR EXISTS ("
    "SELECT 1 FROM result_release r JOIN agreement g ON g.agreement_id = r.agreement_id WHERE "
    "r.result_hash = up_.id AND PARTY) LIMIT 1",
    "consent": "SELECT 1 FROM consent WHERE consent_id = :k AND holder_org = :o",
    "authorization": "SELECT 1 FROM patient_authorization WHERE code_hash = :k AND "
    "(holder_org = :o OR grantee_org = :o)",
    "subject": "SELECT 1 WHERE EXISTS (SELECT 1 FROM consent WHERE subject = :k AND holder_org "
    "= :o) OR EXISTS (SELECT 1 FROM patient_authorization WHERE subject = :k AND holder_org = :o)"
    " OR EXISTS (SELECT 1 FROM subject_key WHERE subject = :k AND holder_org = :o)"
    " OR EXISTS (SELECT 1 FROM cohort_member m JOIN access_event a ON a.block_number = "
    "m.block_number AND a.tx_index = m.tx_index AND a.log_index = m.log_index JOIN agreement g "
    "ON g.agreement_id = a.agreement_id WHERE m.subject_ref = :k AND g.holder_org = :o)",
}
_SQL = {k: v.replace("PARTY", _PARTY) for k, v in _SQL.items()}
_SQL["cohort"] = _SQL["access"]
_DIRECTORY = ("organization", "account")


@dataclass
class Scope:
    """One caller's view of the store, for one request (a `provenance.Visibility`)."""

    caller: Caller
    _seen: dict[str, bool] = field(default_factory=dict)

    @property
    def everything(self) -> bool:
        return self.caller.role == CallerRole.REGULATOR

    def allows(self, conn: Connection, node_id: str) -> bool:
        if self.everything:
            return True
        if self.caller.role != CallerRole.ORGANIZATION or self.caller.org is None:
            return False
        found = self._seen.get(node_id)
        if found is None:
            found = self._ask(conn, node_id, self.caller.org)
            self._seen[node_id] = found
        return found

    def _ask(self, conn: Connection, node_id: str, org: str) -> bool:
        type_, _, key = node_id.partition(":")
        if type_ in _DIRECTORY:
            return True
        sql = _SQL.get(type_)
        if sql is None:
            return False
        params: dict[str, object] = {"k": key, "o": org}
        if type_ == "signature":
            block, tx, log_index = (int(p) for p in key.split("/"))
            params = {"b": block, "t": tx, "i": log_index, "o": org}
        elif type_ in ("access", "cohort"):
            access_id, _, agreement_id = key.partition("@")
            params = {"k": access_id, "g": agreement_id, "o": org}
        return conn.execute(_text(sql), params).first() is not None

    def check_root(self, conn: Connection, node_id: str) -> None:
        if self.everything:
            return
        type_, _, key = node_id.partition(":")
        if type_ == "subject":
            if not self.allows(conn, node_id):
                raise NotFoundError(f"the store holds no subject {key}", code="subject_not_found")
            return
        # A graph may show other organizations (the directory), but not start at one.
        allowed = self.caller.org == key if type_ == "organization" else self.allows(conn, node_id)
        if not allowed:
            raise ForbiddenError(
                f"this {type_} is outside what your credential may see "
                f"({self.caller.role.value} {self._who()})"
            )

    def check_subject_report(self, conn: Connection, subject: str) -> bool:
        """Whether the caller sees `subject`'s transparency report (a regulator, its
        hospital, its own patient); raises when the caller may not ask at all. A patient token
        whose vouching hospital holds no record of the subject gets False: the report of an
        unknown subject, whether or not another hospital holds one, so the answer does not tell
        whether the subject exists elsewhere."""
        role = self.caller.role
        if role == CallerRole.REGULATOR:
            return True
        if role == CallerRole.ORGANIZATION:
            self.check_root(conn, f"subject:{subject}")
            return True
        if self.caller.subject != subject:
            raise ForbiddenError("a patient token opens its own subject's report only")
        holder = self.caller.org
        return (
            holder is not None
            and conn.execute(_text(_SQL["subject"]), {"k": subject, "o": holder}).first()
            is not None
        )

    def _who(self) -> str:
        from audit.provenance import readable

        return readable(self.caller.org) if self.caller.org else self.caller.name


def require_not_patient(caller: Caller, what: str) -> None:
    """Patient tokens open their subject's report and nothing else."""
    if caller.role == CallerRole.PATIENT:
        raise ForbiddenError(f"a patient token does not open {what}")
