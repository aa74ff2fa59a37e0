// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId, DatasetId} from "../types/Ids.sol";
import {
    Authorization,
    AuthorizationFault,
    AuthorizationStatus,
    Consent,
    ConsentStatus,
    ConsentTerms,
    Scenario,
    Tier
} from "../types/DataUse.sol";

/// @title IConsentRegistry
/// @notice What patients permit: dynamic secondary consent per subject reference, and one-time
/// authorization codes for a named third party. No identity ever reaches the chain: subjects are
/// keyed hashes of hospital-internal pseudonyms and codes are stored as hashes only.
///
/// Cohorts: an access under a consent-requiring agreement records the RFC 9162 Merkle tree head
/// (root, size) of its admitted subjects. Leaves are `sha256(0x00 || subject)` in ascending order of
/// subject, inner nodes `sha256(0x01 || left || right)`; `cohortIncludes` checks an inclusion proof.
interface IConsentRegistry {
    /// @notice No organization is registered under `holder`.
    error ConsentRegistryUnknownHolder(OrgId holder);
    /// @notice `account` is not an active steward of `holder`.
    error ConsentRegistryUnauthorizedSteward(address account, OrgId holder);
    /// @notice The subject reference is zero.
    error ConsentRegistryZeroSubject();
    /// @notice `scenarios` is empty or names no scenario.
    error ConsentRegistryInvalidScenarios(uint8 scenarios);
    /// @notice A consent cannot start before the block that records it.
    error ConsentRegistryBackdated(uint64 validFrom, uint64 at);
    /// @notice The validity window is empty.
    error ConsentRegistryInvalidValidity(uint64 validFrom, uint64 validUntil);
    /// @notice The subject already has a granted consent `existing` for one of these scenarios,
    /// with the same scope (studies, requesters, disease), in an overlapping window: withdraw it
    /// first.
    error ConsentRegistryOverlappingConsent(bytes32 existing);
    /// @notice More than `max` DUO codes.
    error ConsentRegistryTooManyDuoCodes(uint256 count, uint256 max);
    /// @notice More than `max` studies.
    error ConsentRegistryTooManyStudies(uint256 count, uint256 max);
    /// @notice More than `max` requesting organizations.
    error ConsentRegistryTooManyRequesters(uint256 count, uint256 max);
    /// @notice Studies and requesters must be strictly ascending and non-zero; `value` is not.
    error ConsentRegistryScopeNotAscending(bytes32 value);
    /// @notice No organization is registered under `requester`.
    error ConsentRegistryUnknownRequester(OrgId requester);
    /// @notice DUO:0000007 (disease-specific) needs a disease code and a disease code needs
    /// DUO:0000007; `diseaseSpecific` says whether the codes name it.
    error ConsentRegistryDiseaseCodeMismatch(bool diseaseSpecific, bytes32 diseaseCode);
    /// @notice The subject has `max` consents at this holder already.
    error ConsentRegistryTooManyConsents(bytes32 subject, uint256 max);
    /// @notice No consent, or more than `max`, in a batch.
    error ConsentRegistryInvalidBatchSize(uint256 size, uint256 max);
    /// @notice No consent is recorded under `consentId`.
    error ConsentRegistryUnknownConsent(bytes32 consentId);
    /// @notice The consent is `status`, not GRANTED.
    error ConsentRegistryConsentNotGranted(bytes32 consentId, ConsentStatus status);
    /// @notice The withdrawal signature does not recover to the consent's subject key (or it has none).
    error ConsentRegistryInvalidSubjectSignature(bytes32 consentId);
    /// @notice The withdrawal signature was valid until `deadline`.
    error ConsentRegistrySignatureExpired(bytes32 consentId, uint64 deadline);
    /// @notice The code hash is zero, has the form of a break-glass reference, or is already used.
    error ConsentRegistryAuthorizationExists(bytes32 codeHash);
    /// @notice No organization is registered under `grantee`.
    error ConsentRegistryUnknownGrantee(OrgId grantee);
    /// @notice `scenario` does not work through patient authorization codes (at that tier, for
    /// that grantee: clinical care needs a code only at IDENTIFIED for another organization).
    error ConsentRegistryScenarioNotAuthorizable(Scenario scenario);
    /// @notice `dataset` is not a dataset of `holder`.
    error ConsentRegistryDatasetNotHeld(DatasetId dataset, OrgId holder);
    /// @notice The field mask is empty or names fields the dataset does not have.
    error ConsentRegistryInvalidFieldMask(uint256 fieldMask, uint16 fieldCount);
    /// @notice `tier` is above what the dataset and the scenario allow.
    error ConsentRegistryTierAboveCeiling(Tier tier, Tier ceiling);
    /// @notice The expiry is not in the future or is further than the longest code lifetime.
    error ConsentRegistryInvalidExpiry(uint64 expiresAt, uint64 latest);
    /// @notice No authorization is issued under `codeHash`.
    error ConsentRegistryUnknownAuthorization(bytes32 codeHash);
    /// @notice The authorization is `status`, not ISSUED.
    error ConsentRegistryAuthorizationNotIssued(bytes32 codeHash, AuthorizationStatus status);
    /// @notice Only the access log may redeem, and it is bound once, by the deployer.
    error ConsentRegistryUnauthorizedRedeemer(address caller);
    /// @notice The access log is already bound, or the caller is not the deployer.
    error ConsentRegistryAccessLogBindingRefused(address caller);
    /// @notice The patient's `Authorization` or `AuthorizationRevocation` signature does not
    /// recover to the subject's key (or the subject has none).
    error ConsentRegistryInvalidAuthorizationSignature(bytes32 codeHash);
    /// @notice The patient's signature was valid until `deadline` (an authorization's: its expiry).
    error ConsentRegistryAuthorizationSignatureExpired(bytes32 codeHash, uint64 deadline);
    /// @notice The patient signed a grant of consent `consentId`, but the subject's next consent
    /// at the holder is `next`: the signature was used already (or another consent was
    /// recorded since); the patient signs again.
    error ConsentRegistryStaleConsentGrant(bytes32 consentId, bytes32 next);
    /// @notice A patient-granted consent's terms name `given` as its key, not the signing key `key`.
    error ConsentRegistrySubjectKeyMismatch(address given, address key);

