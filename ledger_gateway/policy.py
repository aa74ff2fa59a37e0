"""The policy core: may this access proceed, and if not, every reason why.

Pure Python — no web3, HTTP or database — so it is tested exhaustively in microseconds. It
mirrors `AccessLog._checkGrant` rule for rule and in the same order: the first reason is the one
the chain would refuse with, so a GRANTED answer here is one the chain will record. What patients
permit (consents, authorization codes) is decided in `ledger_gateway.consent_policy`; its outcome
reaches `decide` as the cohort and the authorization fault of `RequestFacts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from dul.contracts.typed_data import AccessRequest
from dul.domain import (
    AgreementStatus,
    AuthorizationFault,
    BreakGlassReason,
    ConsentPolicy,
    Decision,
    DenyReason,
    Operation,
    ReleaseKind,
    Scenario,
    Tier,
    break_glass_reason,
    is_break_glass,
)


@dataclass(frozen=True)
class AgreementState:
    """What the chain says about an agreement (its stored status; expiry is computed here)."""

    agreement_id: bytes
    status: AgreementStatus
    scenario: Scenario
    max_tier: Tier
    operations: int
    consent_policy: ConsentPolicy
    valid_from: int
    valid_until: int
    quota: int
    holder: bytes
    requester: bytes
    allowed_fields: Mapping[bytes, int]
    """dataset id -> bit set of allowed field indices."""
    break_glass_review_hours: int = 0
    """0: no break-glass; else the hours a holder steward has to review each one."""


class RequestFacts(NamedTuple):
    """One signed access request and what the gateway established about it.

    A named tuple: the gateway makes one per request it decides, and a frozen dataclass of ten
    fields cost ~1.3 µs (one `object.__setattr__` a field), this ~0.4 µs."""

    dataset_id: bytes
    field_mask: int
    tier: Tier
    operation: Operation
    deadline: int
    requester_is_member: bool
    """Whether the signer is an active REQUESTER of the agreement's requesting organization."""
    cohort_size: int = 0
    cohort_root: bytes = bytes(32)
    authorization_ref: bytes = bytes(32)
    authorization_fault: AuthorizationFault = AuthorizationFault.NONE
    """Why the record may not redeem `authorization_ref` (see `consent_policy.authorization_fault`);
    read only under PATIENT_AUTHORIZATION agreements, where the chain redeems the code."""

    @classmethod
    def of(
        cls,
        request: AccessRequest,
        *,
        requester_is_member: bool,
        cohort_size: int,
        cohort_root: bytes,
        authorization_ref: bytes,
        authorization_fault: AuthorizationFault = AuthorizationFault.NONE,
    ) -> RequestFacts:
        """The signed request's own terms, plus what the gateway established about it."""
        return cls(
            request.dataset_id, request.field_mask, request.tier, request.operation,
            request.deadline, requester_is_member, cohort_size, cohort_root, authorization_ref,
            authorization_fault,
        )  # fmt: skip


@dataclass(frozen=True)
class PolicyDecision:
    decision: Decision
    reasons: tuple[DenyReason, ...]

    @property
    def granted(self) -> bool:
        return self.decision == _GRANTED_DECISION

    @property
    def reason(self) -> DenyReason:
        """The reason recorded on chain: the first rule broken (NONE when granted)."""
        return self.reasons[0] if self.reasons else _NO_REASON


# The members every decision compares with, read once: on Python 3.11 `EnumType.__getattr__`
# sends each `Enum.MEMBER` read through the slow attribute hook (~0.1 µs, where a module
# name is ~5 ns), and a grant read a dozen of them between this module and the gateway's.
_GRANTED_DECISION = Decision.GRANTED
_NO_REASON = DenyReason.NONE
_ACTIVE = AgreementStatus.ACTIVE
_COHORT_CONSENT = ConsentPolicy.COHORT_CONSENT
_PATIENT_AUTHORIZATION = ConsentPolicy.PATIENT_AUTHORIZATION
_NO_FAULT = AuthorizationFault.NONE

_GRANTED = PolicyDecision(Decision.GRANTED, ())
"""Every grant's decision (immutable, so one serves all)."""
_ZERO32 = bytes(32)


