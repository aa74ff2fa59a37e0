"""The data space's vocabulary, mirrored from `solidity/contracts/types/DataUse.sol`.

The integer values are the on-chain encoding and part of the event schema: append only.
`tests/unit/test_domain.py` fails when the Solidity enums and these drift apart.
"""

from __future__ import annotations

from enum import IntEnum

from eth_hash.auto import keccak


class OrgKind(IntEnum):
    HOSPITAL = 0
    RESEARCH = 1
    AI_COMPANY = 2
    INSURER = 3
    REGULATOR = 4


class OrgStatus(IntEnum):
    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


class Role(IntEnum):
    STEWARD = 0
    REQUESTER = 1
    GATEWAY = 2
    REGULATOR = 3


class Tier(IntEnum):
    """Ordered least to most sensitive."""

    AGGREGATE = 0
    MODEL_PARAMETERS = 1
    DEIDENTIFIED = 2
    PSEUDONYMIZED = 3
    IDENTIFIED = 4


class Scenario(IntEnum):
    CLINICAL_CARE = 0
    RESEARCH = 1
    AI_TRAINING = 2
    TEACHING = 3
    INSURANCE_CLAIM = 4


class Operation(IntEnum):
    QUERY = 0
    TRAIN = 1
    EXPORT_RESULT = 2


class ConsentPolicy(IntEnum):
    NONE = 0
    COHORT_CONSENT = 1
    PATIENT_AUTHORIZATION = 2


class AgreementStatus(IntEnum):
    NONE = 0
    PROPOSED = 1
    ACTIVE = 2
    SUSPENDED = 3
    REVOKED = 4
    EXPIRED = 5
    SUPERSEDED = 6


class Decision(IntEnum):
    NONE = 0
    GRANTED = 1
    DENIED = 2


class DenyReason(IntEnum):
    NONE = 0
    AGREEMENT_NOT_ACTIVE = 1
    OUTSIDE_WINDOW = 2
    DATASET_NOT_IN_SCOPE = 3
    FIELDS_NOT_IN_SCOPE = 4
    TIER_ABOVE_CEILING = 5
    OPERATION_NOT_ALLOWED = 6
    QUOTA_EXHAUSTED = 7
    REQUESTER_NOT_AUTHORIZED = 8
    CONSENT_MISSING = 9
    AUTHORIZATION_INVALID = 10
    POLICY_OTHER = 11


class ReleaseKind(IntEnum):
    AGGREGATE_RESULT = 0
    MODEL_UPDATE = 1
    DEIDENTIFIED_EXTRACT = 2
    PSEUDONYMIZED_EXTRACT = 3
    IDENTIFIED_EXTRACT = 4


class ConsentStatus(IntEnum):
    NONE = 0
    GRANTED = 1
    WITHDRAWN = 2


class AuthorizationStatus(IntEnum):
    """An authorization code is issued once, then redeemed by exactly one access or revoked."""

    NONE = 0
    ISSUED = 1
    REDEEMED = 2
    REVOKED = 3


class AuthorizationFault(IntEnum):
    """Why a GRANTED record may not redeem its authorization code (NONE: it may)."""

    NONE = 0
    UNKNOWN = 1
    REDEEMED = 2
    REVOKED = 3
    EXPIRED = 4
    WRONG_HOLDER = 5
    WRONG_GRANTEE = 6
    DATASET_NOT_IN_SCOPE = 7
    FIELDS_NOT_IN_SCOPE = 8
    TIER_ABOVE_SCOPE = 9
    WRONG_SUBJECT = 10
    WRONG_SCENARIO = 11


class BreakGlassReason(IntEnum):
    """Why a clinician opened a patient's records without their code (break-glass)."""

    NONE = 0
    PATIENT_INCAPACITATED = 1
    LIFE_THREATENING_EMERGENCY = 2
    URGENT_CONTINUITY_OF_CARE = 3


class BreakGlassOutcome(IntEnum):
    """A holder steward's review of a break-glass access (NONE: not reviewed yet)."""

    NONE = 0
    UPHELD = 1
    REFERRED = 2


class ArtifactKind(IntEnum):
    """What a registered artifact is (ArtifactRegistry)."""

    RESULT = 0
    MODEL_UPDATE = 1
    MODEL = 2


#: The longest review window an agreement may give its break-glass accesses (AccessRules).
MAX_BREAK_GLASS_REVIEW_HOURS = 720
#: `AccessRules.BREAK_GLASS_TAG`: a break-glass request's `authorizationRef` is this tag with the
#: reason in its last byte.
BREAK_GLASS_TAG = b"DUL:break-glass".ljust(32, b"\0")


