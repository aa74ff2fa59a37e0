"""What patients permit, decided in pure Python: which subjects of a cohort are admitted, and
whether an access may redeem a patient's authorization code.

No web3, HTTP or database here (like `ledger_gateway.policy`), so every rule is tested
exhaustively in microseconds:

- `admits` / `admit_cohort` mirror `ConsentRegistry.hasConsent`: a subject is admitted iff it
  has a GRANTED consent at the agreement's holder whose scenarios contain the agreement's
  scenario and whose window `validFrom <= now <= validUntil` holds. A withdrawal the gateway has
  relayed but not yet seen mined counts as withdrawn already (`withdrawn_pending`).
- `authorization_fault` mirrors `ConsentRegistry._faultOf` rule for rule and in the same order,
  so a fault named here is the one `AccessLogAuthorizationRefused` would carry; a code the
  gateway has reserved for an access still in its outbox counts as REDEEMED.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from dul.cohort import leaf_hash
from dul.domain import AuthorizationFault, AuthorizationStatus, ConsentStatus, Scenario, Tier

ZERO32 = bytes(32)


@dataclass(frozen=True)
class ConsentState:
    """One consent as the registry recorded it (and its status since)."""

    consent_id: bytes
    holder: bytes
    subject: bytes
    scenarios: int
    """Bit set `1 << Scenario`."""
    status: ConsentStatus
    valid_from: int
    valid_until: int
    subject_key: str | None = None
    """The patient's own key, which may sign a withdrawal (None: the steward withdraws)."""
    duo_codes: tuple[int, ...] = ()


@dataclass(frozen=True)
class AuthorizationState:
    """One authorization code as the registry keeps it, keyed by the code's hash."""

    code_hash: bytes
    holder: bytes
    subject: bytes
    grantee: bytes
    dataset: bytes
    field_mask: int
    tier: Tier
    scenario: Scenario
    status: AuthorizationStatus
    expires_at: int
    redeemed_by: bytes = ZERO32


@dataclass(frozen=True)
class RedemptionFacts:
    """What an access would redeem an authorization with (the arguments of
    `ConsentRegistry.redeemAuthorization` that AccessLog passes)."""

    holder: bytes
    """The agreement's holder."""
    grantee: bytes
    """The agreement's requesting organization."""
    dataset_id: bytes
    field_mask: int
    tier: Tier
    cohort_root: bytes


def covers(consent: ConsentState, holder: bytes, scenario: Scenario, now: int) -> bool:
    """Whether this one consent admits its subject for `scenario` at `holder` at time `now`."""
    return (
        consent.status == ConsentStatus.GRANTED
        and consent.holder == holder
        and bool(consent.scenarios >> scenario & 1)
        and consent.valid_from <= now <= consent.valid_until
    )


def admits(
    consents: Iterable[ConsentState],
    holder: bytes,
    scenario: Scenario,
    now: int,
    withdrawn_pending: Collection[bytes] = (),
) -> bool:
    """Whether a subject with `consents` is admitted (`hasConsent`; pending withdrawals count)."""
    return any(
        covers(c, holder, scenario, now) and c.consent_id not in withdrawn_pending for c in consents
    )


def admit_cohort(
    subjects: Iterable[bytes],
    consents_by_subject: Mapping[bytes, Sequence[ConsentState]],
    holder: bytes,
    scenario: Scenario,
    now: int,
    withdrawn_pending: Collection[bytes] = (),
) -> tuple[list[bytes], int]:
    """The admitted subjects (distinct, ascending: the cohort tree's leaf order) and how many
    distinct named subjects were left out. A dict lookup per subject: 10,000 take ~2 ms."""
    named = set(subjects)
    admitted = []
    for subject in named:
        found = consents_by_subject.get(subject)
        if found and admits(found, holder, scenario, now, withdrawn_pending):
            admitted.append(subject)
    admitted.sort()
    return admitted, len(named) - len(admitted)


def authorization_fault(
    authorization: AuthorizationState | None,
    reserved: bool,
    request: RedemptionFacts,
    now: int,
) -> AuthorizationFault:
    """The first reason `request` may not redeem `authorization`, in `_faultOf`'s order
    (NONE: it may). `reserved`: another access the gateway granted holds the code already."""
    a = authorization
    if a is None or a.status == AuthorizationStatus.NONE:
        return AuthorizationFault.UNKNOWN
    if a.status == AuthorizationStatus.REDEEMED or reserved:
        return AuthorizationFault.REDEEMED
    if a.status == AuthorizationStatus.REVOKED:
        return AuthorizationFault.REVOKED
    if now > a.expires_at:
        return AuthorizationFault.EXPIRED
    if a.holder != request.holder:
        return AuthorizationFault.WRONG_HOLDER
    if a.grantee != request.grantee:
        return AuthorizationFault.WRONG_GRANTEE
    if a.dataset != request.dataset_id:
        return AuthorizationFault.DATASET_NOT_IN_SCOPE
    if request.field_mask == 0 or request.field_mask & ~a.field_mask:
        return AuthorizationFault.FIELDS_NOT_IN_SCOPE
    if request.tier > a.tier:
        return AuthorizationFault.TIER_ABOVE_SCOPE
    if request.cohort_root != leaf_hash(a.subject):
        return AuthorizationFault.WRONG_SUBJECT
    return AuthorizationFault.NONE
