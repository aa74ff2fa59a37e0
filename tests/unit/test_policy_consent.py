"""What patients permit, in pure Python: consent admission (`hasConsent`'s rules) and the
authorization fault (`ConsentRegistry._faultOf`'s order), rule by rule and by property, and how
both reach `decide` (AUTHORIZATION_INVALID after the quota, as the chain redeems last)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dul.cohort import CohortTree, leaf_hash
from dul.domain import (
    AgreementStatus,
    AuthorizationFault,
    AuthorizationStatus,
    ConsentPolicy,
    ConsentStatus,
    DenyReason,
    Operation,
    Scenario,
    Tier,
    operations_mask,
)
from ledger_gateway.consent_policy import (
    AuthorizationState,
    ConsentIndex,
    ConsentState,
    RedemptionFacts,
    Study,
    admit_cohort,
    admits,
    authorization_fault,
    covers,
    in_scope,
    judged_at,
    tree_root,
)
from ledger_gateway.policy import AgreementState, RequestFacts, decide

F = AuthorizationFault
HOLDER = b"hospital-a".ljust(32, b"\0")
OTHER_HOLDER = b"hospital-b".ljust(32, b"\0")
INSURER = b"insurer".ljust(32, b"\0")
OTHER_ORG = b"institute".ljust(32, b"\0")
DATASET = b"hospital-a/omop-cdm".ljust(32, b"\0")
OTHER_DATASET = b"hospital-a/labs".ljust(32, b"\0")
SUBJECT = b"\x5a" * 32
NOW = 1_700_000_000


def consent(**changes: object) -> ConsentState:
    base = ConsentState(
        consent_id=b"\x01" * 32,
        holder=HOLDER,
        subject=SUBJECT,
        scenarios=1 << Scenario.RESEARCH,
        status=ConsentStatus.GRANTED,
        valid_from=NOW - 100,
        valid_until=NOW + 100,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- admission


def test_a_granted_consent_for_the_scenario_inside_its_window_admits() -> None:
    assert covers(consent(), HOLDER, Scenario.RESEARCH, NOW)
    assert admits([consent()], HOLDER, Scenario.RESEARCH, NOW)


@pytest.mark.parametrize(
    ("changes", "scenario", "now"),
    [
        ({"status": ConsentStatus.WITHDRAWN}, Scenario.RESEARCH, NOW),
        ({"status": ConsentStatus.NONE}, Scenario.RESEARCH, NOW),
        ({"holder": OTHER_HOLDER}, Scenario.RESEARCH, NOW),
        ({}, Scenario.AI_TRAINING, NOW),  # another scenario
        ({"scenarios": 0}, Scenario.RESEARCH, NOW),
        ({}, Scenario.RESEARCH, NOW - 101),  # before validFrom
        ({}, Scenario.RESEARCH, NOW + 101),  # after validUntil
    ],
)
def test_each_rule_alone_excludes(changes: dict[str, object], scenario: Scenario, now: int) -> None:
    assert not covers(consent(**changes), HOLDER, scenario, now)
    assert not admits([consent(**changes)], HOLDER, scenario, now)


def test_the_window_is_inclusive_at_both_ends() -> None:
    c = consent()
    assert covers(c, HOLDER, Scenario.RESEARCH, c.valid_from)
    assert covers(c, HOLDER, Scenario.RESEARCH, c.valid_until)


def test_one_covering_consent_among_several_is_enough() -> None:
    withdrawn = consent(consent_id=b"\x02" * 32, status=ConsentStatus.WITHDRAWN)
    teaching = consent(consent_id=b"\x03" * 32, scenarios=1 << Scenario.TEACHING)
    both = consent(consent_id=b"\x04" * 32, scenarios=0b11111)
    assert not admits([withdrawn, teaching], HOLDER, Scenario.RESEARCH, NOW)
    assert admits([withdrawn, teaching, both], HOLDER, Scenario.RESEARCH, NOW)
    assert admits([withdrawn, teaching], HOLDER, Scenario.TEACHING, NOW)


def test_a_pending_withdrawal_counts_as_withdrawn() -> None:
    c = consent()
    assert not admits([c], HOLDER, Scenario.RESEARCH, NOW, withdrawn_pending={c.consent_id})
    other = consent(consent_id=b"\x09" * 32, scenarios=0b10)
    assert admits([c, other], HOLDER, Scenario.RESEARCH, NOW, withdrawn_pending={c.consent_id})


@given(wall=st.integers(0, 2**40), chain=st.none() | st.integers(0, 2**40))
def test_the_judging_time_is_this_clock_or_the_chains_head_whichever_is_later(
    wall: int, chain: int | None
) -> None:
    at = judged_at(wall, chain)
    assert at >= wall
    assert at in (wall, chain)
    assert chain is None or at >= chain


def test_at_a_head_ahead_of_this_clock_a_new_consent_admits_and_a_code_expires() -> None:
    fresh = consent(valid_from=NOW + 3)  # recorded in a block stamped 3 s ahead of this clock
    assert not admits([fresh], HOLDER, Scenario.RESEARCH, judged_at(NOW, None))
    assert not admits([fresh], HOLDER, Scenario.RESEARCH, judged_at(NOW, NOW - 1))
    assert admits([fresh], HOLDER, Scenario.RESEARCH, judged_at(NOW, NOW + 3))
    ending = consent(valid_until=NOW + 1)  # the cautious side: over at the chain's head
    assert not admits([ending], HOLDER, Scenario.RESEARCH, judged_at(NOW, NOW + 3))
    code = authorization(expires_at=NOW + 1)
    assert authorization_fault(code, False, redemption(), judged_at(NOW, NOW - 5)) == F.NONE
    assert authorization_fault(code, False, redemption(), judged_at(NOW, NOW + 3)) == F.EXPIRED


def test_admit_cohort_dedups_sorts_and_counts_the_excluded() -> None:
    subjects = [bytes([i]) * 32 for i in range(10)]
    consents = {s: [consent(subject=s, consent_id=s)] for s in subjects[::2]}
    named = [*reversed(subjects), subjects[0], subjects[1]]  # duplicates count once
    admitted, excluded = admit_cohort(named, consents, HOLDER, Scenario.RESEARCH, NOW)
    assert admitted == sorted(subjects[::2])
    assert excluded == 5
    assert admit_cohort([], consents, HOLDER, Scenario.RESEARCH, NOW) == ([], 0)
    # the admitted list is the cohort tree's leaf order
    assert list(CohortTree.build(admitted).subjects) == admitted


STUDY_A, STUDY_B = b"\xa1" * 32, b"\xb2" * 32
CANCER = b"MONDO:0007254".ljust(32, b"\0")
DIABETES = b"MONDO:0005015".ljust(32, b"\0")
ZERO = bytes(32)

consent_strategy = st.builds(
    ConsentState,
    consent_id=st.binary(min_size=32, max_size=32),
    holder=st.sampled_from([HOLDER, OTHER_HOLDER]),
    subject=st.sampled_from([bytes([i]) * 32 for i in range(6)]),
    scenarios=st.integers(0, 0b11111),
    status=st.sampled_from(list(ConsentStatus)),
    valid_from=st.integers(NOW - 50, NOW + 50),
    valid_until=st.integers(NOW - 50, NOW + 50),
    disease=st.sampled_from([ZERO, ZERO, CANCER, DIABETES]),
    studies=st.sampled_from(
        [frozenset(), frozenset(), frozenset({STUDY_A}), frozenset({STUDY_A, STUDY_B})]
    ),
    requesters=st.sampled_from(
        [frozenset(), frozenset(), frozenset({OTHER_ORG}), frozenset({INSURER, OTHER_ORG})]
    ),
)
study_strategy = st.builds(
    Study,
    agreement_id=st.sampled_from([STUDY_A, STUDY_B, b"\xc3" * 32]),
    requester=st.sampled_from([OTHER_ORG, INSURER]),
    disease=st.sampled_from([ZERO, CANCER, DIABETES]),
)


def test_a_study_specific_consent_admits_to_its_studies_only() -> None:
    mine = consent(studies=frozenset({STUDY_A}))
    assert covers(mine, HOLDER, Scenario.RESEARCH, NOW, Study(STUDY_A, OTHER_ORG))
    assert not covers(mine, HOLDER, Scenario.RESEARCH, NOW, Study(STUDY_B, OTHER_ORG))
    assert not covers(mine, HOLDER, Scenario.RESEARCH, NOW)  # no study named: not covered
    assert covers(consent(), HOLDER, Scenario.RESEARCH, NOW)  # unrestricted: any study


def test_a_requester_specific_consent_admits_to_their_studies_only() -> None:
    mine = consent(requesters=frozenset({OTHER_ORG}))
    assert in_scope(mine, Study(STUDY_A, OTHER_ORG))
    assert in_scope(mine, Study(STUDY_B, OTHER_ORG, CANCER))
    assert not in_scope(mine, Study(STUDY_A, INSURER))


def test_a_disease_specific_consent_admits_to_the_same_disease_term_only() -> None:
    mine = consent(disease=CANCER, duo_codes=(7,))
    assert in_scope(mine, Study(STUDY_A, OTHER_ORG, CANCER))
    assert not in_scope(mine, Study(STUDY_A, OTHER_ORG, DIABETES))
    assert not in_scope(mine, Study(STUDY_A, OTHER_ORG, ZERO))  # a general study: no
    assert in_scope(consent(), Study(STUDY_A, OTHER_ORG, CANCER))  # general consent: any disease


def test_every_limit_of_a_specific_consent_applies_at_once() -> None:
    mine = consent(studies=frozenset({STUDY_A}), requesters=frozenset({OTHER_ORG}), disease=CANCER)
    assert in_scope(mine, Study(STUDY_A, OTHER_ORG, CANCER))
    assert not in_scope(mine, Study(STUDY_A, INSURER, CANCER))
    assert not in_scope(mine, Study(STUDY_B, OTHER_ORG, CANCER))
    assert not in_scope(mine, Study(STUDY_A, OTHER_ORG, DIABETES))


@settings(max_examples=300, deadline=None)
@given(
    consents=st.lists(consent_strategy, max_size=12),
    named=st.lists(st.sampled_from([bytes([i]) * 32 for i in range(8)]), max_size=12),
    scenario=st.sampled_from(list(Scenario)),
    now=st.integers(NOW - 60, NOW + 60),
    pending=st.sets(st.binary(min_size=32, max_size=32), max_size=2),
    study=study_strategy,
)
def test_admit_cohort_matches_a_reference_model(
    consents: list[ConsentState],
    named: list[bytes],
    scenario: Scenario,
    now: int,
    pending: set[bytes],
    study: Study,
) -> None:
    pending |= {c.consent_id for c in consents[:1]}  # sometimes a real one is pending
    by_subject: dict[bytes, list[ConsentState]] = {}
    for c in consents:
        by_subject.setdefault(c.subject, []).append(c)
    admitted, excluded = admit_cohort(named, by_subject, HOLDER, scenario, now, pending, study)

    def reference(subject: bytes) -> bool:  # hasConsent plus the scope, written out
        for c in consents:
            if (
                c.subject == subject
                and c.holder == HOLDER
                and c.status == ConsentStatus.GRANTED
                and c.consent_id not in pending
                and c.scenarios & (1 << scenario) != 0
                and c.valid_from <= now
                and now <= c.valid_until
                and (not c.studies or study.agreement_id in c.studies)
                and (not c.requesters or study.requester in c.requesters)
                and (c.disease == ZERO or c.disease == study.disease)
            ):
                return True
        return False

    assert admitted == sorted({s for s in named if reference(s)})
    assert excluded == len(set(named)) - len(admitted)


@settings(max_examples=400, deadline=None)
@given(
    consents=st.lists(consent_strategy, max_size=12, unique_by=lambda c: c.consent_id),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["record", "mined", "relayed", "admit"]),
            st.integers(0, 11),
            st.integers(NOW - 60, NOW + 60),
        ),
        max_size=12,
    ),
    named=st.lists(st.sampled_from([bytes([i]) * 32 for i in range(8)]), max_size=12),
    scenario=st.sampled_from(list(Scenario)),
    study=study_strategy,
)
def test_the_consent_index_admits_as_admit_cohort_does(
    consents: list[ConsentState],
    steps: list[tuple[str, int, int]],
    named: list[bytes],
    scenario: Scenario,
    study: Study,
) -> None:
    """The gateway's index (with its covered-now cache) and the reference function agree through
    recordings, withdrawals mined and withdrawals relayed (pending), asked at any times."""
    index = ConsentIndex(HOLDER)
    current: dict[bytes, ConsentState] = {}
    pending: set[bytes] = set()

    def check(now: int) -> None:
        by_subject: dict[bytes, list[ConsentState]] = {}
        for c in current.values():
            by_subject.setdefault(c.subject, []).append(c)
        expected = admit_cohort(named, by_subject, HOLDER, scenario, now, pending, study)
        assert index.admit(named, scenario, now, study) == expected
        for subject, found in by_subject.items():
            shown = {c.consent_id: c.status for c in index.consents_of(subject)}
            assert shown == {
                c.consent_id: ConsentStatus.WITHDRAWN if c.consent_id in pending else c.status
                for c in found
            }

    for kind, at, now in steps:
        if kind == "admit" or not consents:
            check(now)
            continue
        c = consents[at % len(consents)]
        if kind == "record":
            index.add(c)
            if c.holder == HOLDER and c.consent_id not in current:
                current[c.consent_id] = c
        elif kind == "mined":
            index.set_status(c.consent_id, ConsentStatus.WITHDRAWN)
            if c.consent_id in current:
                current[c.consent_id] = replace(
                    current[c.consent_id], status=ConsentStatus.WITHDRAWN
                )
                pending.discard(c.consent_id)
        else:
            index.mark_withdrawn(c.consent_id)
            known = current.get(c.consent_id)
            if known is None or known.status == ConsentStatus.GRANTED:
                pending.add(c.consent_id)
    check(NOW)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.binary(min_size=32, max_size=32), min_size=1, max_size=70))
def test_the_root_from_kept_leaves_is_the_cohort_trees(subjects: set[bytes]) -> None:
    ordered = sorted(subjects)
    index = ConsentIndex(HOLDER)
    for s in ordered[::2]:  # some leaves kept, the others computed on the spot
        index.add(consent(subject=s, consent_id=s))
    assert index.root(ordered) == CohortTree.build(subjects).root
    assert tree_root([leaf_hash(s) for s in ordered]) == CohortTree.build(subjects).root


def test_a_withdrawal_relayed_before_its_consent_is_seen_still_counts() -> None:
    index = ConsentIndex(HOLDER)
    c = consent()
    index.mark_withdrawn(c.consent_id)  # the view has not caught up with the recording yet
    index.add(c)
    assert index.admit([SUBJECT], Scenario.RESEARCH, NOW) == ([], 1)
    index.set_status(c.consent_id, ConsentStatus.WITHDRAWN)  # then the withdrawal is mined
    assert index.withdrawn_pending == set()
    assert index.admit([SUBJECT], Scenario.RESEARCH, NOW) == ([], 1)


# --------------------------------------------------------------------------- authorization


def authorization(**changes: object) -> AuthorizationState:
    base = AuthorizationState(
        code_hash=b"\xc0" * 32,
        holder=HOLDER,
        subject=SUBJECT,
        grantee=INSURER,
        dataset=DATASET,
        field_mask=0b0110,
        tier=Tier.PSEUDONYMIZED,
        scenario=Scenario.INSURANCE_CLAIM,
        status=AuthorizationStatus.ISSUED,
        expires_at=NOW + 3_600,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def redemption(**changes: object) -> RedemptionFacts:
    base = RedemptionFacts(
        holder=HOLDER,
        grantee=INSURER,
        dataset_id=DATASET,
        field_mask=0b0110,
        tier=Tier.PSEUDONYMIZED,
        cohort_root=leaf_hash(SUBJECT),
        scenario=Scenario.INSURANCE_CLAIM,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_an_issued_code_that_fits_may_be_redeemed() -> None:
    assert authorization_fault(authorization(), False, redemption(), NOW) == F.NONE
    narrower = redemption(field_mask=0b0010, tier=Tier.AGGREGATE)
    assert authorization_fault(authorization(), False, narrower, NOW) == F.NONE
    assert authorization_fault(authorization(), False, redemption(), NOW + 3_600) == F.NONE


def test_a_multi_use_code_is_redeemed_again_and_never_reserved() -> None:
    multi = authorization(multi_use=True)
    assert authorization_fault(multi, True, redemption(), NOW) == F.NONE
    assert authorization_fault(multi, False, redemption(), NOW + 3_600) == F.NONE
    assert authorization_fault(multi, False, redemption(), NOW + 3_601) == F.EXPIRED
    revoked = authorization(multi_use=True, status=AuthorizationStatus.REVOKED)
    assert authorization_fault(revoked, False, redemption(), NOW) == F.REVOKED
    wrong = redemption(grantee=OTHER_ORG)
    assert authorization_fault(multi, False, wrong, NOW) == F.WRONG_GRANTEE


@pytest.mark.parametrize(
    ("found", "reserved", "facts", "fault"),
    [
        (None, False, {}, F.UNKNOWN),
        ({"status": AuthorizationStatus.NONE}, False, {}, F.UNKNOWN),
        ({"status": AuthorizationStatus.REDEEMED}, False, {}, F.REDEEMED),
        ({}, True, {}, F.REDEEMED),  # reserved by an access still in the outbox
        ({"status": AuthorizationStatus.REVOKED}, False, {}, F.REVOKED),
        ({"expires_at": NOW - 1}, False, {}, F.EXPIRED),
        ({}, False, {"holder": OTHER_HOLDER}, F.WRONG_HOLDER),
        ({}, False, {"grantee": OTHER_ORG}, F.WRONG_GRANTEE),
        ({}, False, {"dataset_id": OTHER_DATASET}, F.DATASET_NOT_IN_SCOPE),
        ({}, False, {"field_mask": 0}, F.FIELDS_NOT_IN_SCOPE),
        ({}, False, {"field_mask": 0b1110}, F.FIELDS_NOT_IN_SCOPE),
        ({}, False, {"tier": Tier.IDENTIFIED}, F.TIER_ABOVE_SCOPE),
        ({}, False, {"cohort_root": leaf_hash(b"\x01" * 32)}, F.WRONG_SUBJECT),
        ({}, False, {"cohort_root": SUBJECT}, F.WRONG_SUBJECT),  # the subject is not its leaf
        ({}, False, {"scenario": Scenario.CLINICAL_CARE}, F.WRONG_SCENARIO),
    ],
)
def test_each_fault_alone(
    found: dict[str, object] | None, reserved: bool, facts: dict[str, object], fault: F
) -> None:
    state = None if found is None else authorization(**found)
    assert authorization_fault(state, reserved, redemption(**facts), NOW) == fault


#: Each fault's breaking change, in `_faultOf`'s order (UNKNOWN is a missing authorization).
BREAKS: list[tuple[F, dict[str, object], dict[str, object]]] = [
    (F.REDEEMED, {"status": AuthorizationStatus.REDEEMED}, {}),
    (F.REVOKED, {"status": AuthorizationStatus.REVOKED}, {}),
    (F.EXPIRED, {"expires_at": NOW - 1}, {}),
    (F.WRONG_HOLDER, {}, {"holder": OTHER_HOLDER}),
    (F.WRONG_GRANTEE, {}, {"grantee": OTHER_ORG}),
    (F.DATASET_NOT_IN_SCOPE, {}, {"dataset_id": OTHER_DATASET}),
    (F.FIELDS_NOT_IN_SCOPE, {}, {"field_mask": 1 << 7}),
    (F.TIER_ABOVE_SCOPE, {}, {"tier": Tier.IDENTIFIED}),
    (F.WRONG_SUBJECT, {}, {"cohort_root": bytes(32)}),
    (F.WRONG_SCENARIO, {}, {"scenario": Scenario.CLINICAL_CARE}),
]


@settings(max_examples=300, deadline=None)
@given(chosen=st.sets(st.integers(0, len(BREAKS) - 1)), unknown=st.booleans())
def test_the_first_fault_in_chain_order_is_reported(chosen: set[int], unknown: bool) -> None:
    found: dict[str, object] = {}
    facts: dict[str, object] = {}
    for i in sorted(chosen):
        fault, state_change, fact_change = BREAKS[i]
        if fault == F.REVOKED and "status" in found:
            continue  # one status at a time: REDEEMED already holds it
        found.update(state_change)
        facts.update(fact_change)
    state = None if unknown else authorization(**found)
    got = authorization_fault(state, False, redemption(**facts), NOW)
    if unknown:
        assert got == F.UNKNOWN
    elif not chosen:
        assert got == F.NONE
    else:
        assert got == BREAKS[min(chosen)][0]
    assert [f for f, _, _ in BREAKS] == sorted(f for f, _, _ in BREAKS)  # enum order = check order


# --------------------------------------------------------------------------- into decide

AGREEMENT = AgreementState(
    agreement_id=b"\xaa" * 32,
    status=AgreementStatus.ACTIVE,
    scenario=Scenario.INSURANCE_CLAIM,
    max_tier=Tier.PSEUDONYMIZED,
    operations=operations_mask(Operation.QUERY, Operation.EXPORT_RESULT),
    consent_policy=ConsentPolicy.PATIENT_AUTHORIZATION,
    valid_from=NOW - 1_000,
    valid_until=NOW + 1_000,
    quota=10,
    holder=HOLDER,
    requester=INSURER,
    allowed_fields={DATASET: 0b1111},
)
REDEEM = RequestFacts(
    dataset_id=DATASET,
    field_mask=0b0110,
    tier=Tier.PSEUDONYMIZED,
    operation=Operation.QUERY,
    deadline=NOW + 600,
    requester_is_member=True,
    cohort_size=1,
    cohort_root=leaf_hash(SUBJECT),
    authorization_ref=b"\xc0" * 32,
)


def test_a_fault_denies_authorization_invalid_after_the_quota() -> None:
    assert decide(AGREEMENT, REDEEM, now=NOW, used=0).granted
    faulty = REDEEM._replace(authorization_fault=F.REDEEMED)
    assert decide(AGREEMENT, faulty, now=NOW, used=0).reasons == (DenyReason.AUTHORIZATION_INVALID,)
    both = decide(AGREEMENT, faulty, now=NOW, used=10)
    # the chain checks the quota before it redeems: QUOTA_EXHAUSTED is what it refuses with
    assert both.reasons == (DenyReason.QUOTA_EXHAUSTED, DenyReason.AUTHORIZATION_INVALID)
    missing = REDEEM._replace(authorization_ref=bytes(32), authorization_fault=F.UNKNOWN)
    # a missing code is refused before the quota, and named once
    assert decide(AGREEMENT, missing, now=NOW, used=10).reasons == (
        DenyReason.AUTHORIZATION_INVALID,
        DenyReason.QUOTA_EXHAUSTED,
    )


def test_a_fault_is_ignored_where_nothing_is_redeemed() -> None:
    for policy in (ConsentPolicy.NONE, ConsentPolicy.COHORT_CONSENT):
        agreement = replace(AGREEMENT, consent_policy=policy, scenario=Scenario.RESEARCH)
        facts = REDEEM._replace(authorization_fault=F.EXPIRED)
        assert decide(agreement, facts, now=NOW, used=0).granted


def test_an_empty_admitted_cohort_is_consent_missing() -> None:
    agreement = replace(
        AGREEMENT, consent_policy=ConsentPolicy.COHORT_CONSENT, scenario=Scenario.RESEARCH
    )
    empty = REDEEM._replace(cohort_size=0, cohort_root=bytes(32), authorization_ref=bytes(32))
    assert decide(agreement, empty, now=NOW, used=0).reasons == (DenyReason.CONSENT_MISSING,)
    tree = CohortTree.build([SUBJECT, b"\x01" * 32])
    some = empty._replace(cohort_size=tree.size, cohort_root=tree.root)
    assert decide(agreement, some, now=NOW, used=0).granted
