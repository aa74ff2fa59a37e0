// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId, DatasetId, AgreementId} from "./Ids.sol";

/// @dev The enums below are part of the event schema: values are append-only.

enum OrgKind {
    HOSPITAL,
    RESEARCH,
    AI_COMPANY,
    INSURER,
    REGULATOR
}

enum OrgStatus {
    NONE,
    ACTIVE,
    SUSPENDED
}

/// @dev Member roles; an account holds a bit set `1 << role` within exactly one organization.
enum Role {
    STEWARD,
    REQUESTER,
    GATEWAY,
    REGULATOR
}

/// @dev Ordered least to most sensitive: comparisons between tiers are meaningful.
enum Tier {
    AGGREGATE,
    MODEL_PARAMETERS,
    DEIDENTIFIED,
    PSEUDONYMIZED,
    IDENTIFIED
}

enum Scenario {
    CLINICAL_CARE,
    RESEARCH,
    AI_TRAINING,
    TEACHING,
    INSURANCE_CLAIM
}

/// @dev Operations are a bit set `1 << operation` in agreements.
enum Operation {
    QUERY,
    TRAIN,
    EXPORT_RESULT
}

enum ConsentPolicy {
    NONE,
    COHORT_CONSENT,
    PATIENT_AUTHORIZATION
}

enum AgreementStatus {
    NONE,
    PROPOSED,
    ACTIVE,
    SUSPENDED,
    REVOKED,
    EXPIRED,
    SUPERSEDED
}

enum Decision {
    NONE,
    GRANTED,
    DENIED
}

/// @dev Why the gateway denied an access. NONE is only valid for GRANTED records.
enum DenyReason {
    NONE,
    AGREEMENT_NOT_ACTIVE,
    OUTSIDE_WINDOW,
    DATASET_NOT_IN_SCOPE,
    FIELDS_NOT_IN_SCOPE,
    TIER_ABOVE_CEILING,
    OPERATION_NOT_ALLOWED,
    QUOTA_EXHAUSTED,
    REQUESTER_NOT_AUTHORIZED,
    CONSENT_MISSING,
    AUTHORIZATION_INVALID,
    POLICY_OTHER
}

/// @dev What leaves the hospital. Each kind needs a minimum tier and an operation (see AccessRules).
enum ReleaseKind {
    AGGREGATE_RESULT,
    MODEL_UPDATE,
    DEIDENTIFIED_EXTRACT,
    PSEUDONYMIZED_EXTRACT,
    IDENTIFIED_EXTRACT
}

enum ConsentStatus {
    NONE,
    GRANTED,
    WITHDRAWN
}

/// @dev An authorization code is issued once, then redeemed by exactly one access or revoked. A
/// multi-use code stays ISSUED while accesses redeem it, until it expires or is revoked.
enum AuthorizationStatus {
    NONE,
    ISSUED,
    REDEEMED,
    REVOKED
}

/// @dev Why a GRANTED record may not redeem its authorization code (NONE: it may).
enum AuthorizationFault {
    NONE,
    UNKNOWN,
    REDEEMED,
    REVOKED,
    EXPIRED,
    WRONG_HOLDER,
    WRONG_GRANTEE,
    DATASET_NOT_IN_SCOPE,
    FIELDS_NOT_IN_SCOPE,
    TIER_ABOVE_SCOPE,
    WRONG_SUBJECT,
    WRONG_SCENARIO
}

/// @dev Why a clinician opened a patient's records without their code (break-glass). The reason
/// travels in the signed request's `authorizationRef` (see AccessRules.breakGlassRef).
enum BreakGlassReason {
    NONE,
    PATIENT_INCAPACITATED,
    LIFE_THREATENING_EMERGENCY,
    URGENT_CONTINUITY_OF_CARE
}

/// @dev A holder steward's review of a break-glass access: the access was justified (UPHELD) or
/// is referred to the regulator (REFERRED). NONE: not reviewed yet.
enum BreakGlassOutcome {
    NONE,
    UPHELD,
    REFERRED
}

/// @notice A dataset as the registry keeps it. The field names themselves are in the registration event.
struct Dataset {
    OrgId holder;
    bytes32 schemaRef;
    uint16 fieldCount;
    Tier maxTier;
}

/// @notice The terms a holder's steward proposes; every party signs them as EIP-712 `Agreement` data.
/// @dev `fieldMasks[i]` is the bit set of allowed field indices of `datasets[i]` (minimum necessary).
/// `duoCodes` are GA4GH DUO term numbers (DUO:0000046 -> 46). `nonce` makes the id unique:
/// id = keccak256(abi.encode(holder, requester, nonce)). Signatures are valid until `deadline`.
/// `breakGlassReviewHours` (0: no break-glass) lets a cross-organization clinical-care agreement's
/// requester open one patient's records without their code in an emergency; a steward of the
/// holder must review each such access within that many hours.
struct AgreementTerms {
    OrgId holder;
    OrgId requester;
    DatasetId[] datasets;
    uint256[] fieldMasks;
    Scenario scenario;
    uint32[] duoCodes;
    bytes32 diseaseCode;
    bytes32 ethicsApproval;
    Tier maxTier;
    uint8 operations;
    uint64 validFrom;
    uint64 validUntil;
    uint64 quota;
    ConsentPolicy consentPolicy;
    bytes32 termsHash;
    uint256 nonce;
    uint64 deadline;
    uint16 breakGlassReviewHours;
}

