// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId, DatasetId, AgreementId} from "../types/Ids.sol";
import {
    AccessRecord,
    AgreementStatus,
    AuthorizationFault,
    BreakGlassOutcome,
    BreakGlassReason,
    Decision,
    DenyReason,
    Tier,
    Operation,
    ReleaseKind
} from "../types/DataUse.sol";

/// @title IAccessLog
/// @notice The audit trail of data use: one event per access decision, granted or denied, and
/// one per result that leaves the hospital. Only a gateway of the agreement's holder records.
/// An access is named by its agreement and its request id (`accessId`), the pair the requester
/// signs: request ids are a name space per agreement, so one organization's gateways can never
/// take (or be refused) an id another organization's agreement uses.
/// The gateway decides; this contract guarantees: it refuses any GRANTED record that breaks its
/// agreement, and any record whose requester did not sign the request.
interface IAccessLog {
    /// @notice `recorder` is not an active gateway of the holder organization `holder`.
    error AccessLogUnauthorizedRecorder(address recorder, OrgId holder);
    /// @notice `requestId` was recorded under `agreementId` before (request ids are idempotency
    /// keys within an agreement).
    error AccessLogDuplicateRequest(bytes32 requestId, AgreementId agreementId);
    /// @notice No record given, or more than `max`.
    error AccessLogInvalidBatchSize(uint256 size, uint256 max);
    /// @notice A GRANTED record must carry reason NONE, a DENIED one a reason.
    error AccessLogInvalidDecision(bytes32 requestId, Decision decision, DenyReason reason);
    /// @notice The requester's signature over the request does not recover to `requester`.
    error AccessLogInvalidRequesterSignature(bytes32 requestId, address requester);
    /// @notice The requester's signature was valid until `deadline`.
    error AccessLogRequestExpired(bytes32 requestId, uint64 deadline);
    /// @notice The requester signed `deadline`, later than `latest` (the recording block's time
    /// plus the longest lifetime a request may be signed for): no signature lives forever.
    error AccessLogDeadlineTooFar(bytes32 requestId, uint64 deadline, uint256 latest);
    /// @notice No agreement is registered under `agreementId`.
    error AccessLogUnknownAgreement(AgreementId agreementId);
    /// @notice The agreement is `status`, not ACTIVE.
    error AccessLogAgreementNotActive(AgreementId agreementId, AgreementStatus status);
    /// @notice `at` is outside the agreement's window.
    error AccessLogOutsideWindow(AgreementId agreementId, uint64 at, uint64 validFrom, uint64 validUntil);
    /// @notice The agreement does not cover `dataset`.
    error AccessLogDatasetNotInScope(AgreementId agreementId, DatasetId dataset);
    /// @notice The request names fields outside what the agreement allows (or none at all).
    error AccessLogFieldsNotInScope(AgreementId agreementId, uint256 requested, uint256 allowed);
    /// @notice The requested tier is above the agreement's ceiling.
    error AccessLogTierAboveCeiling(AgreementId agreementId, Tier requested, Tier ceiling);
    /// @notice The agreement does not allow `operation`.
    error AccessLogOperationNotAllowed(AgreementId agreementId, Operation operation);
    /// @notice All `quota` accesses of the agreement are used.
    error AccessLogQuotaExhausted(AgreementId agreementId, uint64 quota);
    /// @notice `requester` is not an active requester of the agreement's requesting organization.
    error AccessLogRequesterNotAuthorized(AgreementId agreementId, address requester);
    /// @notice The agreement needs a consented cohort (root and size) and none was given.
    error AccessLogCohortMissing(bytes32 requestId);
    /// @notice The agreement needs a patient authorization for exactly one patient.
    error AccessLogAuthorizationMissing(bytes32 requestId);
    /// @notice The record may not redeem the patient authorization `authorizationRef` (see `fault`).
    error AccessLogAuthorizationRefused(bytes32 requestId, bytes32 authorizationRef, AuthorizationFault fault);
    /// @notice A break-glass request under an agreement that allows none, without exactly one
    /// patient (cohort of one with its root), or naming no known reason.
    error AccessLogBreakGlassRefused(bytes32 requestId, AgreementId agreementId);
    /// @notice `accessId` is no break-glass access of `agreementId`.
    error AccessLogNotBreakGlass(bytes32 accessId, AgreementId agreementId);
    /// @notice `reviewer` is not an active steward of the holder `holder`.
    error AccessLogUnauthorizedReviewer(address reviewer, OrgId holder);
    /// @notice The access was reviewed already (`outcome`), or the review names no outcome (NONE).
    error AccessLogBreakGlassReviewed(bytes32 accessId, BreakGlassOutcome outcome);
    /// @notice No access `accessId` was recorded under `agreementId`.
    error AccessLogUnknownAccess(bytes32 accessId, AgreementId agreementId);
    /// @notice The access was denied, or its tier and operation do not allow releasing `kind`.
    error AccessLogReleaseNotAllowed(bytes32 accessId, ReleaseKind kind);
    /// @notice `resultHash` was already released from `accessId`.
    error AccessLogDuplicateRelease(bytes32 accessId, bytes32 resultHash);

