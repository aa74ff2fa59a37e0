"""The policy core and the contract agree: the same cases through `decide` and `AccessLog`.

For each case the agreement state is read from chain as the gateway reads it, `decide` runs,
and the GRANTED record is submitted: when the policy grants, the chain records it; when it
denies, the chain refuses with the error of reasons[0], and the DENIED record with that reason
is recorded instead.

Insurance claims and clinical transfers redeem a patient's authorization code on chain: a case
that names `AUTH` gets a fresh code issued for the agreement's scope and PATIENT, and the gateway's
fact is the fault `consent_policy.authorization_fault` finds in the code as the chain keeps it. A
transfer agreement allows break-glass: a case that names `GLASS` opens PATIENT's records without a
code, flagged on chain for review.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from itertools import count
from typing import Any

import pytest
from eth_hash.auto import keccak
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dul.cohort import leaf_hash
from dul.contracts.reverts import decode_revert
from dul.contracts.typed_data import (
    AccessRecord,
    AccessRequest,
    access_log_domain,
    agreement_domain,
)
from dul.contracts.world import OMOP_FIELDS, World, derived_signer
from dul.domain import (
    AgreementStatus,
    AuthorizationStatus,
    BreakGlassOutcome,
    BreakGlassReason,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    Role,
    Scenario,
    Tier,
    break_glass_ref,
    is_break_glass,
    required_consent,
    slug_id,
)
from dul.errors import TransactionError
from dul.signing import Signer
from ledger_gateway.consent_policy import AuthorizationState, RedemptionFacts, authorization_fault
from ledger_gateway.policy import AgreementState, PolicyDecision, RequestFacts, decide

pytestmark = [pytest.mark.integration, pytest.mark.every_node]

R = DenyReason
ZERO = bytes(32)
ROOT = keccak(b"cohort merkle root")
PATIENT = keccak(b"policy-parity patient")
PATIENT_ROOT = leaf_hash(PATIENT)  # the cohort root of an access to PATIENT alone
AUTH = keccak(b"authorization code")  # stands for a fresh code issued for the case
NEVER_ISSUED = keccak(b"authorization code never issued")
UNKNOWN_DATASET = slug_id("hospital-a/not-registered")
IDENTIFIED_DATASET = slug_id("hospital-a/ehr-identified")  # the transfers' dataset
GLASS = break_glass_ref(BreakGlassReason.PATIENT_INCAPACITATED)
GLASS_UNKNOWN_REASON = GLASS[:31] + bytes([9])

#: The custom error `AccessLog._checkGrant` refuses a GRANTED record with, for each reason.
CHAIN_ERROR: dict[DenyReason, str] = {
    R.POLICY_OTHER: "AccessLogRequestExpired",
    R.AGREEMENT_NOT_ACTIVE: "AccessLogAgreementNotActive",
    R.OUTSIDE_WINDOW: "AccessLogOutsideWindow",
    R.REQUESTER_NOT_AUTHORIZED: "AccessLogRequesterNotAuthorized",
    R.DATASET_NOT_IN_SCOPE: "AccessLogDatasetNotInScope",
    R.FIELDS_NOT_IN_SCOPE: "AccessLogFieldsNotInScope",
    R.TIER_ABOVE_CEILING: "AccessLogTierAboveCeiling",
    R.OPERATION_NOT_ALLOWED: "AccessLogOperationNotAllowed",
    R.CONSENT_MISSING: "AccessLogCohortMissing",
    R.AUTHORIZATION_INVALID: "AccessLogAuthorizationMissing",
    R.QUOTA_EXHAUSTED: "AccessLogQuotaExhausted",
}
#: AUTHORIZATION_INVALID of a record that names a code for one patient: the redemption failed.
REFUSED = "AccessLogAuthorizationRefused"
#: AUTHORIZATION_INVALID of a record that claims break-glass the chain does not allow.
GLASS_REFUSED = "AccessLogBreakGlassRefused"

_ids = count()


@dataclass(frozen=True)
class Ask:
    """One request as a requester signs it, and the cohort facts the gateway adds."""

    dataset: bytes | None = None  # None: the world's dataset
    field_mask: int = 0b0110
    tier: Tier = Tier.DEIDENTIFIED
    operation: Operation = Operation.QUERY
    deadline_offset: int = 600
    signer: str = "requester"
    cohort_root: bytes = ZERO
    cohort_size: int = 0
    authorization_ref: bytes = ZERO
    code_tier: Tier | None = None  # a fresh code's tier (None: the agreement's ceiling)
    """Of a fresh code (`AUTH`); at most the dataset's maximum."""
    code_scenario: Scenario | None = None
    """Of a fresh code (`AUTH`); None: the agreement's scenario."""


