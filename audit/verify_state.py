"""The contracts' state against the state their events imply, at the checkpoint block.

Events are the audit trail; storage is what the contracts act on. A node whose storage was
written around the contracts (`anvil_setStorageAt`, a patched client, a compromised validator)
keeps every event and still acts on other rules: an account made a gateway without a
`MemberRoleGranted`, a quota counter set back, a decision erased so a request may be replayed.
So `verify` folds the audited events, in chain order, into the state they imply and reads the
same state through the contracts' own view functions (`eth_call` at the checkpoint block,
batched: `audit.chain_reads`):

- Membership: `organization` (kind, status) per organization; `memberOf` (organization, role
  bits) and `hasRole` (the operator role) per account any event or transaction names;
  `defaultAdmin`.
- DatasetRegistry: `dataset` (holder, schema, field count, tier) per dataset.
- AgreementRegistry: `accessTerms` (status as stored, scenario, tier, operations, consent
  policy, window, quota, parties), `versionOf`, `signers`, `digest` per agreement;
  `allowedFields` per agreement and dataset.
- AccessLog: `accessesUsed` (granted accesses) per agreement, `decisionOf` per access (request
  id and agreement), `isReleased` per release, `breakGlassOf` (review deadline and outcome) per
  break-glass access (request id and agreement).
- ConsentRegistry: `consent` per consent, `consentScope` per specific consent (the hash of its
  studies, requesters and disease term), `authorization` (status, redemption) per code,
  `subjectKeyOf` per subject with a registered key or a consent naming one, `accessLog`.
- ArtifactRegistry: `artifact` (owner, kind, registrant, time, parent counts) per artifact.

Each difference is one `state_differs_from_events` finding naming the contract, the view and
its arguments, and each differing output (by events / on chain). Decisions and releases, the
only per-access reads, are checked page by page as the chain pass reads them, so memory stays
bounded; the rest at the end. The events folded are those the chain comparison re-reads (the
stored rows, or a `row_*` finding says where they differ), so an edited store is not reported
twice.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from audit.chain_reads import StateUnavailableError, View, ViewReader
from audit.events import DecodedEvent
from audit.store import AGREEMENT_STATUS_OF
from audit.verify_transactions import TransactionCheck
from dul.chain.rpc import RpcClient, RpcError
from dul.contracts.bindings import function
from dul.contracts.hashes import consent_scope
from dul.domain import AgreementStatus, AuthorizationStatus, ConsentStatus, Decision, OrgStatus

ZERO32: Final = "0x" + "00" * 32
ZERO20: Final = "0x" + "00" * 20
CHECK: Final = "state_differs_from_events"
FLUSH_AT: Final = 6_144  # per-access reads: about eight batch calls at a time
_QUEUED: Final = 4


class FindingSink(Protocol):
    def add(self, check: str, message: str, **kwargs: Any) -> None: ...


# --- the views ---------------------------------------------------------------------------------

ORGANIZATION = View(function("Membership", "organization"))
MEMBER_OF = View(function("Membership", "memberOf"))
HAS_ROLE = View(function("Membership", "hasRole"), ("granted",))
DEFAULT_ADMIN = View(function("Membership", "defaultAdmin"), ("admin",))
DATASET = View(function("DatasetRegistry", "dataset"))
ACCESS_TERMS = View(function("AgreementRegistry", "accessTerms"))
VERSION_OF = View(function("AgreementRegistry", "versionOf"))
SIGNERS = View(function("AgreementRegistry", "signers"))
DIGEST = View(function("AgreementRegistry", "digest"), ("digest",))
ALLOWED_FIELDS = View(function("AgreementRegistry", "allowedFields"), ("fieldMask",))
ACCESSES_USED = View(function("AccessLog", "accessesUsed"), ("used",))
DECISION_OF = View(function("AccessLog", "decisionOf"), ("decision",))
BREAK_GLASS_OF = View(function("AccessLog", "breakGlassOf"))
IS_RELEASED = View(function("AccessLog", "isReleased"), ("released",))
CONSENT = View(function("ConsentRegistry", "consent"))
CONSENT_SCOPE = View(function("ConsentRegistry", "consentScope"), ("scope",))
AUTHORIZATION = View(function("ConsentRegistry", "authorization"))
ACCESS_LOG = View(function("ConsentRegistry", "accessLog"), ("accessLog",))
SUBJECT_KEY_OF = View(function("ConsentRegistry", "subjectKeyOf"), ("key",))
ARTIFACT = View(function("ArtifactRegistry", "artifact"))

_DECISION_WORDS: Final = {int(d): int(d).to_bytes(32, "big") for d in Decision}
_TRUE_WORD: Final = (1).to_bytes(32, "big")


def _int(value: Any) -> int:
    """Event integers: int up to 64 bits, 0x hex above (`audit.events`)."""
    return int(value, 16) if isinstance(value, str) else int(value)


# --- the fold ----------------------------------------------------------------------------------


@dataclass
class StateFold:
    """What the events say the contracts hold (everything but the per-access reads, which
    `ChainStateCheck` streams)."""

    orgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)
    roles: dict[tuple[str, str], bool] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreements: dict[str, dict[str, Any]] = field(default_factory=dict)
    scopes: dict[tuple[str, str], int] = field(default_factory=dict)
    used: Counter[str] = field(default_factory=Counter)
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)
    consent_scopes: dict[str, str] = field(default_factory=dict)
    """Of specific consents: the scope hash their terms give (`consentScope`)."""
    authorizations: dict[str, dict[str, Any]] = field(default_factory=dict)
    subject_keys: dict[tuple[str, str], str] = field(default_factory=dict)
    """(holder, subject) -> the key a steward registered (zero: removed)."""
    access_log: str | None = None
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    break_glass: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(accessId, agreementId) -> breakGlassOf's fields."""
    """Break-glass access id -> its review deadline and outcome."""

    def apply(self, ev: DecodedEvent) -> None:
        handler = _HANDLERS.get(ev.name)
        if handler is not None:
            handler(self, ev.args, ev)

    # Membership
    def _org_registered(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        self.orgs[a["org"]] = {"kind": int(a["kind"]), "status": int(OrgStatus.ACTIVE)}

    def _org_status(self, a: Mapping[str, Any], ev: DecodedEvent) -> None:
        status = OrgStatus.SUSPENDED if ev.name == "OrganizationSuspended" else OrgStatus.ACTIVE
        self.orgs.setdefault(a["org"], {"kind": 0, "status": 0})["status"] = int(status)
        self.accounts.add(a["by"])

    def _member_role(self, a: Mapping[str, Any], ev: DecodedEvent) -> None:
        member = self.members.setdefault(a["account"], {"org": ZERO32, "roles": 0})
        bit = 1 << int(a["role"])
        if ev.name == "MemberRoleGranted":
            member["org"], member["roles"] = a["org"], member["roles"] | bit
        else:
            member["roles"] &= ~bit
            if not member["roles"]:
                member["org"] = ZERO32
        self.accounts.add(a["account"])

    def _access_control(self, a: Mapping[str, Any], ev: DecodedEvent) -> None:
        self.roles[(a["role"], a["account"])] = ev.name == "RoleGranted"
        self.accounts.update((a["account"], a["sender"]))

    # DatasetRegistry
    def _dataset(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        self.datasets[a["dataset"]] = {
            "holder": a["holder"], "schemaRef": a["schemaRef"],
            "fieldCount": len(a["fields"]), "maxTier": int(a["maxTier"]),
        }  # fmt: skip

    # AgreementRegistry
    def _proposed(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        t = a["terms"]
        self.agreements[a["id"]] = {
            "status": int(AgreementStatus.PROPOSED), "scenario": int(t["scenario"]),
            "maxTier": int(t["maxTier"]), "operations": int(t["operations"]),
            "consentPolicy": int(t["consentPolicy"]), "validFrom": _int(t["validFrom"]),
            "validUntil": _int(t["validUntil"]), "quota": _int(t["quota"]),
            "holder": a["holder"], "requester": a["requester"],
            "breakGlassReviewHours": _int(t["breakGlassReviewHours"]),
            "version": _int(a["version"]),
            "previous": a["previous"], "digest": a["digest"], "holderSigner": ZERO20,
            "requesterSigner": ZERO20,
        }  # fmt: skip
        for dataset, mask in zip(t["datasets"], t["fieldMasks"], strict=False):
            self.scopes[(a["id"], dataset)] = _int(mask)

    def _signed(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        agreement = self.agreements.get(a["id"])
        if agreement is not None:
            agreement["holderSigner" if int(a["party"]) == 0 else "requesterSigner"] = a["signer"]
        self.accounts.add(a["signer"])

    def _agreement_status(self, a: Mapping[str, Any], ev: DecodedEvent) -> None:
        agreement = self.agreements.get(a["id"])
        if agreement is not None:
            agreement["status"] = int(AGREEMENT_STATUS_OF[ev.name])
        if isinstance(a.get("by"), str) and len(a["by"]) == 42:
            self.accounts.add(a["by"])

    # AccessLog (decisions and releases are streamed by ChainStateCheck)
    def _access(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        record = a["record"]
        if int(record["decision"]) == Decision.GRANTED:
            self.used[a["agreementId"]] += 1
        self.accounts.add(a["recorder"])
        self.accounts.add(record["requester"])

    def _release(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        self.accounts.add(a["recorder"])

    def _break_glass(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        key = (a["accessId"], a["agreementId"])
        self.break_glass[key] = {"reviewDue": _int(a["reviewDue"]), "outcome": 0}

    def _break_glass_reviewed(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        case = self.break_glass.get((a["accessId"], a["agreementId"]))
        if case is not None:
            case["outcome"] = int(a["outcome"])
        self.accounts.add(a["reviewer"])

    # ConsentRegistry
    def _consent(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        t = a["terms"]
        self.consents[a["consentId"]] = {
            "holder": a["holder"], "subject": a["subject"], "scenarios": int(t["scenarios"]),
            "status": int(ConsentStatus.GRANTED), "validFrom": _int(t["validFrom"]),
            "validUntil": _int(t["validUntil"]), "subjectKey": t["subjectKey"],
        }  # fmt: skip
        if t["studies"] or t["requesters"] or t["diseaseCode"] != ZERO32:
            scope = consent_scope(
                bytes.fromhex(t["diseaseCode"][2:]),
                [bytes.fromhex(x[2:]) for x in t["studies"]],
                [bytes.fromhex(x[2:]) for x in t["requesters"]],
            )
            self.consent_scopes[a["consentId"]] = "0x" + scope.hex()
        self.accounts.add(a["recorder"])

    def _withdrawn(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        consent = self.consents.get(a["consentId"])
        if consent is not None:
            consent["status"] = int(ConsentStatus.WITHDRAWN)
        self.accounts.add(a["by"])

    def _issued(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        t = a["authorization"]
        self.authorizations[a["codeHash"]] = {
            "holder": t["holder"], "subject": t["subject"], "grantee": t["grantee"],
            "dataset": t["dataset"], "fieldMask": _int(t["fieldMask"]), "tier": int(t["tier"]),
            "scenario": int(t["scenario"]), "status": int(AuthorizationStatus.ISSUED),
            "expiresAt": _int(t["expiresAt"]), "multiUse": bool(t["multiUse"]),
            "redeemedBy": ZERO32,
        }  # fmt: skip
        self.accounts.add(a["issuer"])

    def _auth_revoked(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        auth = self.authorizations.get(a["codeHash"])
        if auth is not None:
            auth["status"] = int(AuthorizationStatus.REVOKED)
        self.accounts.add(a["by"])

    def _redeemed(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        auth = self.authorizations.get(a["codeHash"])
        if auth is not None:
            if not auth["multiUse"]:  # a multi-use code stays ISSUED
                auth["status"] = int(AuthorizationStatus.REDEEMED)
            auth["redeemedBy"] = a["accessId"]

    def _subject_key(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        self.subject_keys[(a["holder"], a["subject"])] = a["key"]
        self.accounts.add(a["by"])

    def effective_subject_keys(self) -> dict[tuple[str, str], str]:
        """`subjectKeyOf` as the events imply it: the registered key (zero once removed: a
        removed key stays removed), else — none ever registered — the key of the subject's
        newest consent naming one."""
        keys: dict[tuple[str, str], str] = {}
        for consent in self.consents.values():  # chain order: the newest wins
            if consent["subjectKey"] != ZERO20:
                keys[(consent["holder"], consent["subject"])] = consent["subjectKey"]
        keys.update(self.subject_keys)
        return keys

    def _bound(self, a: Mapping[str, Any], _: DecodedEvent) -> None:
        self.access_log = a["accessLog"]

    # ArtifactRegistry
    def _artifact(self, a: Mapping[str, Any], ev: DecodedEvent) -> None:
        artifact: dict[str, Any] = {
            "owner": a["owner"], "kind": int(a["kind"]), "registrant": a["registrant"],
            "releaseCount": len(a["releases"]), "parentCount": len(a["parents"]),
        }  # fmt: skip
        if ev.block_timestamp is not None:  # else that output is not compared
            artifact["registeredAt"] = int(ev.block_timestamp)
        self.artifacts[a["artifactId"]] = artifact
        self.accounts.add(a["registrant"])


_Handler = Callable[[StateFold, Mapping[str, Any], DecodedEvent], None]
_HANDLERS: Final[dict[str, _Handler]] = {
    "OrganizationRegistered": StateFold._org_registered,
    "OrganizationSuspended": StateFold._org_status,
    "OrganizationReinstated": StateFold._org_status,
    "MemberRoleGranted": StateFold._member_role,
    "MemberRoleRevoked": StateFold._member_role,
    "RoleGranted": StateFold._access_control,
    "RoleRevoked": StateFold._access_control,
    "DatasetRegistered": StateFold._dataset,
    "AgreementProposed": StateFold._proposed,
    "AgreementSigned": StateFold._signed,
    **{name: StateFold._agreement_status for name in AGREEMENT_STATUS_OF},
    "AccessRecorded": StateFold._access,
    "ResultReleased": StateFold._release,
    "BreakGlassAccess": StateFold._break_glass,
    "BreakGlassReviewed": StateFold._break_glass_reviewed,
    "ConsentRecorded": StateFold._consent,
    "ConsentWithdrawn": StateFold._withdrawn,
    "AuthorizationIssued": StateFold._issued,
    "AuthorizationRevoked": StateFold._auth_revoked,
    "AuthorizationRedeemed": StateFold._redeemed,
    "SubjectKeyRegistered": StateFold._subject_key,
    "AccessLogBound": StateFold._bound,
    "ArtifactRegistered": StateFold._artifact,
}


# --- the check -------------------------------------------------------------------------------


@dataclass
class ChainStateCheck:
    """verify's observer of the chain pass: `page(events)` for every page of re-read events in
    chain order, then `finish()` once; `close()` always (it stops the reader thread). Findings
    go to `out`, counts to `checked`; `unavailable` says why the state could not be read (then
    only transactions were checked).

    The per-access reads (decisions, releases) and the transactions are fetched by one thread
    of its own while the chain pass goes on, at most `_QUEUED` batches behind it: waiting on
    the node overlaps the chain pass's own reads and comparisons.
    """

    rpc: RpcClient
    contracts: Mapping[str, str]
    chain_id: int
    block: int
    out: FindingSink
    checked: Counter[str]
    fold: StateFold = field(default_factory=StateFold)
    unavailable: str | None = None
    transactions: TransactionCheck = field(init=False)
    reader: ViewReader = field(init=False)
    _decisions: list[tuple[str, str, int, str]] = field(default_factory=list)
    _releases: list[tuple[tuple[str, str, str], str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.transactions = TransactionCheck(self.rpc, self.chain_id, self.out, self.checked)
        self.reader = ViewReader(self.rpc, self.block)
        self.addresses = {name: address.lower() for name, address in self.contracts.items()}
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(_QUEUED)
        self._error: BaseException | None = None
        self._worker = threading.Thread(target=self._work, name="audit-verify-state")
        self._worker.start()

    def page(self, events: Sequence[DecodedEvent]) -> None:
        see = self.transactions.see
        for ev in events:
            self.fold.apply(ev)
            position = f"{ev.block_number}/{ev.tx_index}/{ev.log_index}"
            due = see(ev.tx_hash, position)
            if due is not None:
                self._submit(functools.partial(self.transactions.check, due))
            if ev.name == "AccessRecorded":
                a = ev.args
                self._decisions.append(
                    (a["accessId"], a["agreementId"], int(a["record"]["decision"]), position)
                )
            elif ev.name == "ResultReleased":
                a = ev.args
                self._releases.append(((a["accessId"], a["agreementId"], a["resultHash"]),
                                       position))  # fmt: skip
        if len(self._decisions) >= FLUSH_AT or len(self._releases) >= FLUSH_AT:
            self._submit_reads()

    def finish(self) -> None:
        rest = self.transactions.take()
        if rest is not None:
            self._submit(functools.partial(self.transactions.check, rest))
        self._submit_reads()
        self.close()
        self.fold.accounts.update(self.transactions.senders)
        self._guarded(self._entities)
        self.checked["state_views"] += self.reader.calls

    def close(self) -> None:
        """Stops the reader thread once its queue is done; re-raises what it raised."""
        if self._worker.is_alive():
            self._jobs.put(None)
            self._worker.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _submit(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            self.close()  # raises it
        self._jobs.put(job)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # re-raised in the chain pass's thread
                    self._error = exc

    def _submit_reads(self) -> None:
        decisions, self._decisions = self._decisions, []
        releases, self._releases = self._releases, []
        if decisions:
            self._submit(lambda: self._guarded(lambda: self._check_decisions(decisions)))
        if releases:
            self._submit(lambda: self._guarded(lambda: self._check_releases(releases)))

    def _guarded(self, step: Callable[[], None]) -> None:
        if self.unavailable is not None:
            return
        try:
            step()
        except StateUnavailableError as exc:
            self.unavailable = exc.message

    def _check_decisions(self, pending: list[tuple[str, str, int, str]]) -> None:
        selector = DECISION_OF.selector
        got = self.reader.read_calldata(
            self.addresses["AccessLog"], DECISION_OF,
            [selector + bytes.fromhex(r[2:]) + bytes.fromhex(g[2:]) for r, g, _, _ in pending],
        )  # fmt: skip
        for (request_id, agreement_id, decision, position), found in zip(pending, got, strict=True):
            if found != _DECISION_WORDS.get(decision):
                self._differs("AccessLog", DECISION_OF, (request_id, agreement_id),
                              {"decision": decision}, found, position=position)  # fmt: skip

    def _check_releases(self, pending: list[tuple[tuple[str, str, str], str]]) -> None:
        got = self.reader.read(self.addresses["AccessLog"], IS_RELEASED, [k for k, _ in pending])
        for (key, position), found in zip(pending, got, strict=True):
            if found != _TRUE_WORD:
                self._differs("AccessLog", IS_RELEASED, key, {"released": True}, found,
                              position=position)  # fmt: skip

    def _entities(self) -> None:
        f = self.fold
        self._compare("Membership", ORGANIZATION, {(k,): v for k, v in f.orgs.items()})
        accounts = sorted(a for a in f.accounts if a != ZERO20)
        self._compare(
            "Membership", MEMBER_OF,
            {(a,): f.members.get(a, {"org": ZERO32, "roles": 0}) for a in accounts},
        )  # fmt: skip
        roles = {(ZERO32, a): False for a in accounts}
        roles.update(f.roles)
        self._compare("Membership", HAS_ROLE, {k: {"granted": v} for k, v in roles.items()})
        admins = [a for (role, a), held in f.roles.items() if role == ZERO32 and held]
        if len(admins) <= 1:
            self._compare("Membership", DEFAULT_ADMIN, {(): {"admin": (admins or [ZERO20])[0]}})
        self._compare("DatasetRegistry", DATASET, {(k,): v for k, v in f.datasets.items()})
        terms_fields = set(ACCESS_TERMS.fields)
        self._compare(
            "AgreementRegistry", ACCESS_TERMS,
            {(k,): {n: v[n] for n in terms_fields} for k, v in f.agreements.items()},
        )  # fmt: skip
        for view in (VERSION_OF, SIGNERS, DIGEST):
            self._compare(
                "AgreementRegistry", view,
                {(k,): {n: v[n] for n in view.fields} for k, v in f.agreements.items()},
            )  # fmt: skip
        self._compare("AgreementRegistry", ALLOWED_FIELDS,
                      {k: {"fieldMask": v} for k, v in f.scopes.items()})  # fmt: skip
        self._compare("AccessLog", ACCESSES_USED,
                      {(k,): {"used": f.used.get(k, 0)} for k in f.agreements})  # fmt: skip
        self._compare("AccessLog", BREAK_GLASS_OF, dict(f.break_glass))
        self._compare("ConsentRegistry", CONSENT, {(k,): v for k, v in f.consents.items()})
        self._compare("ConsentRegistry", CONSENT_SCOPE,
                      {(k,): {"scope": v} for k, v in f.consent_scopes.items()})  # fmt: skip
        self._compare("ConsentRegistry", AUTHORIZATION,
                      {(k,): v for k, v in f.authorizations.items()})  # fmt: skip
        self._compare("ConsentRegistry", SUBJECT_KEY_OF,
                      {k: {"key": v} for k, v in f.effective_subject_keys().items()})  # fmt: skip
        if f.access_log is not None:
            self._compare("ConsentRegistry", ACCESS_LOG, {(): {"accessLog": f.access_log}})
        self._compare("ArtifactRegistry", ARTIFACT, {(k,): v for k, v in f.artifacts.items()})

    def _compare(
        self, contract: str, view: View, expected: Mapping[tuple[Any, ...], Mapping[str, Any]]
    ) -> None:
        if not expected or contract not in self.addresses:
            return
        keys = list(expected)
        got = self.reader.read(self.addresses[contract], view, keys)
        complete = len(view.fields)
        for key, found in zip(keys, got, strict=True):
            want = expected[key]
            exact = len(want) == complete and not isinstance(found, RpcError)
            if exact and view.encode(want) == found:
                continue
            self._differs(contract, view, key, want, found)

    def _differs(
        self,
        contract: str,
        view: View,
        args: Sequence[Any],
        want: Mapping[str, Any],
        found: bytes | RpcError | None,
        *,
        position: str | None = None,
    ) -> None:
        if isinstance(found, RpcError) or found is None:
            why = found.reason if isinstance(found, RpcError) else "no answer"
            fields: dict[str, Any] = {"call": {"events": dict(want), "chain": f"failed: {why}"}}
        else:
            have = view.decode(found)
            fields = {
                name: {"events": value, "chain": have[name]}
                for name, value in want.items()
                if _canonical(value) != have[name]
            }
            if not fields:
                return
        call = f"{contract}.{view.name}({', '.join(str(a) for a in args)})"
        said = "; ".join(f"{n}: events {d['events']}, chain {d['chain']}"
                         for n, d in fields.items())  # fmt: skip
        self.out.add(
            CHECK, f"{call} at block {self.block} differs from its events ({said})",
            contract=contract, key=str(args[0]) if args else view.name, position=position,
            details={"function": view.signature, "args": [str(a) for a in args],
                     "block": self.block, "fields": fields},
        )  # fmt: skip


def _canonical(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