def required_consent(scenario: Scenario, max_tier: Tier, cross_org: bool) -> ConsentPolicy:
    """Mirror of `AccessRules.requiredConsent`: the consent policy an agreement must carry.

    Identified clinical care by another organization (a transfer or referral) needs the
    patient's code, as insurance claims do; clinical care within the holder is the hospital's
    own treatment relationship, not a transfer, and needs none."""
    if scenario == Scenario.INSURANCE_CLAIM:
        return ConsentPolicy.PATIENT_AUTHORIZATION
    if scenario == Scenario.CLINICAL_CARE and cross_org and max_tier == Tier.IDENTIFIED:
        return ConsentPolicy.PATIENT_AUTHORIZATION
    if scenario == Scenario.RESEARCH and max_tier > Tier.DEIDENTIFIED:
        return ConsentPolicy.COHORT_CONSENT
    return ConsentPolicy.NONE


def break_glass_allowed(scenario: Scenario, policy: ConsentPolicy, review_hours: int) -> bool:
    """Mirror of `AccessRules.breakGlassAllowed`: only a code-needing clinical agreement may
    allow break-glass, with a review window of 1 to 720 hours (0: none allowed)."""
    if review_hours == 0:
        return True
    return (
        scenario == Scenario.CLINICAL_CARE
        and policy == ConsentPolicy.PATIENT_AUTHORIZATION
        and 0 < review_hours <= MAX_BREAK_GLASS_REVIEW_HOURS
    )


_BREAK_GLASS_HEAD = BREAK_GLASS_TAG[:31]
"""What every break-glass reference starts with (its last byte names the reason)."""


def break_glass_ref(reason: BreakGlassReason) -> bytes:
    """The `authorizationRef` a requester signs to break the glass for `reason`."""
    return BREAK_GLASS_TAG[:31] + bytes([int(reason)])


def is_break_glass(authorization_ref: bytes) -> bool:
    """Whether `authorization_ref` claims break-glass (`AccessRules.isBreakGlass`)."""
    return len(authorization_ref) == 32 and authorization_ref.startswith(_BREAK_GLASS_HEAD)


def break_glass_reason(authorization_ref: bytes) -> BreakGlassReason:
    """The reason a break-glass ref names (NONE when it names none known)."""
    try:
        return BreakGlassReason(authorization_ref[-1] if authorization_ref else 0)
    except ValueError:
        return BreakGlassReason.NONE


def operations_mask(*operations: Operation) -> int:
    """The bit set `1 << operation` that agreements carry."""
    mask = 0
    for operation in operations:
        mask |= 1 << operation
    return mask


def scenario_mask(*scenarios: Scenario) -> int:
    """The bit set `1 << scenario` that consents carry."""
    mask = 0
    for scenario in scenarios:
        mask |= 1 << scenario
    return mask


def scenarios_of(mask: int) -> tuple[Scenario, ...]:
    """The scenarios in a consent's bit set, in enum order (bits beyond them ignored)."""
    return tuple(s for s in Scenario if mask & (1 << s))


def slug_id(slug: str) -> bytes:
    """A readable bytes32 id for organizations and datasets: the UTF-8 slug, zero-padded.

    Slugs name institutions and datasets, never patients, so they may be read on chain.
    """
    raw = slug.encode()
    if not raw or len(raw) > 32:
        raise ValueError(f"id {slug!r} must be 1 to 32 bytes of UTF-8")
    return raw.ljust(32, b"\0")


def slug_of(value: bytes) -> str:
    """The slug inside a bytes32 id made by `slug_id`, or its hex when it is not one."""
    text = value.rstrip(b"\0")
    try:
        decoded = text.decode()
    except UnicodeDecodeError:
        return "0x" + value.hex()
    return decoded if decoded.isprintable() and decoded else "0x" + value.hex()


def agreement_id(holder: bytes, requester: bytes, nonce: int) -> bytes:
    """keccak256(abi.encode(holder, requester, nonce)): the id `AgreementRegistry` derives."""
    return keccak(holder + requester + nonce.to_bytes(32, "big"))


def consent_id(holder: bytes, subject: bytes, sequence: int) -> bytes:
    """keccak256(abi.encode(holder, subject, sequence)): the id `ConsentRegistry` gives the
    `sequence`-th consent (0-based) recorded for `subject` at `holder`."""
    return keccak(holder + subject + sequence.to_bytes(32, "big"))