class Harness:
    """Reads what the gateway reads, decides, and puts the decision to the contract."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.ledger = world.ledger
        self.domain = access_log_domain(
            world.ledger.chain_id, world.ledger.deployment.address("AccessLog")
        )
        self.signers: dict[str, Signer] = {
            "requester": world.requester,
            "outsider": derived_signer("policy-parity outsider"),
            "partner_steward": world.partner_steward,  # the requesting org, but not a REQUESTER
            "gateway": world.gateway,  # a member of the holder, not of the requester
        }

    # --- what the gateway reads from chain ---

    def now(self) -> int:
        return int(self.ledger.w3.eth.get_block("latest")["timestamp"])

    def state(self, agreement: bytes, dataset: bytes) -> AgreementState:
        t = self.ledger.call("AgreementRegistry", "accessTerms", agreement)
        return AgreementState(
            agreement_id=agreement,
            status=AgreementStatus(t[0]),
            scenario=Scenario(t[1]),
            max_tier=Tier(t[2]),
            operations=int(t[3]),
            consent_policy=ConsentPolicy(t[4]),
            valid_from=int(t[5]),
            valid_until=int(t[6]),
            quota=int(t[7]),
            holder=bytes(t[8]),
            requester=bytes(t[9]),
            break_glass_review_hours=int(t[10]),
            allowed_fields={
                dataset: int(
                    self.ledger.call("AgreementRegistry", "allowedFields", agreement, dataset)
                )
            },
        )

    def used(self, agreement: bytes) -> int:
        return int(self.ledger.call("AccessLog", "accessesUsed", agreement))

    def is_requester(self, account: str, org: bytes) -> bool:
        return bool(self.ledger.call("Membership", "hasOrgRole", account, org, Role.REQUESTER))

    def authorization(self, code: bytes) -> AuthorizationState | None:
        a = self.ledger.call("ConsentRegistry", "authorization", code)
        if a[7] == AuthorizationStatus.NONE:
            return None
        return AuthorizationState(
            code_hash=code,
            holder=bytes(a[0]),
            subject=bytes(a[1]),
            grantee=bytes(a[2]),
            dataset=bytes(a[3]),
            field_mask=int(a[4]),
            tier=Tier(a[5]),
            scenario=Scenario(a[6]),
            status=AuthorizationStatus(a[7]),
            expires_at=int(a[8]),
            multi_use=bool(a[9]),
            redeemed_by=bytes(a[10]),
        )

    # --- what the hospital's steward does ---

    def dataset_of(self, agreement: bytes) -> bytes:
        """The dataset an agreement covers: the identified one for transfers."""
        if self.ledger.call("AgreementRegistry", "allowedFields", agreement, IDENTIFIED_DATASET):
            return IDENTIFIED_DATASET
        return self.world.dataset

    def issue_code(
        self, agreement: bytes, tier: Tier | None = None, scenario: Scenario | None = None
    ) -> bytes:
        """A fresh code of PATIENT for the agreement's requester: all the fields it allows of
        its dataset, up to `tier` (None: the agreement's ceiling), for `scenario` (None: the
        agreement's)."""
        dataset = self.dataset_of(agreement)
        state = self.state(agreement, dataset)
        code = keccak(f"policy-parity code {next(_ids)} {time.time_ns()}".encode())
        self.world.issue_authorization(
            code,
            PATIENT,
            state.requester,
            dataset=dataset,
            field_mask=state.allowed_fields[dataset],
            tier=state.max_tier if tier is None else tier,
            expires_at=self.now() + 3_600,
            scenario=state.scenario if scenario is None else scenario,
        )
        return code

    # --- both sides ---

    def run(self, agreement: bytes, ask: Ask) -> PolicyDecision:
        """Decide `ask` and check the chain agrees; the decision is on chain afterwards."""
        dataset = self.dataset_of(agreement) if ask.dataset is None else ask.dataset
        signer = self.signers[ask.signer]
        now = self.now()
        state = self.state(agreement, dataset)
        used = self.used(agreement)
        code = ask.authorization_ref
        if code == AUTH and state.consent_policy == ConsentPolicy.PATIENT_AUTHORIZATION:
            code = self.issue_code(agreement, ask.code_tier, ask.code_scenario)
            now = self.now()
        before = self.authorization(code)
        fault = authorization_fault(
            before,
            False,
            RedemptionFacts(
                holder=state.holder,
                grantee=state.requester,
                dataset_id=dataset,
                field_mask=ask.field_mask,
                tier=ask.tier,
                cohort_root=ask.cohort_root,
                scenario=state.scenario,
            ),
            now,
        )
        request = AccessRequest(
            request_id=keccak(f"policy-parity {next(_ids)} {time.time_ns()}".encode()),
            agreement_id=agreement,
            dataset_id=dataset,
            field_mask=ask.field_mask,
            tier=ask.tier,
            operation=ask.operation,
            request_hash=keccak(b"SELECT count(*) FROM condition_occurrence"),
            deadline=now + ask.deadline_offset,
            authorization_ref=code,
        )
        facts = RequestFacts(
            dataset_id=dataset,
            field_mask=ask.field_mask,
            tier=ask.tier,
            operation=ask.operation,
            deadline=request.deadline,
            requester_is_member=self.is_requester(signer.address, state.requester),
            cohort_size=ask.cohort_size,
            cohort_root=ask.cohort_root,
            authorization_ref=code,
            authorization_fault=fault,
        )
        outcome = decide(state, facts, now=now, used=used)
        signature = request.sign(signer, self.domain)

        def record(decision: Decision, reason: DenyReason) -> tuple[Any, ...]:
            return AccessRecord(
                request,
                signer.address,
                signature,
                decision,
                reason,
                cohort_root=ask.cohort_root,
                cohort_size=ask.cohort_size,
            ).as_abi()

        granted = record(Decision.GRANTED, R.NONE)
        if outcome.granted:
            self.ledger.transact(self.world.gateway, "AccessLog", "recordAccess", granted)
            assert self.used(agreement) == used + 1
            due, review = self.ledger.call(
                "AccessLog", "breakGlassOf", request.request_id, agreement
            )
            assert (due > now) == is_break_glass(code)  # flagged for review, never redeemed
            assert review == BreakGlassOutcome.NONE
            if state.consent_policy == ConsentPolicy.PATIENT_AUTHORIZATION and due == 0:
                redeemed = self.authorization(code)
                assert redeemed is not None
                assert redeemed.status == AuthorizationStatus.REDEEMED
                assert redeemed.redeemed_by == request.request_id
        else:
            with pytest.raises(TransactionError) as refused:
                self.ledger.transact(self.world.gateway, "AccessLog", "recordAccess", granted)
            redeeming = code != ZERO and ask.cohort_size == 1
            expected = CHAIN_ERROR[outcome.reason]
            if outcome.reason == R.AUTHORIZATION_INVALID and is_break_glass(code):
                expected = GLASS_REFUSED
            elif outcome.reason == R.AUTHORIZATION_INVALID and redeeming:
                expected = REFUSED
            assert refused.value.code == expected, (
                f"policy says {[r.name for r in outcome.reasons]} (fault {fault.name}), chain "
                f"refuses with {refused.value.code}"
            )
            if expected == REFUSED:
                assert refused.value.details["error_args"]["fault"] == fault
            denied = record(Decision.DENIED, outcome.reason)
            self.ledger.transact(self.world.gateway, "AccessLog", "recordAccess", denied)
            assert self.used(agreement) == used
            assert self.authorization(code) == before  # a refused access redeems nothing
        decision = self.ledger.call("AccessLog", "decisionOf", request.request_id, agreement)
        assert decision == outcome.decision
        return outcome


# --- the agreements the cases run against ---------------------------------------------------


def _activate_amendment(world: World, previous: bytes, terms: Any) -> bytes:
    """Amend `previous` into `terms` (version 2) and sign it: `previous` becomes SUPERSEDED."""
    world.ledger.transact(world.steward, "AgreementRegistry", "amend", previous, terms.as_abi())
    domain = agreement_domain(
        world.ledger.chain_id, world.ledger.deployment.address("AgreementRegistry")
    )
    digest = terms.digest(domain, 2, previous)
    for signer in (world.steward, world.partner_steward):
        world.ledger.transact(
            signer,
            "AgreementRegistry",
            "sign",
            terms.agreement_id,
            signer.address,
            signer.sign_digest(digest),
        )
    return bytes(terms.agreement_id)


def _wait_past(world: World, timestamp: int) -> None:
    while int(world.ledger.w3.eth.get_block("latest")["timestamp"]) <= timestamp:
        time.sleep(0.1)


@dataclass
class Agreements:
    open: bytes  # RESEARCH at DEIDENTIFIED, QUERY|EXPORT_RESULT, fields 0b00011110
    superseded: bytes  # the first version of `open`
    future: bytes  # valid from an hour from now
    cohort: bytes  # RESEARCH at PSEUDONYMIZED: COHORT_CONSENT
    insurance: bytes  # INSURANCE_CLAIM: PATIENT_AUTHORIZATION
    transfer: bytes  # CLINICAL_CARE at IDENTIFIED, another org: PATIENT_AUTHORIZATION, break-glass
    strict_transfer: bytes  # the same without break-glass
    proposed: bytes  # never signed
    suspended: bytes
    revoked: bytes
    lapsed: bytes  # stored ACTIVE, window over (no expire() sent)
    expired: bytes  # window over and expire() sent: stored EXPIRED

    def named(self, name: str) -> bytes:
        value = getattr(self, name)
        assert isinstance(value, bytes)
        return value


def _identified_dataset(world: World) -> None:
    """Registers the hospital's identified dataset once (transfers run at IDENTIFIED)."""
    held = world.ledger.call("DatasetRegistry", "dataset", IDENTIFIED_DATASET)
    if held[0] == world.hospital:
        return
    world.ledger.transact(
        world.steward, "DatasetRegistry", "registerDataset", IDENTIFIED_DATASET, world.hospital,
        keccak(b"OMOP CDM 5.4"), list(OMOP_FIELDS), Tier.IDENTIFIED,
    )  # fmt: skip


def _transfer_terms(world: World, *, break_glass_hours: int) -> Any:
    """Identified clinical care of the hospital's patients by another organization."""
    return replace(
        world.research_terms(),
        datasets=(IDENTIFIED_DATASET,),
        scenario=Scenario.CLINICAL_CARE,
        max_tier=Tier.IDENTIFIED,
        consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
        duo_codes=(43,),
        break_glass_review_hours=break_glass_hours,
    )


@pytest.fixture(scope="module")
def harness(world: World) -> Harness:
    _identified_dataset(world)
    return Harness(world)


@pytest.fixture(scope="module")
def agreements(world: World, harness: Harness) -> Agreements:
    tx = world.ledger.transact
    # Short windows first, so they are over by the time the rest is set up. Each starts from
    # the time just before its own proposal, and 10 s lets a loaded machine propose it before
    # it is over (3 s from one start for both: the second was refused once at load 25).
    short, activated = [], []
    for _ in range(2):
        now = harness.now()
        short.append(replace(world.research_terms(), valid_from=now - 60, valid_until=now + 10))
        activated.append(world.activate(short[-1]))
    lapsed, expired = activated
    start = harness.now()
    v1 = world.activate(world.research_terms())
    open_ = _activate_amendment(world, v1, world.research_terms())
    future = world.activate(
        replace(world.research_terms(), valid_from=start + 3_600, valid_until=start + 7_200)
    )
    cohort = world.activate(
        replace(
            world.research_terms(),
            max_tier=Tier.PSEUDONYMIZED,
            consent_policy=ConsentPolicy.COHORT_CONSENT,
        )
    )
    insurance = world.activate(
        replace(
            world.research_terms(),
            scenario=Scenario.INSURANCE_CLAIM,
            consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
            duo_codes=(),
        )
    )
    transfer_terms = _transfer_terms(world, break_glass_hours=24)
    transfer = world.activate(transfer_terms)
    strict_transfer = world.activate(
        replace(_transfer_terms(world, break_glass_hours=0), nonce=transfer_terms.nonce + 1)
    )
    proposed_terms = world.research_terms()
    tx(world.steward, "AgreementRegistry", "propose", proposed_terms.as_abi())
    suspended = world.activate(world.research_terms())
    tx(world.partner_steward, "AgreementRegistry", "suspend", suspended, keccak(b"audit"))
    revoked = world.activate(world.research_terms())
    tx(world.regulator, "AgreementRegistry", "suspend", revoked, keccak(b"inspection"))
    tx(world.steward, "AgreementRegistry", "revoke", revoked, keccak(b"breach"))
    _wait_past(world, short[1].valid_until)
    tx(world.operator, "AgreementRegistry", "expire", expired)
    found = Agreements(
        open=open_,
        superseded=v1,
        future=future,
        cohort=cohort,
        insurance=insurance,
        transfer=transfer,
        strict_transfer=strict_transfer,
        proposed=bytes(proposed_terms.agreement_id),
        suspended=suspended,
        revoked=revoked,
        lapsed=lapsed,
        expired=expired,
    )
    status = {
        "open": AgreementStatus.ACTIVE,
        "superseded": AgreementStatus.SUPERSEDED,
        "proposed": AgreementStatus.PROPOSED,
        "suspended": AgreementStatus.SUSPENDED,
        "revoked": AgreementStatus.REVOKED,
        "lapsed": AgreementStatus.ACTIVE,
        "expired": AgreementStatus.EXPIRED,
    }
    for name, expected in status.items():
        stored = world.ledger.call("AgreementRegistry", "accessTerms", found.named(name))[0]
        assert stored == expected, name
    return found


# --- explicit cases -------------------------------------------------------------------------

CASES: list[tuple[str, str, Ask, tuple[DenyReason, ...]]] = [
    ("granted-query", "open", Ask(), ()),
    ("granted-export", "open", Ask(operation=Operation.EXPORT_RESULT), ()),
    ("granted-all-fields", "open", Ask(field_mask=0b0001_1110), ()),
    ("granted-one-field", "open", Ask(field_mask=0b0000_1000), ()),
    ("granted-tier-below", "open", Ask(tier=Tier.AGGREGATE), ()),
    ("deadline-passed", "open", Ask(deadline_offset=-3_600), (R.POLICY_OTHER,)),
    ("status-proposed", "proposed", Ask(), (R.AGREEMENT_NOT_ACTIVE,)),
    ("status-suspended", "suspended", Ask(), (R.AGREEMENT_NOT_ACTIVE,)),
    ("status-revoked", "revoked", Ask(), (R.AGREEMENT_NOT_ACTIVE,)),
    ("status-superseded", "superseded", Ask(), (R.AGREEMENT_NOT_ACTIVE,)),
    ("status-expired", "expired", Ask(), (R.AGREEMENT_NOT_ACTIVE, R.OUTSIDE_WINDOW)),
    ("window-lapsed-without-expire", "lapsed", Ask(), (R.OUTSIDE_WINDOW,)),
    ("window-not-yet-open", "future", Ask(), (R.OUTSIDE_WINDOW,)),
    ("requester-outsider", "open", Ask(signer="outsider"), (R.REQUESTER_NOT_AUTHORIZED,)),
    (
        "requester-steward-not-requester",
        "open",
        Ask(signer="partner_steward"),
        (R.REQUESTER_NOT_AUTHORIZED,),
    ),
    ("requester-holder-gateway", "open", Ask(signer="gateway"), (R.REQUESTER_NOT_AUTHORIZED,)),
    ("dataset-absent", "open", Ask(dataset=UNKNOWN_DATASET), (R.DATASET_NOT_IN_SCOPE,)),
    ("fields-mask-zero", "open", Ask(field_mask=0), (R.FIELDS_NOT_IN_SCOPE,)),
    ("fields-bit-0-outside", "open", Ask(field_mask=0b0111), (R.FIELDS_NOT_IN_SCOPE,)),
    (
        "fields-bit-8-beyond-dataset",
        "open",
        Ask(field_mask=0b1_0000_0010),
        (R.FIELDS_NOT_IN_SCOPE,),
    ),
    ("tier-equal-max", "open", Ask(tier=Tier.DEIDENTIFIED), ()),
    ("tier-above-max", "open", Ask(tier=Tier.PSEUDONYMIZED), (R.TIER_ABOVE_CEILING,)),
    ("operation-train", "open", Ask(operation=Operation.TRAIN), (R.OPERATION_NOT_ALLOWED,)),
    (
        "cohort-present",
        "cohort",
        Ask(tier=Tier.PSEUDONYMIZED, cohort_root=ROOT, cohort_size=120),
        (),
    ),
    ("cohort-missing", "cohort", Ask(tier=Tier.PSEUDONYMIZED), (R.CONSENT_MISSING,)),
    ("cohort-size-zero", "cohort", Ask(cohort_root=ROOT), (R.CONSENT_MISSING,)),
    ("cohort-root-zero", "cohort", Ask(cohort_size=120), (R.CONSENT_MISSING,)),
    (
        "authorization-present",
        "insurance",
        Ask(authorization_ref=AUTH, cohort_root=PATIENT_ROOT, cohort_size=1),
        (),
    ),
    ("authorization-missing", "insurance", Ask(), (R.AUTHORIZATION_INVALID,)),
    (
        "authorization-for-two",
        "insurance",
        Ask(authorization_ref=AUTH, cohort_root=PATIENT_ROOT, cohort_size=2),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "authorization-never-issued",
        "insurance",
        Ask(authorization_ref=NEVER_ISSUED, cohort_root=PATIENT_ROOT, cohort_size=1),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "authorization-another-patient",
        "insurance",
        Ask(authorization_ref=AUTH, cohort_root=ROOT, cohort_size=1),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "authorization-tier-above-code",
        "insurance",
        Ask(
            authorization_ref=AUTH,
            cohort_root=PATIENT_ROOT,
            cohort_size=1,
            code_tier=Tier.AGGREGATE,
        ),
        (R.AUTHORIZATION_INVALID,),
    ),
    ("authorization-no-ref", "insurance", Ask(cohort_size=1), (R.AUTHORIZATION_INVALID,)),
    # clinical transfers: the patient's code, or break-glass where the agreement allows it
    (
        "transfer-authorization-present",
        "transfer",
        Ask(tier=Tier.IDENTIFIED, authorization_ref=AUTH, cohort_root=PATIENT_ROOT, cohort_size=1),
        (),
    ),
    ("transfer-authorization-missing", "transfer", Ask(), (R.AUTHORIZATION_INVALID,)),
    (
        "transfer-authorization-for-insurance",
        "transfer",
        Ask(
            authorization_ref=AUTH,
            cohort_root=PATIENT_ROOT,
            cohort_size=1,
            code_scenario=Scenario.INSURANCE_CLAIM,
        ),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "transfer-break-glass",
        "transfer",
        Ask(tier=Tier.IDENTIFIED, authorization_ref=GLASS, cohort_root=PATIENT_ROOT, cohort_size=1),
        (),
    ),
    (
        "transfer-break-glass-for-two",
        "transfer",
        Ask(authorization_ref=GLASS, cohort_root=ROOT, cohort_size=2),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "transfer-break-glass-no-root",
        "transfer",
        Ask(authorization_ref=GLASS, cohort_size=1),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "transfer-break-glass-unknown-reason",
        "transfer",
        Ask(authorization_ref=GLASS_UNKNOWN_REASON, cohort_root=PATIENT_ROOT, cohort_size=1),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "strict-transfer-break-glass",
        "strict_transfer",
        Ask(authorization_ref=GLASS, cohort_root=PATIENT_ROOT, cohort_size=1),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "research-break-glass",
        "open",
        Ask(authorization_ref=GLASS, cohort_root=PATIENT_ROOT, cohort_size=1),
        (R.AUTHORIZATION_INVALID,),
    ),
    (
        "transfer-break-glass-after-operation",
        "transfer",
        Ask(operation=Operation.TRAIN, authorization_ref=GLASS, cohort_size=3),
        (R.OPERATION_NOT_ALLOWED, R.AUTHORIZATION_INVALID),
    ),
    # several rules broken: the chain refuses with the first, in the policy's order
    (
        "multi-deadline-before-status",
        "suspended",
        Ask(deadline_offset=-3_600, signer="outsider"),
        (R.POLICY_OTHER, R.AGREEMENT_NOT_ACTIVE, R.REQUESTER_NOT_AUTHORIZED),
    ),
    (
        "multi-status-before-requester",
        "revoked",
        Ask(signer="outsider", operation=Operation.TRAIN),
        (R.AGREEMENT_NOT_ACTIVE, R.REQUESTER_NOT_AUTHORIZED, R.OPERATION_NOT_ALLOWED),
    ),
    (
        "multi-window-before-requester",
        "future",
        Ask(signer="outsider", tier=Tier.IDENTIFIED),
        (R.OUTSIDE_WINDOW, R.REQUESTER_NOT_AUTHORIZED, R.TIER_ABOVE_CEILING),
    ),
    (
        "multi-requester-before-dataset",
        "open",
        Ask(signer="partner_steward", dataset=UNKNOWN_DATASET),
        (R.REQUESTER_NOT_AUTHORIZED, R.DATASET_NOT_IN_SCOPE),
    ),
    (
        "multi-dataset-before-tier",
        "open",
        Ask(dataset=UNKNOWN_DATASET, tier=Tier.IDENTIFIED),
        (R.DATASET_NOT_IN_SCOPE, R.TIER_ABOVE_CEILING),
    ),
    (
        "multi-fields-before-tier",
        "open",
        Ask(field_mask=0b1, tier=Tier.IDENTIFIED, operation=Operation.TRAIN),
        (R.FIELDS_NOT_IN_SCOPE, R.TIER_ABOVE_CEILING, R.OPERATION_NOT_ALLOWED),
    ),
    (
        "multi-tier-before-operation",
        "open",
        Ask(tier=Tier.PSEUDONYMIZED, operation=Operation.TRAIN),
        (R.TIER_ABOVE_CEILING, R.OPERATION_NOT_ALLOWED),
    ),
    (
        "multi-operation-before-consent",
        "cohort",
        Ask(operation=Operation.TRAIN),
        (R.OPERATION_NOT_ALLOWED, R.CONSENT_MISSING),
    ),
    (
        "multi-operation-before-authorization",
        "insurance",
        Ask(operation=Operation.TRAIN),
        (R.OPERATION_NOT_ALLOWED, R.AUTHORIZATION_INVALID),
    ),
]


@pytest.mark.parametrize(
    ("agreement", "ask", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_case(
    harness: Harness,
    agreements: Agreements,
    agreement: str,
    ask: Ask,
    expected: tuple[DenyReason, ...],
) -> None:
    outcome = harness.run(agreements.named(agreement), ask)
    assert outcome.reasons == expected


def test_every_reason_is_first_in_some_case() -> None:
    firsts = {case[3][0] for case in CASES if case[3]}
    assert firsts | {R.QUOTA_EXHAUSTED} == set(CHAIN_ERROR)  # quota: `test_quota`


def test_quota(world: World, harness: Harness) -> None:
    """With a quota of one: the grant at used = quota - 1 is recorded, the next is refused."""
    agreement = world.activate(world.research_terms(quota=1))
    assert harness.run(agreement, Ask()).reasons == ()
    assert harness.used(agreement) == 1
    assert harness.run(agreement, Ask()).reasons == (R.QUOTA_EXHAUSTED,)
    assert harness.run(agreement, Ask(tier=Tier.IDENTIFIED)).reasons == (
        R.TIER_ABOVE_CEILING,
        R.QUOTA_EXHAUSTED,
    )
    assert harness.used(agreement) == 1


def test_a_code_is_redeemed_once(harness: Harness, agreements: Agreements) -> None:
    """The second access with one code is refused on chain (REDEEMED), and so decided; the
    code stays linked to the first access."""
    code = harness.issue_code(agreements.insurance)
    ask = Ask(authorization_ref=code, cohort_root=PATIENT_ROOT, cohort_size=1)
    assert harness.run(agreements.insurance, ask).granted
    first = harness.authorization(code)
    assert first is not None
    assert first.status == AuthorizationStatus.REDEEMED
    assert harness.run(agreements.insurance, ask).reasons == (R.AUTHORIZATION_INVALID,)
    assert harness.authorization(code) == first


def _refusal(call: Any, sender: str) -> Any:
    """The decoded custom error a simulated call reverts with (None: it would succeed)."""
    try:
        call.call({"from": sender})
    except Exception as exc:  # web3's ContractCustomError carries the revert data
        data = getattr(exc, "data", None)
        raw = data.get("data") if isinstance(data, dict) else data
        return decode_revert(bytes.fromhex(str(raw)[2:]))
    return None


def test_required_consent_matches_the_registry(world: World, harness: Harness) -> None:
    """`required_consent` answers what `AgreementRegistry` demands for every scenario, tier and
    party: each policy but the required one is refused naming it, the required one accepted
    (simulated proposals: nothing is recorded)."""
    registry = world.ledger.contract("AgreementRegistry").functions.propose
    for scenario in Scenario:
        for tier in Tier:
            for requester in (world.institute, world.hospital):
                required = required_consent(scenario, tier, requester != world.hospital)
                for policy in ConsentPolicy:
                    terms = replace(
                        world.research_terms(), datasets=(IDENTIFIED_DATASET,), scenario=scenario,
                        max_tier=tier, requester=requester, consent_policy=policy,
                    )  # fmt: skip
                    refused = _refusal(registry(terms.as_abi()), world.steward.address)
                    if refused is not None and refused.name == "AgreementRegistryTierAboveCeiling":
                        continue  # the scenario never reaches this tier
                    case = f"{scenario.name} {tier.name} cross={requester != world.hospital}"
                    if policy == required:
                        assert refused is None, f"{case}: {policy.name} refused ({refused})"
                    else:
                        assert refused is not None, f"{case}: {policy.name} accepted"
                        assert refused.name == "AgreementRegistryConsentPolicyMismatch", case
                        assert refused.args["required"] == required, case


def test_suspension_is_honoured_and_resumption_too(world: World, harness: Harness) -> None:
    agreement = world.activate(world.research_terms())
    assert harness.run(agreement, Ask()).granted
    world.ledger.transact(world.steward, "AgreementRegistry", "suspend", agreement, keccak(b"x"))
    assert harness.run(agreement, Ask()).reasons == (R.AGREEMENT_NOT_ACTIVE,)
    world.ledger.transact(world.steward, "AgreementRegistry", "resume", agreement)
    assert harness.run(agreement, Ask()).granted


# --- random cases ---------------------------------------------------------------------------

#: Agreements drawn from (the live ones more often), and for each a request it grants.
POOL = ("open", "cohort", "insurance", "transfer") * 3 + (
    "future",
    "suspended",
    "superseded",
    "lapsed",
    "expired",
)
GOOD = {
    "cohort": Ask(tier=Tier.PSEUDONYMIZED, cohort_root=ROOT, cohort_size=57),
    "insurance": Ask(authorization_ref=AUTH, cohort_root=PATIENT_ROOT, cohort_size=1),
    "transfer": Ask(tier=Tier.IDENTIFIED, authorization_ref=GLASS, cohort_root=PATIENT_ROOT,
                    cohort_size=1),
}  # fmt: skip
#: What a drawn case may change in the good request: zero to three of these.
CHANGES: dict[str, st.SearchStrategy[Any]] = {
    "dataset": st.just(UNKNOWN_DATASET),
    "field_mask": st.integers(min_value=0, max_value=0x1FF),
    "tier": st.sampled_from(Tier),
    "operation": st.sampled_from(Operation),
    "deadline_offset": st.sampled_from([-3_600, -120]),
    "signer": st.sampled_from(["outsider", "partner_steward", "gateway"]),
    "cohort_root": st.sampled_from([ZERO, ROOT, PATIENT_ROOT]),
    "cohort_size": st.sampled_from([0, 1, 2, 57]),
    "authorization_ref": st.sampled_from([ZERO, AUTH, NEVER_ISSUED, GLASS, GLASS_UNKNOWN_REASON]),
    "code_tier": st.sampled_from([Tier.AGGREGATE, Tier.DEIDENTIFIED]),
}


@st.composite
def random_cases(draw: st.DrawFn) -> tuple[str, Ask]:
    agreement = draw(st.sampled_from(POOL))
    # Clinical-care codes exist only at IDENTIFIED: a lower code tier is never issued.
    names = sorted(n for n in CHANGES if not (agreement == "transfer" and n == "code_tier"))
    changed = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
    ask = replace(GOOD.get(agreement, Ask()), **{name: draw(CHANGES[name]) for name in changed})
    return agreement, ask


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=random_cases())
def test_random_cases_agree(
    harness: Harness, agreements: Agreements, case: tuple[str, Ask]
) -> None:
    agreement, ask = case
    outcome = harness.run(agreements.named(agreement), ask)
    event(f"{agreement}: {outcome.reason.name}")