def effective_status(agreement: AgreementState, now: int) -> AgreementStatus:
    """Expiry needs no transaction: a window that is over ends the agreement."""
    live = agreement.status in (AgreementStatus.ACTIVE, AgreementStatus.SUSPENDED)
    if live and now > agreement.valid_until:
        return AgreementStatus.EXPIRED
    return agreement.status


def decide(
    agreement: AgreementState, request: RequestFacts, *, now: int, used: int
) -> PolicyDecision:
    """Every rule the agreement imposes on `request` at time `now` with `used` grants so far."""
    reasons: list[DenyReason] = []
    # The chain refuses a GRANTED record whose signed request has expired before any agreement
    # rule (`AccessLogRequestExpired`); no DenyReason names it, so it is recorded as POLICY_OTHER.
    if request.deadline < now:
        reasons.append(DenyReason.POLICY_OTHER)
    if agreement.status != _ACTIVE:
        reasons.append(DenyReason.AGREEMENT_NOT_ACTIVE)
    if not agreement.valid_from <= now <= agreement.valid_until:
        reasons.append(DenyReason.OUTSIDE_WINDOW)
    if not request.requester_is_member:
        reasons.append(DenyReason.REQUESTER_NOT_AUTHORIZED)
    allowed = agreement.allowed_fields.get(request.dataset_id, 0)
    if allowed == 0:
        reasons.append(DenyReason.DATASET_NOT_IN_SCOPE)
    elif request.field_mask == 0 or request.field_mask & ~allowed:
        reasons.append(DenyReason.FIELDS_NOT_IN_SCOPE)
    if request.tier > agreement.max_tier:
        reasons.append(DenyReason.TIER_ABOVE_CEILING)
    if not agreement.operations & (1 << request.operation):
        reasons.append(DenyReason.OPERATION_NOT_ALLOWED)
    policy = agreement.consent_policy
    no_cohort = request.cohort_size == 0 or request.cohort_root == _ZERO32
    no_authorization = request.authorization_ref == _ZERO32 or request.cohort_size != 1
    breaks_glass = is_break_glass(request.authorization_ref)
    if breaks_glass:
        # `AccessLogBreakGlassRefused`: an agreement that allows it, one patient, a known reason.
        allowed = (
            agreement.break_glass_review_hours != 0
            and request.cohort_size == 1
            and request.cohort_root != _ZERO32
            and break_glass_reason(request.authorization_ref) != BreakGlassReason.NONE
        )
        if not allowed:
            reasons.append(DenyReason.AUTHORIZATION_INVALID)
    elif policy == _COHORT_CONSENT and no_cohort:
        reasons.append(DenyReason.CONSENT_MISSING)
    elif policy == _PATIENT_AUTHORIZATION and no_authorization:
        reasons.append(DenyReason.AUTHORIZATION_INVALID)
    if used >= agreement.quota:
        reasons.append(DenyReason.QUOTA_EXHAUSTED)
    # The chain redeems the code last, after the quota (`AccessLog._redeem`), so a refused
    # record never uses up a patient's code; a fault there is AUTHORIZATION_INVALID too.
    redeems = policy == _PATIENT_AUTHORIZATION and not no_authorization and not breaks_glass
    if redeems and request.authorization_fault != _NO_FAULT:
        reasons.append(DenyReason.AUTHORIZATION_INVALID)
    if reasons:
        return PolicyDecision(Decision.DENIED, tuple(reasons))
    return _GRANTED


def releasable(kind: ReleaseKind, tier: Tier, operation: Operation) -> bool:
    """Mirror of `AccessRules.releasable`: what a granted access may let leave the hospital."""
    if kind == ReleaseKind.AGGREGATE_RESULT:
        return operation != Operation.TRAIN
    if kind == ReleaseKind.MODEL_UPDATE:
        return operation == Operation.TRAIN
    if operation != Operation.EXPORT_RESULT:
        return False
    minimum = {
        ReleaseKind.DEIDENTIFIED_EXTRACT: Tier.DEIDENTIFIED,
        ReleaseKind.PSEUDONYMIZED_EXTRACT: Tier.PSEUDONYMIZED,
        ReleaseKind.IDENTIFIED_EXTRACT: Tier.IDENTIFIED,
    }[kind]
    return tier >= minimum
