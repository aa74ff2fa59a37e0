// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId, AgreementId} from "../types/Ids.sol";
import {Artifact, ArtifactKind, ReleaseRef} from "../types/DataUse.sol";

/// @title IArtifactRegistry
/// @notice What was made from released results: artifacts (results, model updates, models) keyed
/// by content hash, each derived from result releases and/or earlier artifacts, so a federated
/// model traces back through its updates to every access, agreement, signature and consent.
///
/// Derivations form a DAG: every parent artifact must be registered before its child, and an
/// artifact is registered once and never changed, so no cycle can ever be recorded.
///
/// A release counts as a parent only for the organization that received it, the requester of
/// the agreement it was released under. A registered artifact may be a parent of any
/// organization's artifact (a benchmark of another's model, say).
///
/// Ids: the SHA-256 of the artifact's bytes by convention (`dul.artifacts.content_id`), so a
/// MODEL_UPDATE that left a hospital in one release has its release's result hash as its id. An
/// id is a claim about content by an accountable member: the first registration of a content
/// hash wins, and its registrant is recorded.
///
/// Releases and parents are sets: each list is given in strictly ascending order (releases by
/// `agreementId`, then `accessId`, then `resultHash`: an access is named by its agreement and
/// request id, so the same request id and result under two agreements are two releases), so
/// none repeats and one derivation has one encoding.
interface IArtifactRegistry {
    /// @notice The artifact id (content hash) is zero or already registered.
    error ArtifactRegistryInvalidArtifact(bytes32 artifactId);
    /// @notice `account` is not an active REQUESTER member of an organization.
    error ArtifactRegistryUnauthorizedRegistrant(address account);
    /// @notice An artifact needs at least one parent, and at most `max` of each kind.
    error ArtifactRegistryInvalidParentCount(uint256 releases, uint256 artifacts, uint256 max);
    /// @notice The release is not strictly after the one before it in `releases`, ordered by
    /// (agreementId, accessId, resultHash).
    error ArtifactRegistryUnorderedRelease(bytes32 accessId, AgreementId agreementId, bytes32 resultHash);
    /// @notice No result `resultHash` was released from `accessId` under `agreementId`.
    error ArtifactRegistryUnknownRelease(bytes32 accessId, AgreementId agreementId, bytes32 resultHash);
    /// @notice The release went to `recipient`, not to `owner`, the registrant's organization.
    error ArtifactRegistryReleaseNotReceived(bytes32 accessId, OrgId recipient, OrgId owner);
    /// @notice An artifact cannot derive from itself.
    error ArtifactRegistryCyclicDerivation(bytes32 artifactId);
    /// @notice `parent` is not strictly after the one before it in `parents`.
    error ArtifactRegistryUnorderedParent(bytes32 parent);
    /// @notice No artifact is registered under `parent`.
    error ArtifactRegistryUnknownParent(bytes32 parent);

    /// @notice An artifact was registered by `registrant` for its organization `owner`, derived
    /// from exactly `releases` and `parents`. `metadataHash` commits to off-chain metadata (e.g. a
    /// model card or a round number) without revealing it.
    event ArtifactRegistered(
        bytes32 indexed artifactId,
        OrgId indexed owner,
        ArtifactKind indexed kind,
        ReleaseRef[] releases,
        bytes32[] parents,
        bytes32 metadataHash,
        address registrant
    );

    /// @notice Registers `artifactId`, owned by the caller's organization, derived from `releases`
    /// (each received by that organization) and/or registered `parents`, each list in strictly
    /// ascending order. Only an active REQUESTER member.
    function registerArtifact(
        bytes32 artifactId,
        ArtifactKind kind,
        ReleaseRef[] calldata releases,
        bytes32[] calldata parents,
        bytes32 metadataHash
    ) external;

    /// @notice The artifact registered under `artifactId` (owner zero when unknown).
    function artifact(bytes32 artifactId) external view returns (Artifact memory);

    /// @notice Whether an artifact is registered under `artifactId`.
    function isRegistered(bytes32 artifactId) external view returns (bool);

    /// @notice The most parents of each kind (releases, artifacts) one artifact may name.
    function maxParents() external view returns (uint256);
}
