// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IAccessLog} from "./interfaces/IAccessLog.sol";
import {IAgreementRegistry} from "./interfaces/IAgreementRegistry.sol";
import {IConsentRegistry} from "./interfaces/IConsentRegistry.sol";
import {IMembership} from "./interfaces/IMembership.sol";
import {AccessRules} from "./libraries/AccessRules.sol";
import {AccessSlot} from "./libraries/AccessSlot.sol";
import {TypedData} from "./libraries/TypedData.sol";
import {OrgId, DatasetId, AgreementId} from "./types/Ids.sol";
import {
    AccessRecord,
    AccessTerms,
    AgreementStatus,
    AuthorizationFault,
    BreakGlassOutcome,
    BreakGlassReason,
    ConsentPolicy,
    Decision,
    DenyReason,
    ReleaseKind,
    Role
} from "./types/DataUse.sol";

/// @title AccessLog
/// @notice Records every access decision and every released result. Checks that repeat within a
/// batch (agreement terms, scope, recorder and requester membership) are read once per batch.
contract AccessLog is IAccessLog, EIP712 {
    using AccessSlot for uint256;

    /// @dev Bounded by the per-transaction gas cap (EIP-7825, 2^24) at ~45k gas per record.
    uint256 public constant MAX_BATCH_SIZE = 256;

    /// @notice The longest a requester's signature may stay valid after the block that records it,
    /// whatever the decision: a request cannot be signed to live forever (gateways refuse far
    /// shorter lifetimes; this is the chain's own ceiling).
    uint256 public constant MAX_REQUEST_LIFETIME = 90 days;

    IMembership public immutable MEMBERSHIP;
    IAgreementRegistry public immutable AGREEMENTS;
    IConsentRegistry public immutable CONSENTS;

    /// @dev An access is named by its agreement and its request id: the pair the requester
    /// signed, in the name space of the one organization whose gateways may record under that
    /// agreement (its holder). A request id reused under another agreement is another access.
    mapping(AgreementId agreementId => mapping(bytes32 requestId => uint256 slot)) private _accesses;
    mapping(AgreementId id => uint64 used) private _used;
    mapping(bytes32 releaseKey => bool released) private _releases;
    mapping(AgreementId agreementId => mapping(bytes32 accessId => BreakGlassCase)) private _breakGlass;

    /// @dev A break-glass access awaiting (or past) its holder's review.
    struct BreakGlassCase {
        uint64 reviewDue;
        BreakGlassOutcome outcome;
    }

    /// @dev What a batch has already read, so consecutive records of one agreement cost little.
    struct Cache {
        AgreementId agreementId;
        AccessTerms terms;
        uint64 used;
        bool usedDirty;
        DatasetId datasetId;
        uint256 allowedFields;
        OrgId recorderOrg;
        address requester;
    }

    constructor(IMembership membership, IAgreementRegistry agreements, IConsentRegistry consents)
        EIP712("DataUseLedger.AccessLog", "1")
    {
        MEMBERSHIP = membership;
        AGREEMENTS = agreements;
        CONSENTS = consents;
    }

    /// @inheritdoc IAccessLog
    function recordAccess(AccessRecord calldata record) external {
        Cache memory cache;
        _record(record, cache);
        _flushUsed(cache);
    }

    /// @inheritdoc IAccessLog
    function recordAccesses(AccessRecord[] calldata records) external {
        uint256 count = records.length;
        if (count == 0 || count > MAX_BATCH_SIZE) revert AccessLogInvalidBatchSize(count, MAX_BATCH_SIZE);
        Cache memory cache;
        for (uint256 i = 0; i < count; ++i) {
            _record(records[i], cache);
        }
        _flushUsed(cache);
    }

    /// @inheritdoc IAccessLog
    function releaseResult(bytes32 accessId, AgreementId agreementId, bytes32 resultHash, ReleaseKind kind, uint64 size)
        external
    {
        uint256 slot = _accesses[agreementId][accessId];
        if (!slot.isRecorded()) revert AccessLogUnknownAccess(accessId, agreementId);
        AccessTerms memory terms = AGREEMENTS.accessTerms(agreementId);
        if (!MEMBERSHIP.hasOrgRole(msg.sender, terms.holder, Role.GATEWAY)) {
            revert AccessLogUnauthorizedRecorder(msg.sender, terms.holder);
        }
        // Suspension, revocation or expiry stops egress at once, even of results already computed.
        if (terms.status != AgreementStatus.ACTIVE) revert AccessLogAgreementNotActive(agreementId, terms.status);
        if (block.timestamp > terms.validUntil) {
            revert AccessLogOutsideWindow(agreementId, uint64(block.timestamp), terms.validFrom, terms.validUntil);
        }
        if (slot.decision() != Decision.GRANTED || !AccessRules.releasable(kind, slot.tier(), slot.operation())) {
            revert AccessLogReleaseNotAllowed(accessId, kind);
        }
        bytes32 key = _releaseKey(accessId, agreementId, resultHash);
        if (_releases[key]) revert AccessLogDuplicateRelease(accessId, resultHash);
        _releases[key] = true;
        emit ResultReleased(accessId, agreementId, resultHash, kind, size, msg.sender);
    }

    /// @inheritdoc IAccessLog
    function reviewBreakGlass(bytes32 accessId, AgreementId agreementId, BreakGlassOutcome outcome, bytes32 findingHash)
        external
    {
        BreakGlassCase storage case_ = _breakGlass[agreementId][accessId];
        if (case_.reviewDue == 0) revert AccessLogNotBreakGlass(accessId, agreementId);
        OrgId holder = AGREEMENTS.accessTerms(agreementId).holder;
        if (!MEMBERSHIP.hasOrgRole(msg.sender, holder, Role.STEWARD)) revert AccessLogUnauthorizedReviewer(msg.sender, holder);
        if (case_.outcome != BreakGlassOutcome.NONE) revert AccessLogBreakGlassReviewed(accessId, case_.outcome);
        if (outcome == BreakGlassOutcome.NONE) revert AccessLogBreakGlassReviewed(accessId, outcome);
        // A late review is still recorded: the event's block time against `reviewDue` shows it.
        case_.outcome = outcome;
        emit BreakGlassReviewed(accessId, agreementId, holder, outcome, msg.sender, findingHash, case_.reviewDue);
    }

    /// @inheritdoc IAccessLog
    function breakGlassOf(bytes32 accessId, AgreementId agreementId)
        external
        view
        returns (uint64 reviewDue, BreakGlassOutcome outcome)
    {
        BreakGlassCase storage case_ = _breakGlass[agreementId][accessId];
        return (case_.reviewDue, case_.outcome);
    }

    /// @inheritdoc IAccessLog
    function isReleased(bytes32 accessId, AgreementId agreementId, bytes32 resultHash) external view returns (bool) {
        return _releases[_releaseKey(accessId, agreementId, resultHash)];
    }

    /// @inheritdoc IAccessLog
    function accessesUsed(AgreementId agreementId) external view returns (uint64) {
        return _used[agreementId];
    }

    /// @inheritdoc IAccessLog
    function decisionOf(bytes32 requestId, AgreementId agreementId) external view returns (Decision) {
        return _accesses[agreementId][requestId].decision();
    }

    /// @inheritdoc IAccessLog
    function requestDigest(AccessRecord calldata record) external view returns (bytes32) {
        return _hashTypedDataV4(TypedData.hashAccessRequest(record));
    }

    /// @inheritdoc IAccessLog
    function maxBatchSize() external pure returns (uint256) {
        return MAX_BATCH_SIZE;
    }

    function _record(AccessRecord calldata record, Cache memory cache) private {
        _loadAgreement(record.agreementId, cache);
        AccessTerms memory terms = cache.terms;
        if (!(cache.recorderOrg == terms.holder)) {
            if (!MEMBERSHIP.hasOrgRole(msg.sender, terms.holder, Role.GATEWAY)) {
                revert AccessLogUnauthorizedRecorder(msg.sender, terms.holder);
            }
            cache.recorderOrg = terms.holder;
        }
        bytes32 requestId = record.requestId;
        mapping(bytes32 => uint256) storage accesses = _accesses[record.agreementId];
        if (accesses[requestId].isRecorded()) revert AccessLogDuplicateRequest(requestId, record.agreementId);
        uint256 latest = block.timestamp + MAX_REQUEST_LIFETIME;
        if (record.deadline > latest) revert AccessLogDeadlineTooFar(requestId, record.deadline, latest);
        _checkSignature(record);
        bool breakGlass = false;
        if (record.decision == Decision.GRANTED && record.reason == DenyReason.NONE) {
            breakGlass = _checkGrant(record, cache);
        } else if (record.decision != Decision.DENIED || record.reason == DenyReason.NONE) {
            revert AccessLogInvalidDecision(requestId, record.decision, record.reason);
        }
        accesses[requestId] = AccessSlot.pack(record.decision, record.tier, record.operation);
        emit AccessRecorded(requestId, record.agreementId, record.datasetId, msg.sender, record);
        if (breakGlass) {
            uint64 reviewDue = uint64(block.timestamp) + uint64(terms.breakGlassReviewHours) * 1 hours;
            _breakGlass[record.agreementId][requestId].reviewDue = reviewDue;
            emit BreakGlassAccess(
                requestId,
                record.agreementId,
                terms.holder,
                AccessRules.breakGlassReason(record.authorizationRef),
                reviewDue
            );
        }
    }

    /// @dev Every rule of the agreement, in the order the gateway's policy core reports them. A
    /// patient authorization is redeemed last, once every other rule (the quota included) holds,
    /// so a refused record never uses up a patient's code. Returns whether the grant is a
    /// break-glass access (one patient, no code, a known reason, an agreement that allows it).
    function _checkGrant(AccessRecord calldata record, Cache memory cache) private returns (bool breakGlass) {
        AgreementId agreementId = record.agreementId;
        AccessTerms memory terms = cache.terms;
        if (record.deadline < block.timestamp) revert AccessLogRequestExpired(record.requestId, record.deadline);
        if (terms.status != AgreementStatus.ACTIVE) revert AccessLogAgreementNotActive(agreementId, terms.status);
        if (block.timestamp < terms.validFrom || block.timestamp > terms.validUntil) {
            revert AccessLogOutsideWindow(agreementId, uint64(block.timestamp), terms.validFrom, terms.validUntil);
        }
        if (cache.requester != record.requester) {
            if (!MEMBERSHIP.hasOrgRole(record.requester, terms.requester, Role.REQUESTER)) {
                revert AccessLogRequesterNotAuthorized(agreementId, record.requester);
            }
            cache.requester = record.requester;
        }
        if (!(cache.datasetId == record.datasetId)) {
            cache.datasetId = record.datasetId;
            cache.allowedFields = AGREEMENTS.allowedFields(agreementId, record.datasetId);
        }
        if (cache.allowedFields == 0) revert AccessLogDatasetNotInScope(agreementId, record.datasetId);
        if (record.fieldMask == 0 || record.fieldMask & ~cache.allowedFields != 0) {
            revert AccessLogFieldsNotInScope(agreementId, record.fieldMask, cache.allowedFields);
        }
        if (record.tier > terms.maxTier) revert AccessLogTierAboveCeiling(agreementId, record.tier, terms.maxTier);
        if (!AccessRules.allows(terms.operations, record.operation)) {
            revert AccessLogOperationNotAllowed(agreementId, record.operation);
        }
        bool redeem = false;
        breakGlass = AccessRules.isBreakGlass(record.authorizationRef);
        if (breakGlass) {
            bool allowed = terms.breakGlassReviewHours != 0 && record.cohortSize == 1 && record.cohortRoot != bytes32(0)
                && AccessRules.breakGlassReason(record.authorizationRef) != BreakGlassReason.NONE;
            if (!allowed) revert AccessLogBreakGlassRefused(record.requestId, agreementId);
        } else if (terms.consentPolicy == ConsentPolicy.COHORT_CONSENT) {
            if (record.cohortRoot == bytes32(0) || record.cohortSize == 0) revert AccessLogCohortMissing(record.requestId);
        } else if (terms.consentPolicy == ConsentPolicy.PATIENT_AUTHORIZATION) {
            if (record.authorizationRef == bytes32(0) || record.cohortSize != 1) {
                revert AccessLogAuthorizationMissing(record.requestId);
            }
            redeem = true;
        }
        if (cache.used >= terms.quota) revert AccessLogQuotaExhausted(agreementId, terms.quota);
        if (redeem) _redeem(record, terms);
        cache.used += 1;
        cache.usedDirty = true;
    }

    /// @dev Redeems the record's patient authorization code for this access, or refuses the record.
    function _redeem(AccessRecord calldata record, AccessTerms memory terms) private {
        AuthorizationFault fault = CONSENTS.redeemAuthorization(
            record.authorizationRef,
            record.requestId,
            terms.holder,
            terms.requester,
            record.datasetId,
            record.fieldMask,
            record.tier,
            record.cohortRoot,
            terms.scenario
        );
        if (fault != AuthorizationFault.NONE) {
            revert AccessLogAuthorizationRefused(record.requestId, record.authorizationRef, fault);
        }
    }

    /// @dev The requester must have signed exactly this request, whatever the decision.
    function _checkSignature(AccessRecord calldata record) private view {
        bytes32 requestDigest_ = _hashTypedDataV4(TypedData.hashAccessRequest(record));
        (address recovered, ECDSA.RecoverError error,) =
            ECDSA.tryRecover(requestDigest_, record.sigV, record.sigR, record.sigS);
        if (error != ECDSA.RecoverError.NoError || recovered != record.requester || recovered == address(0)) {
            revert AccessLogInvalidRequesterSignature(record.requestId, record.requester);
        }
    }

    /// @dev Reads an agreement's terms when the batch moves to a new agreement.
    function _loadAgreement(AgreementId agreementId, Cache memory cache) private {
        if (cache.agreementId == agreementId && cache.terms.status != AgreementStatus.NONE) return;
        _flushUsed(cache);
        AccessTerms memory terms = AGREEMENTS.accessTerms(agreementId);
        if (terms.status == AgreementStatus.NONE) revert AccessLogUnknownAgreement(agreementId);
        cache.agreementId = agreementId;
        cache.terms = terms;
        cache.used = _used[agreementId];
        cache.datasetId = DatasetId.wrap(bytes32(0));
        cache.allowedFields = 0;
        cache.requester = address(0);
    }

    /// @dev A release is keyed like its access, by agreement and request id, and by its result.
    function _releaseKey(bytes32 accessId, AgreementId agreementId, bytes32 resultHash) private pure returns (bytes32) {
        return keccak256(abi.encode(accessId, agreementId, resultHash));
    }

    function _flushUsed(Cache memory cache) private {
        if (!cache.usedDirty) return;
        _used[cache.agreementId] = cache.used;
        cache.usedDirty = false;
    }
}