    /// @notice A consent was recorded; `terms.validFrom` is the effective start. The terms carry
    /// the subject reference, scenarios, DUO codes and a specific consent's studies, requesters
    /// and disease code — never a patient's name, number or pseudonym. `bySubject`: the patient
    /// granted it with their own key (EIP-712 `ConsentGrant`), `recorder` is that key and
    /// `terms.subjectKey` too; otherwise a steward of the holder recorded it and `recorder` is
    /// that steward.
    event ConsentRecorded(
        bytes32 indexed consentId,
        OrgId indexed holder,
        bytes32 indexed subject,
        ConsentTerms terms,
        address recorder,
        bool bySubject
    );

    /// @notice A consent was withdrawn, by a steward of the holder or (`bySubject`) by the patient's key.
    event ConsentWithdrawn(
        bytes32 indexed consentId, OrgId indexed holder, bytes32 indexed subject, address by, bool bySubject
    );

    /// @notice An authorization code was issued; only its hash is known. `bySubject`: the patient
    /// signed it (EIP-712 `Authorization`) and `issuer` is the subject's key; otherwise a steward
    /// of the holder issued it on the patient's behalf and `issuer` is that steward.
    event AuthorizationIssued(
        bytes32 indexed codeHash,
        OrgId indexed holder,
        OrgId indexed grantee,
        Authorization authorization,
        address issuer,
        bool bySubject
    );

    /// @notice An unredeemed authorization was revoked, by a steward of the holder or
    /// (`bySubject`, `by` the subject's key) by the patient's signature.
    event AuthorizationRevoked(bytes32 indexed codeHash, OrgId indexed holder, address by, bool bySubject);

    /// @notice A steward of `holder` registered (or rotated to) `key` as the key of `subject`:
    /// the key whose EIP-712 signatures issue and revoke the subject's authorization codes.
    /// The zero key removes it for good: no consent's key stands in for a removed one.
    event SubjectKeyRegistered(
        OrgId indexed holder, bytes32 indexed subject, address key, address previous, address by
    );

    /// @notice A granted access (`accessId`) redeemed the authorization (a multi-use code: once per access).
    event AuthorizationRedeemed(bytes32 indexed codeHash, bytes32 indexed accessId, OrgId indexed grantee);

    /// @notice The access log was bound as the only redeemer.
    event AccessLogBound(address accessLog);

    /// @notice Records one consent. Only a steward of `terms.holder`.
    function recordConsent(ConsentTerms calldata terms) external returns (bytes32 consentId);

    /// @notice Records several consents, all or none. Only a steward of each holder.
    function recordConsents(ConsentTerms[] calldata terms) external;

    /// @notice Records a consent the patient granted in their own wallet: EIP-712
    /// `ConsentGrant(consentId, holder, subject, scenarios, duoCodes, validFrom, validUntil,
    /// subjectKey, diseaseCode, studies, requesters, deadline)` signed by the subject's key
    /// (`subjectKeyOf`); anyone may relay it until `deadline`. `consentId` must be the subject's
    /// next consent id at the holder (`nextConsentId`), so a signature records one consent once.
    /// The consent's key is the signing key (`terms.subjectKey` zero or that key); the same
    /// rules as `recordConsent` apply otherwise.
    function recordConsentBySubject(
        bytes32 consentId,
        ConsentTerms calldata terms,
        uint64 deadline,
        bytes calldata signature
    ) external returns (bytes32);

    /// @notice Withdraws a granted consent. Only a steward of its holder.
    function withdrawConsent(bytes32 consentId) external;

    /// @notice Withdraws a granted consent on the patient's own EIP-712 `ConsentWithdrawal`
    /// signature by its subject key — once a steward has registered a key for the subject
    /// (`registerSubjectKey`), by that one: a rotated or removed key cannot; a consent recorded
    /// without a key is withdrawn by a steward. Anyone may relay it.
    function withdrawConsentBySubject(bytes32 consentId, uint64 deadline, bytes calldata signature) external;

