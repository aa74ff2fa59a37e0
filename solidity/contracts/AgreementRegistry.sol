// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {IAgreementRegistry} from "./interfaces/IAgreementRegistry.sol";
import {IDatasetRegistry} from "./interfaces/IDatasetRegistry.sol";
import {IMembership} from "./interfaces/IMembership.sol";
import {AccessRules} from "./libraries/AccessRules.sol";
import {TypedData} from "./libraries/TypedData.sol";
import {OrgId, DatasetId, AgreementId} from "./types/Ids.sol";
import {
    AccessTerms,
    AgreementStatus,
    AgreementTerms,
    ConsentPolicy,
    Dataset,
    OrgStatus,
    Role,
    Scenario,
    Tier
} from "./types/DataUse.sol";

/// @title AgreementRegistry
/// @notice Data-use agreements: proposed by the holder's steward, activated by the EIP-712
/// signatures of both parties, supervised by stewards and regulators.
contract AgreementRegistry is IAgreementRegistry, EIP712 {
    /// @dev Who imposed a suspension, and so who may lift it: that party's stewards, or any
    /// regulator (a regulator's only a regulator).
    enum Suspender {
        NONE,
        HOLDER,
        REQUESTER,
        REGULATOR
    }

    /// @dev The first slot holds everything an access decision reads besides the parties.
    struct Agreement {
        AgreementStatus status;
        Scenario scenario;
        Tier maxTier;
        uint8 operations;
        ConsentPolicy consentPolicy;
        Suspender suspendedBy;
        uint64 validFrom;
        uint64 validUntil;
        uint64 quota;
        uint16 breakGlassReviewHours;
        uint64 version;
        uint64 deadline;
        OrgId holder;
        OrgId requester;
        AgreementId previous;
        bytes32 digest;
        address holderSigner;
        address requesterSigner;
    }

    IMembership public immutable MEMBERSHIP;
    IDatasetRegistry public immutable DATASETS;

    mapping(AgreementId id => Agreement) private _agreements;
    mapping(AgreementId id => mapping(DatasetId dataset => uint256 fieldMask)) private _allowedFields;

    constructor(IMembership membership, IDatasetRegistry datasets) EIP712("DataUseLedger.AgreementRegistry", "1") {
        MEMBERSHIP = membership;
        DATASETS = datasets;
    }

    /// @inheritdoc IAgreementRegistry
    function propose(AgreementTerms calldata terms) external returns (AgreementId id) {
        return _propose(terms, 1, AgreementId.wrap(bytes32(0)));
    }

    /// @inheritdoc IAgreementRegistry
    function amend(AgreementId previous, AgreementTerms calldata terms) external returns (AgreementId id) {
        Agreement storage prior = _existing(previous);
        _checkAmendable(previous, prior);
        if (!(prior.holder == terms.holder) || !(prior.requester == terms.requester)) {
            revert AgreementRegistryAmendmentPartiesChanged(previous);
        }
        return _propose(terms, prior.version + 1, previous);
    }

    /// @inheritdoc IAgreementRegistry
    function sign(AgreementId id, address signer, bytes calldata signature) external {
        Agreement storage agreement = _existing(id);
        if (agreement.status != AgreementStatus.PROPOSED) revert AgreementRegistryInvalidStatus(id, agreement.status);
        if (block.timestamp > agreement.deadline) revert AgreementRegistrySignatureExpired(id, agreement.deadline);
        (address recovered, ECDSA.RecoverError error,) = ECDSA.tryRecover(agreement.digest, signature);
        if (error != ECDSA.RecoverError.NoError || recovered != signer) {
            revert AgreementRegistryInvalidSignature(id, signer);
        }
        Party party = _partyOf(id, agreement, signer);
        if (party == Party.HOLDER) agreement.holderSigner = signer;
        else agreement.requesterSigner = signer;
        emit AgreementSigned(id, signer, party, signature);
        if (agreement.holderSigner != address(0) && agreement.requesterSigner != address(0)) _activate(id, agreement);
    }

    /// @inheritdoc IAgreementRegistry
    function suspend(AgreementId id, bytes32 reason) external {
        Agreement storage agreement = _existing(id);
        AgreementStatus current = _statusOf(agreement);
        if (current != AgreementStatus.ACTIVE) revert AgreementRegistryInvalidStatus(id, current);
        Suspender by;
        if (MEMBERSHIP.isRegulator(msg.sender)) by = Suspender.REGULATOR;
        else if (MEMBERSHIP.hasOrgRole(msg.sender, agreement.holder, Role.STEWARD)) by = Suspender.HOLDER;
        else if (MEMBERSHIP.hasOrgRole(msg.sender, agreement.requester, Role.STEWARD)) by = Suspender.REQUESTER;
        else revert AgreementRegistryUnauthorizedAccount(id, msg.sender);
        agreement.status = AgreementStatus.SUSPENDED;
        agreement.suspendedBy = by;
        emit AgreementSuspended(id, msg.sender, reason);
    }

    /// @inheritdoc IAgreementRegistry
    function resume(AgreementId id) external {
        Agreement storage agreement = _existing(id);
        AgreementStatus current = _statusOf(agreement);
        if (current != AgreementStatus.SUSPENDED) revert AgreementRegistryInvalidStatus(id, current);
        Suspender by = agreement.suspendedBy;
        // The supervised party does not lift the other's suspension (the requester the
        // holder's, say, to be granted again at once).
        bool allowed = MEMBERSHIP.isRegulator(msg.sender)
            || (by == Suspender.HOLDER && MEMBERSHIP.hasOrgRole(msg.sender, agreement.holder, Role.STEWARD))
            || (by == Suspender.REQUESTER && MEMBERSHIP.hasOrgRole(msg.sender, agreement.requester, Role.STEWARD));
        if (!allowed) revert AgreementRegistryUnauthorizedAccount(id, msg.sender);
        agreement.status = AgreementStatus.ACTIVE;
        agreement.suspendedBy = Suspender.NONE;
        emit AgreementResumed(id, msg.sender);
    }

    /// @inheritdoc IAgreementRegistry
    function revoke(AgreementId id, bytes32 reason) external {
        Agreement storage agreement = _existing(id);
        AgreementStatus current = _statusOf(agreement);
        if (
            current != AgreementStatus.PROPOSED && current != AgreementStatus.ACTIVE
                && current != AgreementStatus.SUSPENDED
        ) revert AgreementRegistryInvalidStatus(id, current);
        bool allowed = MEMBERSHIP.isRegulator(msg.sender)
            || MEMBERSHIP.hasOrgRole(msg.sender, agreement.holder, Role.STEWARD);
        if (!allowed) revert AgreementRegistryUnauthorizedAccount(id, msg.sender);
        agreement.status = AgreementStatus.REVOKED;
        emit AgreementRevoked(id, msg.sender, reason);
    }

    /// @inheritdoc IAgreementRegistry
    function expire(AgreementId id) external {
        Agreement storage agreement = _existing(id);
        if (agreement.status != AgreementStatus.ACTIVE && agreement.status != AgreementStatus.SUSPENDED) {
            revert AgreementRegistryInvalidStatus(id, agreement.status);
        }
        if (block.timestamp <= agreement.validUntil) revert AgreementRegistryNotExpired(id, agreement.validUntil);
        agreement.status = AgreementStatus.EXPIRED;
        emit AgreementExpired(id);
    }

    /// @inheritdoc IAgreementRegistry
    function digest(AgreementId id) external view returns (bytes32) {
        return _existing(id).digest;
    }

    /// @inheritdoc IAgreementRegistry
    function status(AgreementId id) external view returns (AgreementStatus) {
        return _statusOf(_agreements[id]);
    }

    /// @inheritdoc IAgreementRegistry
    function accessTerms(AgreementId id) external view returns (AccessTerms memory terms) {
        Agreement storage agreement = _agreements[id];
        terms.status = agreement.status;
        terms.scenario = agreement.scenario;
        terms.maxTier = agreement.maxTier;
        terms.operations = agreement.operations;
        terms.consentPolicy = agreement.consentPolicy;
        terms.validFrom = agreement.validFrom;
        terms.validUntil = agreement.validUntil;
        terms.quota = agreement.quota;
        terms.holder = agreement.holder;
        terms.requester = agreement.requester;
        terms.breakGlassReviewHours = agreement.breakGlassReviewHours;
    }

    /// @inheritdoc IAgreementRegistry
    function allowedFields(AgreementId id, DatasetId dataset) external view returns (uint256) {
        return _allowedFields[id][dataset];
    }

    /// @inheritdoc IAgreementRegistry
    function versionOf(AgreementId id) external view returns (uint64 version, AgreementId previous) {
        Agreement storage agreement = _existing(id);
        return (agreement.version, agreement.previous);
    }

    /// @inheritdoc IAgreementRegistry
    function signers(AgreementId id) external view returns (address holderSigner, address requesterSigner) {
        Agreement storage agreement = _existing(id);
        return (agreement.holderSigner, agreement.requesterSigner);
    }

    function _propose(AgreementTerms calldata terms, uint64 version, AgreementId previous)
        private
        returns (AgreementId id)
    {
        if (!MEMBERSHIP.hasOrgRole(msg.sender, terms.holder, Role.STEWARD)) {
            revert AgreementRegistryUnauthorizedProposer(msg.sender, terms.holder);
        }
        (, OrgStatus requesterStatus) = MEMBERSHIP.organization(terms.requester);
        if (requesterStatus != OrgStatus.ACTIVE) revert AgreementRegistryInvalidRequester(terms.requester);
        _checkPolicy(terms);
        _checkTime(terms);
        id = AgreementId.wrap(keccak256(abi.encode(terms.holder, terms.requester, terms.nonce)));
        Agreement storage agreement = _agreements[id];
        if (agreement.status != AgreementStatus.NONE) revert AgreementRegistryAgreementExists(id);
        _storeScope(id, terms);
        agreement.status = AgreementStatus.PROPOSED;
        agreement.scenario = terms.scenario;
        agreement.maxTier = terms.maxTier;
        agreement.operations = terms.operations;
        agreement.consentPolicy = terms.consentPolicy;
        agreement.validFrom = terms.validFrom;
        agreement.validUntil = terms.validUntil;
        agreement.quota = terms.quota;
        agreement.breakGlassReviewHours = terms.breakGlassReviewHours;
        agreement.version = version;
        agreement.deadline = terms.deadline;
        agreement.holder = terms.holder;
        agreement.requester = terms.requester;
        agreement.previous = previous;
        bytes32 agreementDigest = _hashTypedDataV4(TypedData.hashAgreement(terms, id, version, previous));
        agreement.digest = agreementDigest;
        emit AgreementProposed(id, terms.holder, terms.requester, version, previous, agreementDigest, terms);
    }

    /// @dev Scenario ceiling, consent policy, break-glass and operations: the data space's fixed rules.
    function _checkPolicy(AgreementTerms calldata terms) private pure {
        Tier ceiling = AccessRules.ceiling(terms.scenario);
        if (terms.maxTier > ceiling) revert AgreementRegistryTierAboveCeiling(terms.maxTier, ceiling);
        bool crossOrg = !(terms.holder == terms.requester);
        ConsentPolicy required = AccessRules.requiredConsent(terms.scenario, terms.maxTier, crossOrg);
        if (terms.consentPolicy != required) {
            revert AgreementRegistryConsentPolicyMismatch(terms.scenario, required, terms.consentPolicy);
        }
        if (!AccessRules.breakGlassAllowed(terms.scenario, terms.consentPolicy, terms.breakGlassReviewHours)) {
            revert AgreementRegistryInvalidBreakGlass(terms.scenario, terms.breakGlassReviewHours);
        }
        if (terms.operations == 0 || terms.operations & ~AccessRules.ALL_OPERATIONS != 0) {
            revert AgreementRegistryInvalidOperations(terms.operations);
        }
        if (terms.quota == 0) revert AgreementRegistryZeroQuota();
    }

    function _checkTime(AgreementTerms calldata terms) private view {
        if (terms.validFrom >= terms.validUntil || terms.validUntil <= block.timestamp) {
            revert AgreementRegistryInvalidWindow(terms.validFrom, terms.validUntil);
        }
        if (terms.deadline < block.timestamp) revert AgreementRegistryDeadlinePassed(terms.deadline);
    }

    /// @dev Every dataset must be the holder's, listed once, with fields it actually has.
    function _storeScope(AgreementId id, AgreementTerms calldata terms) private {
        uint256 count = terms.datasets.length;
        if (count == 0 || count != terms.fieldMasks.length) {
            revert AgreementRegistryInvalidScope(count, terms.fieldMasks.length);
        }
        mapping(DatasetId => uint256) storage allowed = _allowedFields[id];
        for (uint256 i = 0; i < count; ++i) {
            DatasetId datasetId = terms.datasets[i];
            uint256 mask = terms.fieldMasks[i];
            Dataset memory dataset = DATASETS.dataset(datasetId);
            if (!(dataset.holder == terms.holder) || allowed[datasetId] != 0) {
                revert AgreementRegistryInvalidDataset(datasetId);
            }
            if (mask == 0 || (dataset.fieldCount < 256 && mask >> dataset.fieldCount != 0)) {
                revert AgreementRegistryInvalidFieldMask(datasetId, mask, dataset.fieldCount);
            }
            if (terms.maxTier > dataset.maxTier) revert AgreementRegistryTierAboveCeiling(terms.maxTier, dataset.maxTier);
            allowed[datasetId] = mask;
        }
    }

    /// @dev Which party `signer` signs for. One account never signs for both.
    function _partyOf(AgreementId id, Agreement storage agreement, address signer) private view returns (Party) {
        bool holderSteward = MEMBERSHIP.hasOrgRole(signer, agreement.holder, Role.STEWARD);
        if (holderSteward && agreement.holderSigner == address(0)) return Party.HOLDER;
        bool requesterSide = MEMBERSHIP.hasOrgRole(signer, agreement.requester, Role.STEWARD)
            || MEMBERSHIP.hasOrgRole(signer, agreement.requester, Role.REQUESTER);
        if (requesterSide && agreement.requesterSigner == address(0) && signer != agreement.holderSigner) {
            return Party.REQUESTER;
        }
        if (holderSteward) revert AgreementRegistryAlreadySigned(id, Party.HOLDER);
        if (requesterSide) revert AgreementRegistryAlreadySigned(id, Party.REQUESTER);
        revert AgreementRegistryUnauthorizedSigner(id, signer);
    }

    function _activate(AgreementId id, Agreement storage agreement) private {
        agreement.status = AgreementStatus.ACTIVE;
        emit AgreementActivated(id);
        AgreementId previous = agreement.previous;
        if (AgreementId.unwrap(previous) == bytes32(0)) return;
        Agreement storage prior = _agreements[previous];
        // The previous version may have been revoked, superseded by a rival amendment or
        // suspended by a regulator since this amendment was proposed: then it must not activate.
        _checkAmendable(previous, prior);
        prior.status = AgreementStatus.SUPERSEDED;
        emit AgreementSuperseded(previous, id);
    }

    /// @dev Only a live version can be amended, and a regulator's suspension is no way out.
    function _checkAmendable(AgreementId id, Agreement storage agreement) private view {
        AgreementStatus current = _statusOf(agreement);
        bool amendable = current == AgreementStatus.ACTIVE
            || (current == AgreementStatus.SUSPENDED && agreement.suspendedBy != Suspender.REGULATOR);
        if (!amendable) revert AgreementRegistryInvalidStatus(id, current);
    }

    function _existing(AgreementId id) private view returns (Agreement storage agreement) {
        agreement = _agreements[id];
        if (agreement.status == AgreementStatus.NONE) revert AgreementRegistryUnknownAgreement(id);
    }

    /// @dev Expiry needs no transaction: a window that is over ends the agreement.
    function _statusOf(Agreement storage agreement) private view returns (AgreementStatus) {
        AgreementStatus stored = agreement.status;
        if (
            (stored == AgreementStatus.ACTIVE || stored == AgreementStatus.SUSPENDED)
                && block.timestamp > agreement.validUntil
        ) return AgreementStatus.EXPIRED;
        return stored;
    }
}