    /// @notice One access decision, granted or denied. `accessId` is the request id, unique within
    /// `agreementId` (the same id under another agreement is another access); `record` is
    /// exactly what the gateway submitted, the requester's signature included.
    event AccessRecorded(
        bytes32 indexed accessId,
        AgreementId indexed agreementId,
        DatasetId indexed datasetId,
        address recorder,
        AccessRecord record
    );

    /// @notice The GRANTED access `accessId` (recorded just before, same transaction) opened one
    /// patient's records without their code, for `reason`; a steward of `holder` must review it
    /// by `reviewDue` (block time).
    event BreakGlassAccess(
        bytes32 indexed accessId,
        AgreementId indexed agreementId,
        OrgId indexed holder,
        BreakGlassReason reason,
        uint64 reviewDue
    );

    /// @notice A steward of `holder` reviewed break-glass access `accessId`: UPHELD, or REFERRED to
    /// the regulator. `findingHash` is the hash of the review's written finding (kept off chain);
    /// a review after `reviewDue` is late.
    event BreakGlassReviewed(
        bytes32 indexed accessId,
        AgreementId indexed agreementId,
        OrgId indexed holder,
        BreakGlassOutcome outcome,
        address reviewer,
        bytes32 findingHash,
        uint64 reviewDue
    );

    /// @notice A result left the hospital from a granted access.
    event ResultReleased(
        bytes32 indexed accessId,
        AgreementId indexed agreementId,
        bytes32 indexed resultHash,
        ReleaseKind kind,
        uint64 size,
        address recorder
    );

    /// @notice Records one access decision. Only a gateway of the agreement's holder.
    function recordAccess(AccessRecord calldata record) external;

    /// @notice Records several access decisions, one event each; all or none.
    function recordAccesses(AccessRecord[] calldata records) external;

    /// @notice Records a result released from a granted access. Only a gateway of the holder.
    function releaseResult(bytes32 accessId, AgreementId agreementId, bytes32 resultHash, ReleaseKind kind, uint64 size)
        external;

    /// @notice Records a steward's review of break-glass access `accessId`. Only a steward of the
    /// agreement's holder, once per access; a late review is recorded too.
    function reviewBreakGlass(bytes32 accessId, AgreementId agreementId, BreakGlassOutcome outcome, bytes32 findingHash)
        external;

    /// @notice When break-glass access `accessId` of `agreementId` is due for review (zero: not a
    /// break-glass access) and its review's outcome (NONE while unreviewed).
    function breakGlassOf(bytes32 accessId, AgreementId agreementId)
        external
        view
        returns (uint64 reviewDue, BreakGlassOutcome outcome);

    /// @notice Whether result `resultHash` was released from access `accessId`, recorded under
    /// exactly `agreementId`: true iff `releaseResult(accessId, agreementId, resultHash, …)` succeeded.
    /// False for an unknown or denied access, another agreement, or a result never released.
    function isReleased(bytes32 accessId, AgreementId agreementId, bytes32 resultHash) external view returns (bool);

    /// @notice How many granted accesses `agreementId` has used.
    function accessesUsed(AgreementId agreementId) external view returns (uint64);

    /// @notice The decision recorded for `requestId` under `agreementId` (NONE when unrecorded).
    function decisionOf(bytes32 requestId, AgreementId agreementId) external view returns (Decision);

    /// @notice The EIP-712 digest a requester signs for `record`.
    function requestDigest(AccessRecord calldata record) external view returns (bytes32);

    /// @notice The largest batch `recordAccesses` takes.
    function maxBatchSize() external view returns (uint256);
}