    /// @notice Issues an authorization code (by its hash). Only a steward of `authorization.holder`;
    /// `status` and `redeemedBy` of the input are ignored.
    function issueAuthorization(bytes32 codeHash, Authorization calldata authorization) external;

    /// @notice Revokes an issued, unredeemed authorization. Only a steward of its holder.
    function revokeAuthorization(bytes32 codeHash) external;

    /// @notice Issues an authorization code the patient signed in their own wallet: EIP-712
    /// `Authorization(codeHash, holder, subject, grantee, dataset, fieldMask, tier, scenario,
    /// expiresAt, multiUse)` by the subject's key (`subjectKeyOf`). Anyone may relay it until
    /// `expiresAt`; the code hash makes the signature single-use (the code itself opens one
    /// access, or every fitting one until `expiresAt` when `multiUse`). The same rules as
    /// `issueAuthorization` apply.
    function issueAuthorizationBySubject(bytes32 codeHash, Authorization calldata authorization, bytes calldata signature)
        external;

    /// @notice Revokes an issued, unredeemed authorization on the patient's EIP-712
    /// `AuthorizationRevocation(codeHash, deadline)` signature by the subject's key; anyone may relay it.
    function revokeAuthorizationBySubject(bytes32 codeHash, uint64 deadline, bytes calldata signature) external;

    /// @notice Registers, rotates (or, with the zero key, removes: `subjectKeyOf` is zero then,
    /// whatever key a consent names) the key of `subject` at `holder`, with or without any
    /// consent. Only a steward of `holder`.
    function registerSubjectKey(OrgId holder, bytes32 subject, address key) external;

    /// @notice Redeems an authorization for `accessId` if the access fits it; returns why not
    /// otherwise, changing nothing. A single-use code becomes REDEEMED; a multi-use one stays
    /// ISSUED (`redeemedBy`: the latest access). Only the bound access log.
    function redeemAuthorization(
        bytes32 codeHash,
        bytes32 accessId,
        OrgId holder,
        OrgId grantee,
        DatasetId dataset,
        uint256 fieldMask,
        Tier tier,
        bytes32 cohortRoot,
        Scenario scenario
    ) external returns (AuthorizationFault fault);

    /// @notice Binds the access log, once. Only the deployer.
    function bindAccessLog(address accessLog) external;

    /// @notice The consent recorded under `consentId` (status NONE when unknown).
    function consent(bytes32 consentId) external view returns (Consent memory);

    /// @notice The ids of every consent recorded for `subject` at `holder`, oldest first.
    function consentIds(OrgId holder, bytes32 subject) external view returns (bytes32[] memory);

    /// @notice Whether `subject` has a granted, unrestricted consent at `holder` covering
    /// `scenario` now. A specific consent (naming studies, requesters or a disease) covers only
    /// the studies its recording event names: the gateway and `verify` apply it.
    function hasConsent(OrgId holder, bytes32 subject, Scenario scenario) external view returns (bool);

    /// @notice The scope hash of a consent: `keccak256(abi.encode(diseaseCode, studies,
    /// requesters))` of its terms, zero for an unrestricted consent.
    function consentScope(bytes32 consentId) external view returns (bytes32);

    /// @notice The authorization issued under `codeHash` (status NONE when unknown).
    function authorization(bytes32 codeHash) external view returns (Authorization memory);

    /// @notice The id the next consent recorded for `subject` at `holder` gets.
    function nextConsentId(OrgId holder, bytes32 subject) external view returns (bytes32);

    /// @notice The EIP-712 digest a patient signs to grant `terms` as consent `consentId`.
    function consentGrantDigest(bytes32 consentId, ConsentTerms calldata terms, uint64 deadline)
        external
        view
        returns (bytes32);

    /// @notice The EIP-712 digest a patient signs to withdraw `consentId`.
    function withdrawalDigest(bytes32 consentId, uint64 deadline) external view returns (bytes32);

    /// @notice The key whose signatures speak for `subject` at `holder`: the registered one (zero
    /// once a steward removed it), or, when none was ever registered, the key of the subject's
    /// newest consent that names one (zero: none).
    function subjectKeyOf(OrgId holder, bytes32 subject) external view returns (address);

    /// @notice The EIP-712 digest a patient signs to issue `authorization` under `codeHash`
    /// (its `status` and `redeemedBy` are not signed).
    function authorizationDigest(bytes32 codeHash, Authorization calldata authorization) external view returns (bytes32);

    /// @notice The EIP-712 digest a patient signs to revoke `codeHash`.
    function authorizationRevocationDigest(bytes32 codeHash, uint64 deadline) external view returns (bytes32);

    /// @notice The access log allowed to redeem authorizations (zero until bound).
    function accessLog() external view returns (address);

    /// @notice Whether `subject` is leaf `index` of the cohort tree with head (`root`, `size`).
    function cohortIncludes(bytes32 root, uint256 size, uint256 index, bytes32 subject, bytes32[] calldata proof)
        external
        pure
        returns (bool);
}