/// @notice The part of an agreement that every access decision reads, in one call.
struct AccessTerms {
    AgreementStatus status;
    Scenario scenario;
    Tier maxTier;
    uint8 operations;
    ConsentPolicy consentPolicy;
    uint64 validFrom;
    uint64 validUntil;
    uint64 quota;
    OrgId holder;
    OrgId requester;
    uint16 breakGlassReviewHours;
}

/// @notice One access decision as the gateway records it. The requester signed the EIP-712
/// `AccessRequest` (requestId, agreementId, datasetId, fieldMask, tier, operation, requestHash,
/// authorizationRef, deadline); its signature travels as (r, s, v).
struct AccessRecord {
    bytes32 requestId;
    AgreementId agreementId;
    DatasetId datasetId;
    address requester;
    Decision decision;
    DenyReason reason;
    Tier tier;
    Operation operation;
    uint256 fieldMask;
    bytes32 requestHash;
    bytes32 cohortRoot;
    uint32 cohortSize;
    bytes32 authorizationRef;
    uint64 deadline;
    bytes32 sigR;
    bytes32 sigS;
    uint8 sigV;
}

/// @notice A patient's consent as a steward of the holder records it. `subject` is the subject
/// reference: HMAC-SHA256 under a hospital secret of a hospital-internal pseudonym, never a name,
/// an id number or any other identifier. `scenarios` is the bit set `1 << scenario` the patient
/// permits; `duoCodes` are the GA4GH DUO terms of the consent form (DUO:0000042 -> 42).
/// `validFrom` zero means from the recording block. `subjectKey`, when set, is the patient's own
/// key, which may withdraw the consent by an EIP-712 `ConsentWithdrawal` signature.
///
/// Specific consent: `studies` (agreement ids) and `requesters` (organizations), each strictly
/// ascending, limit the consent to those studies / requesting organizations (empty: any), and
/// `diseaseCode` (an ontology CURIE such as "MONDO:0007254", UTF-8, left-aligned, zero-padded)
/// limits it to studies whose agreement carries exactly that disease term. A disease code goes
/// with the disease-specific DUO code DUO:0000007, and DUO:0000007 with a disease code.
struct ConsentTerms {
    OrgId holder;
    bytes32 subject;
    uint8 scenarios;
    uint32[] duoCodes;
    uint64 validFrom;
    uint64 validUntil;
    address subjectKey;
    bytes32 diseaseCode;
    AgreementId[] studies;
    OrgId[] requesters;
}

/// @notice A consent as the registry keeps it (DUO codes, disease code, studies and requesters
/// are in the recording event; `consentScope` gives the hash of the last three).
struct Consent {
    OrgId holder;
    bytes32 subject;
    uint8 scenarios;
    ConsentStatus status;
    uint64 validFrom;
    uint64 validUntil;
    address subjectKey;
}

/// @notice A patient's grant to `grantee`, keyed by the keccak256 hash of its code: access to
/// `dataset` for the fields in `fieldMask`, at `tier` or below, for `scenario`, until
/// `expiresAt` — once (`multiUse` false: the first access redeems it, status REDEEMED), or
/// (`multiUse` true) by every fitting access of the grantee until it expires or is revoked
/// (status stays ISSUED). Redeemed only by a GRANTED access record of the AccessLog;
/// `redeemedBy` is the access that redeemed it (of a multi-use code: the latest).
struct Authorization {
    OrgId holder;
    bytes32 subject;
    OrgId grantee;
    DatasetId dataset;
    uint256 fieldMask;
    Tier tier;
    Scenario scenario;
    AuthorizationStatus status;
    uint64 expiresAt;
    bool multiUse;
    bytes32 redeemedBy;
}

/// @dev What a registered artifact is. Values are append-only.
enum ArtifactKind {
    RESULT,
    MODEL_UPDATE,
    MODEL
}

/// @notice A released result named as an artifact's parent: the release of `resultHash` from
/// access `accessId` under `agreementId` (AccessLog `ResultReleased`).
struct ReleaseRef {
    bytes32 accessId;
    AgreementId agreementId;
    bytes32 resultHash;
}

/// @notice An artifact as the registry keeps it, in two slots; its parents are in the
/// registration event. `registeredAt` is a block timestamp (uint48, OpenZeppelin's timepoint width).
struct Artifact {
    OrgId owner;
    ArtifactKind kind;
    address registrant;
    uint48 registeredAt;
    uint16 releaseCount;
    uint16 parentCount;
}
