"""The policy core, rule by rule: table tests for every rule and edge, and property-based tests
(granted iff no reasons, monotonicity, canonical order, agreement with a reference model).

The canonical order is `AccessLog._checkGrant`'s: reasons[0] is the error the chain refuses a
GRANTED record with. `tests/integration/test_policy_matches_chain.py` runs cases through both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dul.domain import (
    AgreementStatus,
    AuthorizationFault,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    Scenario,
    Tier,
    break_glass_ref,
    operations_mask,
)
from dul.domain import BreakGlassReason as G
from ledger_gateway.policy import (
    AgreementState,
    PolicyDecision,
    RequestFacts,
    decide,
    effective_status,
)

R = DenyReason
ZERO = bytes(32)
DATASET = b"hospital-a/omop-cdm".ljust(32, b"\0")
OTHER_DATASET = b"hospital-b/omop-cdm".ljust(32, b"\0")
ALLOWED = 0b0001_1110
VALID_FROM = 1_000_000
VALID_UNTIL = 2_000_000
NOW = 1_500_000
QUOTA = 10
ROOT = b"\x11" * 32
AUTH = b"\x22" * 32

#: The order in which `AccessLog._checkGrant` refuses (POLICY_OTHER: the request's deadline).
CHAIN_ORDER: tuple[DenyReason, ...] = (
    R.POLICY_OTHER,
    R.AGREEMENT_NOT_ACTIVE,
    R.OUTSIDE_WINDOW,
    R.REQUESTER_NOT_AUTHORIZED,
    R.DATASET_NOT_IN_SCOPE,
    R.FIELDS_NOT_IN_SCOPE,
    R.TIER_ABOVE_CEILING,
    R.OPERATION_NOT_ALLOWED,
    R.CONSENT_MISSING,
    R.AUTHORIZATION_INVALID,
    R.QUOTA_EXHAUSTED,
)

AGREEMENT = AgreementState(
    agreement_id=b"\xaa" * 32,
    status=AgreementStatus.ACTIVE,
    scenario=Scenario.RESEARCH,
    max_tier=Tier.DEIDENTIFIED,
    operations=operations_mask(Operation.QUERY, Operation.EXPORT_RESULT),
    consent_policy=ConsentPolicy.NONE,
    valid_from=VALID_FROM,
    valid_until=VALID_UNTIL,
    quota=QUOTA,
    holder=b"hospital-a".ljust(32, b"\0"),
    requester=b"institute".ljust(32, b"\0"),
    allowed_fields={DATASET: ALLOWED},
)

REQUEST = RequestFacts(
    dataset_id=DATASET,
    field_mask=0b0110,
    tier=Tier.DEIDENTIFIED,
    operation=Operation.QUERY,
    deadline=10 * VALID_UNTIL,
    requester_is_member=True,
)

COHORT = replace(
    AGREEMENT, max_tier=Tier.PSEUDONYMIZED, consent_policy=ConsentPolicy.COHORT_CONSENT
)
INSURANCE = replace(
    AGREEMENT,
    scenario=Scenario.INSURANCE_CLAIM,
    consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
)
#: Identified clinical care by another organization that allows break-glass (24 h review).
TRANSFER = replace(
    AGREEMENT,
    scenario=Scenario.CLINICAL_CARE,
    max_tier=Tier.IDENTIFIED,
    consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
    break_glass_review_hours=24,
)
GLASS = break_glass_ref(G.PATIENT_INCAPACITATED)
GLASS_UNKNOWN = GLASS[:31] + b"\x09"


def test_the_base_case_is_granted() -> None:
    result = decide(AGREEMENT, REQUEST, now=NOW, used=0)
    assert result == PolicyDecision(Decision.GRANTED, ())
    assert result.granted
    assert result.reason == R.NONE


def test_chain_order_names_every_reason_but_none() -> None:
    assert set(CHAIN_ORDER) == set(DenyReason) - {R.NONE}
    assert len(CHAIN_ORDER) == len(set(CHAIN_ORDER))


# --- table: one case per rule --------------------------------------------------------------


class Case:
    """An agreement and a request that differ from the base case in a few fields."""

    def __init__(
        self,
        case_id: str,
        expected: tuple[DenyReason, ...],
        *,
        agreement: AgreementState = AGREEMENT,
        now: int = NOW,
        used: int = 0,
        **request: Any,
    ) -> None:
        self.case_id = case_id
        self.expected = expected
        self.agreement = agreement
        self.request = REQUEST._replace(**request)
        self.now = now
        self.used = used


def _status(status: AgreementStatus) -> AgreementState:
    return replace(AGREEMENT, status=status)


CASES: tuple[Case, ...] = (
    # agreement status
    Case("status-active", ()),
    *(
        Case(f"status-{s.name.lower()}", (R.AGREEMENT_NOT_ACTIVE,), agreement=_status(s))
        for s in AgreementStatus
        if s != AgreementStatus.ACTIVE
    ),
    # window: both ends inclusive
    Case("window-before-from", (R.OUTSIDE_WINDOW,), now=VALID_FROM - 1),
    Case("window-at-from", (), now=VALID_FROM),
    Case("window-at-until", (), now=VALID_UNTIL),
    Case("window-after-until", (R.OUTSIDE_WINDOW,), now=VALID_UNTIL + 1),
    Case("window-long-after", (R.OUTSIDE_WINDOW,), now=VALID_UNTIL + 86_400),
    # the request's own deadline (inclusive, like the chain's `deadline < block.timestamp`)
    Case("deadline-now", (), deadline=NOW),
    Case("deadline-past", (R.POLICY_OTHER,), deadline=NOW - 1),
    Case("deadline-zero", (R.POLICY_OTHER,), deadline=0),
    # requester
    Case("requester-not-member", (R.REQUESTER_NOT_AUTHORIZED,), requester_is_member=False),
    # dataset and fields (minimum necessary)
    Case("dataset-absent", (R.DATASET_NOT_IN_SCOPE,), dataset_id=OTHER_DATASET),
    Case(
        "dataset-listed-with-zero-mask",
        (R.DATASET_NOT_IN_SCOPE,),
        agreement=replace(AGREEMENT, allowed_fields={DATASET: 0}),
    ),
    Case(
        "dataset-absent-mask-zero",
        (R.DATASET_NOT_IN_SCOPE,),
        dataset_id=OTHER_DATASET,
        field_mask=0,
    ),
    Case("fields-all-allowed", (), field_mask=ALLOWED),
    Case("fields-one-allowed", (), field_mask=0b0_0010),
    Case("fields-mask-zero", (R.FIELDS_NOT_IN_SCOPE,), field_mask=0),
    Case("fields-bit-0-outside", (R.FIELDS_NOT_IN_SCOPE,), field_mask=ALLOWED | 0b1),
    Case("fields-bit-5-outside", (R.FIELDS_NOT_IN_SCOPE,), field_mask=0b10_0010),
    Case("fields-bit-255-outside", (R.FIELDS_NOT_IN_SCOPE,), field_mask=(1 << 255) | 0b10),
    Case("fields-only-outside", (R.FIELDS_NOT_IN_SCOPE,), field_mask=0b1000_0000),
    # tier against the agreement's ceiling
    Case("tier-aggregate", (), tier=Tier.AGGREGATE),
    Case("tier-equal-max", (), tier=Tier.DEIDENTIFIED),
    Case("tier-one-above", (R.TIER_ABOVE_CEILING,), tier=Tier.PSEUDONYMIZED),
    Case("tier-identified", (R.TIER_ABOVE_CEILING,), tier=Tier.IDENTIFIED),
    # operations
    Case("operation-query", (), operation=Operation.QUERY),
    Case("operation-export", (), operation=Operation.EXPORT_RESULT),
    Case("operation-train", (R.OPERATION_NOT_ALLOWED,), operation=Operation.TRAIN),
    Case(
        "operation-train-only-agreement-query",
        (R.OPERATION_NOT_ALLOWED,),
        agreement=replace(AGREEMENT, operations=operations_mask(Operation.TRAIN)),
    ),
    Case(
        "operation-train-only-agreement-train",
        (),
        agreement=replace(AGREEMENT, operations=operations_mask(Operation.TRAIN)),
        operation=Operation.TRAIN,
    ),
    # consent policy NONE ignores cohort and authorization
    Case("consent-none-without-cohort", ()),
    Case("consent-none-with-cohort", (), cohort_root=ROOT, cohort_size=40),
    Case("consent-none-with-authorization", (), authorization_ref=AUTH, cohort_size=1),
    # COHORT_CONSENT: a cohort root and a non-zero size
    Case("cohort-present", (), agreement=COHORT, cohort_root=ROOT, cohort_size=40),
    Case("cohort-of-one", (), agreement=COHORT, cohort_root=ROOT, cohort_size=1),
    Case("cohort-missing", (R.CONSENT_MISSING,), agreement=COHORT),
    Case("cohort-no-root", (R.CONSENT_MISSING,), agreement=COHORT, cohort_size=40),
    Case("cohort-size-zero", (R.CONSENT_MISSING,), agreement=COHORT, cohort_root=ROOT),
    Case(
        "cohort-authorization-is-no-cohort",
        (R.CONSENT_MISSING,),
        agreement=COHORT,
        authorization_ref=AUTH,
    ),
    # PATIENT_AUTHORIZATION: an authorization code for exactly one patient
    Case(
        "authorization-present",
        (),
        agreement=INSURANCE,
        authorization_ref=AUTH,
        cohort_root=ROOT,
        cohort_size=1,
    ),
    Case(
        "authorization-without-root",
        (),
        agreement=INSURANCE,
        authorization_ref=AUTH,
        cohort_size=1,
    ),
    Case("authorization-missing", (R.AUTHORIZATION_INVALID,), agreement=INSURANCE),
    Case(
        "authorization-no-ref",
        (R.AUTHORIZATION_INVALID,),
        agreement=INSURANCE,
        cohort_root=ROOT,
        cohort_size=1,
    ),
    Case(
        "authorization-size-zero",
        (R.AUTHORIZATION_INVALID,),
        agreement=INSURANCE,
        authorization_ref=AUTH,
    ),
    Case(
        "authorization-size-two",
        (R.AUTHORIZATION_INVALID,),
        agreement=INSURANCE,
        authorization_ref=AUTH,
        cohort_size=2,
    ),
    # clinical transfers: the patient's code, or break-glass where the agreement allows it
    Case("transfer-code", (), agreement=TRANSFER, authorization_ref=AUTH, cohort_size=1),
    Case("transfer-no-code", (R.AUTHORIZATION_INVALID,), agreement=TRANSFER),
    Case(
        "transfer-break-glass",
        (),
        agreement=TRANSFER,
        authorization_ref=GLASS,
        cohort_root=ROOT,
        cohort_size=1,
        tier=Tier.IDENTIFIED,
    ),
    Case(
        "transfer-break-glass-no-root",
        (R.AUTHORIZATION_INVALID,),
        agreement=TRANSFER,
        authorization_ref=GLASS,
        cohort_size=1,
    ),
    Case(
        "transfer-break-glass-two-patients",
        (R.AUTHORIZATION_INVALID,),
        agreement=TRANSFER,
        authorization_ref=GLASS,
        cohort_root=ROOT,
        cohort_size=2,
    ),
    Case(
        "transfer-break-glass-unknown-reason",
        (R.AUTHORIZATION_INVALID,),
        agreement=TRANSFER,
        authorization_ref=GLASS_UNKNOWN,
        cohort_root=ROOT,
        cohort_size=1,
    ),
    Case(
        "transfer-break-glass-not-allowed",
        (R.AUTHORIZATION_INVALID,),
        agreement=replace(TRANSFER, break_glass_review_hours=0),
        authorization_ref=GLASS,
        cohort_root=ROOT,
        cohort_size=1,
    ),
    Case(
        "research-break-glass",
        (R.AUTHORIZATION_INVALID,),
        authorization_ref=GLASS,
        cohort_root=ROOT,
        cohort_size=1,
    ),
    Case(
        "cohort-break-glass-hides-consent",
        (R.AUTHORIZATION_INVALID,),
        agreement=COHORT,
        authorization_ref=GLASS,
    ),
    # the code's fault is read only where a code is redeemed, never for break-glass
    Case(
        "transfer-break-glass-ignores-fault",
        (),
        agreement=TRANSFER,
        authorization_ref=GLASS,
        cohort_root=ROOT,
        cohort_size=1,
        authorization_fault=AuthorizationFault.UNKNOWN,
    ),
    # quota
    Case("quota-one-left", (), used=QUOTA - 1),
    Case("quota-spent", (R.QUOTA_EXHAUSTED,), used=QUOTA),
    Case("quota-overspent", (R.QUOTA_EXHAUSTED,), used=QUOTA + 5),
    Case("quota-of-one-unused", (), agreement=replace(AGREEMENT, quota=1), used=0),
    Case("quota-of-one-used", (R.QUOTA_EXHAUSTED,), agreement=replace(AGREEMENT, quota=1), used=1),
    # several rules at once: every reason, in the chain's order
    Case(
        "multi-status-and-window",
        (R.AGREEMENT_NOT_ACTIVE, R.OUTSIDE_WINDOW),
        agreement=_status(AgreementStatus.SUSPENDED),
        now=VALID_UNTIL + 1,
    ),
    Case(
        "multi-quota-and-tier",
        (R.TIER_ABOVE_CEILING, R.QUOTA_EXHAUSTED),
        tier=Tier.IDENTIFIED,
        used=QUOTA,
    ),
    Case(
        "multi-fields-operation-requester",
        (R.REQUESTER_NOT_AUTHORIZED, R.FIELDS_NOT_IN_SCOPE, R.OPERATION_NOT_ALLOWED),
        field_mask=0b1,
        operation=Operation.TRAIN,
        requester_is_member=False,
    ),
    Case(
        "multi-dataset-hides-fields",
        (R.DATASET_NOT_IN_SCOPE, R.TIER_ABOVE_CEILING),
        dataset_id=OTHER_DATASET,
        field_mask=0,
        tier=Tier.PSEUDONYMIZED,
    ),
    Case(
        "multi-consent-and-quota",
        (R.CONSENT_MISSING, R.QUOTA_EXHAUSTED),
        agreement=COHORT,
        used=QUOTA,
    ),
    Case(
        "multi-authorization-and-operation",
        (R.OPERATION_NOT_ALLOWED, R.AUTHORIZATION_INVALID),
        agreement=INSURANCE,
        operation=Operation.TRAIN,
    ),
    Case(
        "multi-deadline-first",
        (R.POLICY_OTHER, R.AGREEMENT_NOT_ACTIVE, R.REQUESTER_NOT_AUTHORIZED),
        agreement=_status(AgreementStatus.REVOKED),
        deadline=NOW - 1,
        requester_is_member=False,
    ),
    Case(
        "multi-everything",
        (
            R.POLICY_OTHER,
            R.AGREEMENT_NOT_ACTIVE,
            R.OUTSIDE_WINDOW,
            R.REQUESTER_NOT_AUTHORIZED,
            R.FIELDS_NOT_IN_SCOPE,
            R.TIER_ABOVE_CEILING,
            R.OPERATION_NOT_ALLOWED,
            R.CONSENT_MISSING,
            R.QUOTA_EXHAUSTED,
        ),
        agreement=replace(COHORT, status=AgreementStatus.PROPOSED, max_tier=Tier.AGGREGATE),
        now=VALID_FROM - 1,
        used=QUOTA,
        deadline=0,
        requester_is_member=False,
        field_mask=0b1_0000_0001,
        tier=Tier.IDENTIFIED,
        operation=Operation.TRAIN,
    ),
)


@pytest.mark.parametrize("case", CASES, ids=[c.case_id for c in CASES])
def test_table(case: Case) -> None:
    result = decide(case.agreement, case.request, now=case.now, used=case.used)
    assert result.reasons == case.expected
    assert result.decision == (Decision.DENIED if case.expected else Decision.GRANTED)
    assert result.reason == (case.expected[0] if case.expected else R.NONE)


def test_case_ids_are_unique() -> None:
    assert len({c.case_id for c in CASES}) == len(CASES)


def test_every_reason_is_reachable_alone() -> None:
    alone = {c.expected[0] for c in CASES if len(c.expected) == 1}
    assert alone == set(CHAIN_ORDER)


def test_every_reason_is_first_somewhere() -> None:
    assert {c.expected[0] for c in CASES if c.expected} == set(CHAIN_ORDER)


@pytest.mark.parametrize("operation", list(Operation), ids=[o.name for o in Operation])
@pytest.mark.parametrize("operations", range(8))
def test_each_operation_bit(operation: Operation, operations: int) -> None:
    agreement = replace(AGREEMENT, operations=operations)
    result = decide(agreement, REQUEST._replace(operation=operation), now=NOW, used=0)
    allowed = bool(operations >> int(operation) & 1)
    assert result.reasons == (() if allowed else (R.OPERATION_NOT_ALLOWED,))


@pytest.mark.parametrize("max_tier", list(Tier), ids=[t.name for t in Tier])
@pytest.mark.parametrize("tier", list(Tier), ids=[t.name for t in Tier])
def test_each_tier_against_each_ceiling(max_tier: Tier, tier: Tier) -> None:
    result = decide(
        replace(AGREEMENT, max_tier=max_tier), REQUEST._replace(tier=tier), now=NOW, used=0
    )
    assert result.granted == (tier <= max_tier)
    assert result.reasons in ((), (R.TIER_ABOVE_CEILING,))


@pytest.mark.parametrize("bit", range(8))
def test_each_single_field_bit(bit: int) -> None:
    result = decide(AGREEMENT, REQUEST._replace(field_mask=1 << bit), now=NOW, used=0)
    assert result.granted == bool(ALLOWED >> bit & 1)


def test_a_second_dataset_has_its_own_mask() -> None:
    agreement = replace(AGREEMENT, allowed_fields={DATASET: ALLOWED, OTHER_DATASET: 0b1})
    other = REQUEST._replace(dataset_id=OTHER_DATASET)
    assert decide(agreement, other._replace(field_mask=0b1), now=NOW, used=0).granted
    assert decide(agreement, other, now=NOW, used=0).reasons == (R.FIELDS_NOT_IN_SCOPE,)


# --- effective status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "now", "expected"),
    [
        (AgreementStatus.ACTIVE, VALID_FROM - 1, AgreementStatus.ACTIVE),
        (AgreementStatus.ACTIVE, VALID_UNTIL, AgreementStatus.ACTIVE),
        (AgreementStatus.ACTIVE, VALID_UNTIL + 1, AgreementStatus.EXPIRED),
        (AgreementStatus.SUSPENDED, VALID_UNTIL, AgreementStatus.SUSPENDED),
        (AgreementStatus.SUSPENDED, VALID_UNTIL + 1, AgreementStatus.EXPIRED),
        (AgreementStatus.PROPOSED, VALID_UNTIL + 1, AgreementStatus.PROPOSED),
        (AgreementStatus.REVOKED, VALID_UNTIL + 1, AgreementStatus.REVOKED),
        (AgreementStatus.SUPERSEDED, VALID_UNTIL + 1, AgreementStatus.SUPERSEDED),
        (AgreementStatus.EXPIRED, NOW, AgreementStatus.EXPIRED),
        (AgreementStatus.NONE, VALID_UNTIL + 1, AgreementStatus.NONE),
    ],
    ids=lambda v: str(getattr(v, "name", v)),
)
def test_effective_status(stored: AgreementStatus, now: int, expected: AgreementStatus) -> None:
    assert effective_status(_status(stored), now) == expected


def test_decide_reads_the_stored_status_like_the_chain() -> None:
    """`accessTerms` returns the stored status, so an ACTIVE agreement past its window is refused
    for the window first; a gateway that fed `effective_status` in would report the wrong rule."""
    late = VALID_UNTIL + 1
    assert effective_status(AGREEMENT, late) == AgreementStatus.EXPIRED
    assert decide(AGREEMENT, REQUEST, now=late, used=0).reasons == (R.OUTSIDE_WINDOW,)
    expired = _status(AgreementStatus.EXPIRED)
    assert decide(expired, REQUEST, now=late, used=0).reasons == (
        R.AGREEMENT_NOT_ACTIVE,
        R.OUTSIDE_WINDOW,
    )


# --- property-based ---------------------------------------------------------------------------

hashes = st.sampled_from([ZERO, ROOT, AUTH])
refs = st.sampled_from([ZERO, ROOT, AUTH, GLASS, GLASS_UNKNOWN])
datasets = st.sampled_from([DATASET, OTHER_DATASET])
masks = st.one_of(
    st.integers(min_value=0, max_value=0xFF),
    st.integers(min_value=0, max_value=(1 << 256) - 1),
)
# Time points and counts drawn near the edges the rules turn on.
times = st.one_of(
    st.sampled_from(
        [0, VALID_FROM - 1, VALID_FROM, NOW, VALID_UNTIL, VALID_UNTIL + 1, VALID_UNTIL * 2]
    ),
    st.integers(min_value=0, max_value=3 * VALID_UNTIL),
)


@st.composite
def agreements(draw: st.DrawFn) -> AgreementState:
    fields = draw(st.dictionaries(datasets, st.integers(min_value=0, max_value=0xFF), max_size=2))
    return replace(
        AGREEMENT,
        status=draw(st.sampled_from(AgreementStatus)),
        scenario=draw(st.sampled_from(Scenario)),
        max_tier=draw(st.sampled_from(Tier)),
        operations=draw(st.integers(min_value=0, max_value=7)),
        consent_policy=draw(st.sampled_from(ConsentPolicy)),
        quota=draw(st.integers(min_value=1, max_value=5)),
        allowed_fields=fields,
        break_glass_review_hours=draw(st.sampled_from([0, 24])),
    )


@st.composite
def requests(draw: st.DrawFn) -> RequestFacts:
    return RequestFacts(
        dataset_id=draw(datasets),
        field_mask=draw(masks),
        tier=draw(st.sampled_from(Tier)),
        operation=draw(st.sampled_from(Operation)),
        deadline=draw(times),
        requester_is_member=draw(st.booleans()),
        cohort_size=draw(st.sampled_from([0, 1, 2, 500])),
        cohort_root=draw(hashes),
        authorization_ref=draw(refs),
    )


usage = st.integers(min_value=0, max_value=6)

#: Each rule restated as "this reason applies when …", in the chain's order, independently of
#: `decide`: masks as sets of field indices, operations as a set of operations.


def _bits(mask: int) -> set[int]:
    return {i for i in range(mask.bit_length()) if mask >> i & 1}


def _scope(a: AgreementState, r: RequestFacts) -> int:
    return a.allowed_fields.get(r.dataset_id, 0)


Rule = Callable[[AgreementState, RequestFacts, int, int], bool]
REFERENCE: tuple[tuple[DenyReason, Rule], ...] = (
    (R.POLICY_OTHER, lambda a, r, now, used: now > r.deadline),
    (R.AGREEMENT_NOT_ACTIVE, lambda a, r, now, used: a.status is not AgreementStatus.ACTIVE),
    (R.OUTSIDE_WINDOW, lambda a, r, now, used: now < a.valid_from or now > a.valid_until),
    (R.REQUESTER_NOT_AUTHORIZED, lambda a, r, now, used: r.requester_is_member is False),
    (R.DATASET_NOT_IN_SCOPE, lambda a, r, now, used: not _bits(_scope(a, r))),
    (
        R.FIELDS_NOT_IN_SCOPE,
        lambda a, r, now, used: (
            bool(_bits(_scope(a, r)))
            and (not _bits(r.field_mask) or not _bits(r.field_mask) <= _bits(_scope(a, r)))
        ),
    ),
    (
        R.TIER_ABOVE_CEILING,
        lambda a, r, now, used: list(Tier).index(r.tier) > list(Tier).index(a.max_tier),
    ),
    (
        R.OPERATION_NOT_ALLOWED,
        lambda a, r, now, used: (
            r.operation not in {o for o in Operation if a.operations & 2**o.value}
        ),
    ),
    (
        R.CONSENT_MISSING,
        lambda a, r, now, used: (
            r.authorization_ref not in (GLASS, GLASS_UNKNOWN)
            and a.consent_policy is ConsentPolicy.COHORT_CONSENT
            and (r.cohort_root == ZERO or r.cohort_size < 1)
        ),
    ),
    (
        R.AUTHORIZATION_INVALID,
        lambda a, r, now, used: (
            not (
                r.authorization_ref == GLASS
                and a.break_glass_review_hours > 0
                and r.cohort_size == 1
                and r.cohort_root != ZERO
            )
            if r.authorization_ref in (GLASS, GLASS_UNKNOWN)
            else a.consent_policy is ConsentPolicy.PATIENT_AUTHORIZATION
            and not (r.authorization_ref != ZERO and r.cohort_size == 1)
        ),
    ),
    (R.QUOTA_EXHAUSTED, lambda a, r, now, used: a.quota - used <= 0),
)


def reference(a: AgreementState, r: RequestFacts, now: int, used: int) -> tuple[DenyReason, ...]:
    return tuple(reason for reason, broken in REFERENCE if broken(a, r, now, used))


def test_reference_model_is_in_chain_order() -> None:
    assert tuple(reason for reason, _ in REFERENCE) == CHAIN_ORDER


@settings(max_examples=400)
@given(agreements(), requests(), times, usage)
def test_granted_iff_no_reasons(a: AgreementState, r: RequestFacts, now: int, used: int) -> None:
    result = decide(a, r, now=now, used=used)
    assert (result.decision == Decision.GRANTED) == (result.reasons == ())
    assert result.decision in (Decision.GRANTED, Decision.DENIED)
    assert result.granted == (result.decision == Decision.GRANTED)
    assert R.NONE not in result.reasons
    assert result.reason == (result.reasons[0] if result.reasons else R.NONE)


@settings(max_examples=400)
@given(agreements(), requests(), times, usage)
def test_reasons_are_unique_and_in_chain_order(
    a: AgreementState, r: RequestFacts, now: int, used: int
) -> None:
    reasons = decide(a, r, now=now, used=used).reasons
    assert len(set(reasons)) == len(reasons)
    positions = [CHAIN_ORDER.index(reason) for reason in reasons]
    assert positions == sorted(positions)
    assert not {R.DATASET_NOT_IN_SCOPE, R.FIELDS_NOT_IN_SCOPE} <= set(reasons)
    assert not {R.CONSENT_MISSING, R.AUTHORIZATION_INVALID} <= set(reasons)


@settings(max_examples=1000)
@given(agreements(), requests(), times, usage)
def test_agrees_with_the_reference_model(
    a: AgreementState, r: RequestFacts, now: int, used: int
) -> None:
    assert decide(a, r, now=now, used=used).reasons == reference(a, r, now, used)


@st.composite
def granted_cases(draw: st.DrawFn) -> tuple[AgreementState, RequestFacts, int, int]:
    """A request the policy grants, built to satisfy every rule."""
    allowed = draw(st.integers(min_value=1, max_value=0xFF))
    max_tier = draw(st.sampled_from(Tier))
    policy = draw(st.sampled_from(ConsentPolicy))
    quota = draw(st.integers(min_value=1, max_value=20))
    operation = draw(st.sampled_from(Operation))
    agreement = replace(
        AGREEMENT,
        max_tier=max_tier,
        consent_policy=policy,
        quota=quota,
        operations=operations_mask(operation) | draw(st.integers(min_value=0, max_value=7)),
        allowed_fields={DATASET: allowed},
    )
    submask = draw(st.integers(min_value=1, max_value=0xFF).map(lambda m: m & allowed).filter(bool))
    request = REQUEST._replace(
        field_mask=submask,
        tier=draw(st.sampled_from([t for t in Tier if t <= max_tier])),
        operation=operation,
        cohort_root=ROOT,
        cohort_size=1 if policy == ConsentPolicy.PATIENT_AUTHORIZATION else 5,
        authorization_ref=AUTH,
    )
    now = draw(st.integers(min_value=VALID_FROM, max_value=VALID_UNTIL))
    request = request._replace(deadline=draw(st.integers(min_value=now, max_value=now + 10**6)))
    used = draw(st.integers(min_value=0, max_value=quota - 1))
    assert decide(agreement, request, now=now, used=used).granted
    return agreement, request, now, used


@settings(max_examples=300)
@given(granted_cases(), st.data())
def test_less_never_turns_a_grant_into_a_denial(
    case: tuple[AgreementState, RequestFacts, int, int], data: st.DataObject
) -> None:
    agreement, request, now, used = case
    mask = request.field_mask
    fewer_fields = data.draw(
        st.integers(min_value=1, max_value=0xFF).map(lambda m: m & mask).filter(bool),
        label="fewer fields",
    )
    lower_tier = data.draw(st.sampled_from([t for t in Tier if t <= request.tier]), label="tier")
    less_used = data.draw(st.integers(min_value=0, max_value=used), label="used")
    for smaller, fewer in (
        (request._replace(field_mask=fewer_fields), used),
        (request._replace(tier=lower_tier), used),
        (request, less_used),
        (request._replace(field_mask=fewer_fields, tier=lower_tier), less_used),
    ):
        assert decide(agreement, smaller, now=now, used=fewer).granted


@settings(max_examples=300)
@given(agreements(), requests(), times, usage, st.data())
def test_less_never_adds_a_reason(
    a: AgreementState, r: RequestFacts, now: int, used: int, data: st.DataObject
) -> None:
    """Stronger than monotonicity of the grant: asking for less only ever removes reasons
    (a non-empty subset of the fields, a lower tier, fewer grants used)."""
    before = set(decide(a, r, now=now, used=used).reasons)
    if r.field_mask:
        sub = data.draw(st.integers(min_value=0, max_value=r.field_mask)) & r.field_mask
        if sub:
            assert set(decide(a, r._replace(field_mask=sub), now=now, used=used).reasons) <= before
    tier = data.draw(st.sampled_from([t for t in Tier if t <= r.tier]))
    assert set(decide(a, r._replace(tier=tier), now=now, used=used).reasons) <= before
    fewer = data.draw(st.integers(min_value=0, max_value=used))
    assert set(decide(a, r, now=now, used=fewer).reasons) <= before


@settings(max_examples=100)
@given(agreements(), requests(), times, usage)
def test_decide_is_pure(a: AgreementState, r: RequestFacts, now: int, used: int) -> None:
    first = decide(a, r, now=now, used=used)
    assert decide(a, r, now=now, used=used) == first
    assert effective_status(a, now) == effective_status(a, now)
