// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IAccessLog} from "./interfaces/IAccessLog.sol";
import {IAgreementRegistry} from "./interfaces/IAgreementRegistry.sol";
import {IArtifactRegistry} from "./interfaces/IArtifactRegistry.sol";
import {IMembership} from "./interfaces/IMembership.sol";
import {OrgId, AgreementId} from "./types/Ids.sol";
import {Artifact, ArtifactKind, ReleaseRef, Role} from "./types/DataUse.sol";

/// @title ArtifactRegistry
/// @notice Registers derived artifacts and what they derive from. A release counts as a parent only
/// for the organization that received it (the agreement's requester); a parent artifact must be
/// registered first, so derivations are acyclic by construction.
contract ArtifactRegistry is IArtifactRegistry {
    /// @notice The most releases, and the most parent artifacts, one artifact may name.
    /// @dev A federated round across a couple of hundred hospitals fits in one registration: at
    /// most ~16k gas per release (a new agreement each) and ~3k per parent, 256 of each well within
    /// the 2^24 transaction gas cap of EIP-7825. Larger rounds register intermediate artifacts first.
    uint256 public constant MAX_PARENTS = 256;

    IMembership public immutable MEMBERSHIP;
    IAgreementRegistry public immutable AGREEMENTS;
    IAccessLog public immutable ACCESS_LOG;

    mapping(bytes32 artifactId => Artifact) private _artifacts;

    constructor(IMembership membership, IAgreementRegistry agreements, IAccessLog accessLog) {
        MEMBERSHIP = membership;
        AGREEMENTS = agreements;
        ACCESS_LOG = accessLog;
    }

    /// @inheritdoc IArtifactRegistry
    function registerArtifact(
        bytes32 artifactId,
        ArtifactKind kind,
        ReleaseRef[] calldata releases,
        bytes32[] calldata parents,
        bytes32 metadataHash
    ) external {
        (OrgId owner,) = MEMBERSHIP.memberOf(msg.sender);
        // A non-member's organization reads as zero, which no one holds a role in.
        if (!MEMBERSHIP.hasOrgRole(msg.sender, owner, Role.REQUESTER)) {
            revert ArtifactRegistryUnauthorizedRegistrant(msg.sender);
        }
        if (artifactId == bytes32(0) || _isRegistered(artifactId)) revert ArtifactRegistryInvalidArtifact(artifactId);
        uint256 releaseCount = releases.length;
        uint256 parentCount = parents.length;
        if (releaseCount + parentCount == 0 || releaseCount > MAX_PARENTS || parentCount > MAX_PARENTS) {
            revert ArtifactRegistryInvalidParentCount(releaseCount, parentCount, MAX_PARENTS);
        }
        _checkReleases(releases, owner);
        _checkParents(artifactId, parents);
        _artifacts[artifactId] = Artifact({
            owner: owner,
            kind: kind,
            registrant: msg.sender,
            registeredAt: uint48(block.timestamp),
            releaseCount: uint16(releaseCount),
            parentCount: uint16(parentCount)
        });
        emit ArtifactRegistered(artifactId, owner, kind, releases, parents, metadataHash, msg.sender);
    }

    /// @inheritdoc IArtifactRegistry
    function artifact(bytes32 artifactId) external view returns (Artifact memory) {
        return _artifacts[artifactId];
    }

    /// @inheritdoc IArtifactRegistry
    function isRegistered(bytes32 artifactId) external view returns (bool) {
        return _isRegistered(artifactId);
    }

    /// @inheritdoc IArtifactRegistry
    function maxParents() external pure returns (uint256) {
        return MAX_PARENTS;
    }

    /// @dev Each release is a distinct, recorded release received by `owner`, the list ascending by
    /// (agreementId, accessId, resultHash): an access is named by its agreement and request id, so
    /// one request id under two agreements is two releases. Grouped by agreement (one hospital's
    /// updates), each agreement's requester is read once.
    function _checkReleases(ReleaseRef[] calldata releases, OrgId owner) private view {
        bytes32 agreementBefore;
        bytes32 accessBefore;
        bytes32 resultBefore;
        OrgId recipient;
        for (uint256 i = 0; i < releases.length; ++i) {
            ReleaseRef calldata release = releases[i];
            AgreementId agreementId = release.agreementId;
            bytes32 agreement = AgreementId.unwrap(agreementId);
            bytes32 accessId = release.accessId;
            bytes32 resultHash = release.resultHash;
            bool sameAgreement = i > 0 && agreement == agreementBefore;
            if (
                i > 0
                    && (sameAgreement
                        ? accessId < accessBefore || (accessId == accessBefore && resultHash <= resultBefore)
                        : agreement < agreementBefore)
            ) revert ArtifactRegistryUnorderedRelease(accessId, agreementId, resultHash);
            if (!ACCESS_LOG.isReleased(accessId, agreementId, resultHash)) {
                revert ArtifactRegistryUnknownRelease(accessId, agreementId, resultHash);
            }
            if (!sameAgreement) {
                recipient = AGREEMENTS.accessTerms(agreementId).requester;
                agreementBefore = agreement;
            }
            if (!(recipient == owner)) revert ArtifactRegistryReleaseNotReceived(accessId, recipient, owner);
            accessBefore = accessId;
            resultBefore = resultHash;
        }
    }

    /// @dev Each parent is a distinct artifact registered before this one.
    function _checkParents(bytes32 artifactId, bytes32[] calldata parents) private view {
        for (uint256 i = 0; i < parents.length; ++i) {
            bytes32 parent = parents[i];
            if (parent == artifactId) revert ArtifactRegistryCyclicDerivation(artifactId);
            if (i > 0 && parent <= parents[i - 1]) revert ArtifactRegistryUnorderedParent(parent);
            if (!_isRegistered(parent)) revert ArtifactRegistryUnknownParent(parent);
        }
    }

    function _isRegistered(bytes32 artifactId) private view returns (bool) {
        return OrgId.unwrap(_artifacts[artifactId].owner) != bytes32(0);
    }
}
