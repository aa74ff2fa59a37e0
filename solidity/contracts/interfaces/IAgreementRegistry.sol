// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId, DatasetId, AgreementId} from "../types/Ids.sol";
import {AgreementStatus, AgreementTerms, AccessTerms, Scenario, Tier, ConsentPolicy} from "../types/DataUse.sol";

/// @title IAgreementRegistry
/// @notice Data-use agreements, the digital contracts that fix purpose, scope and time limit.
/// Lifecycle: PROPOSED -> ACTIVE (once a steward of the holder and a steward or requester of the
/// requesting organization have signed the EIP-712 `Agreement`) -> SUSPENDED <-> ACTIVE ->
/// REVOKED | EXPIRED; an activated amendment turns its previous version SUPERSEDED.
/// Signatures are verified on chain and may be relayed by anyone; the EIP-712 domain (chain id,
/// this contract) and the agreement id and version inside the signed data make replay impossible.
interface IAgreementRegistry {
    /// @notice Which party a signature stands for.
    enum Party {
        HOLDER,
        REQUESTER
    }

    // --- proposal ---
    /// @notice `account` is not an active steward of the holder organization `holder`.
    error AgreementRegistryUnauthorizedProposer(address account, OrgId holder);
    /// @notice An agreement with this id (from holder, requester and nonce) already exists.
    error AgreementRegistryAgreementExists(AgreementId id);
    /// @notice The requesting organization is unknown or not active.
    error AgreementRegistryInvalidRequester(OrgId requester);
    /// @notice No dataset given, or datasets and field masks differ in length.
    error AgreementRegistryInvalidScope(uint256 datasets, uint256 fieldMasks);
    /// @notice `dataset` is unknown, held by another organization, or listed twice.
    error AgreementRegistryInvalidDataset(DatasetId dataset);
    /// @notice `mask` is empty or names fields beyond the dataset's `fieldCount`.
    error AgreementRegistryInvalidFieldMask(DatasetId dataset, uint256 mask, uint16 fieldCount);
    /// @notice `tier` is above `ceiling` (the scenario's or a dataset's).
    error AgreementRegistryTierAboveCeiling(Tier tier, Tier ceiling);
    /// @notice `scenario` at its tier needs consent policy `required`.
    error AgreementRegistryConsentPolicyMismatch(Scenario scenario, ConsentPolicy required, ConsentPolicy given);
    /// @notice Break-glass (a review window of `reviewHours`) is only for clinical care that needs
    /// the patient's code, with a window of at most 720 hours.
    error AgreementRegistryInvalidBreakGlass(Scenario scenario, uint16 reviewHours);
    /// @notice The operation bit set is empty or has unknown bits.
    error AgreementRegistryInvalidOperations(uint8 operations);
    /// @notice The validity window is empty or already over.
    error AgreementRegistryInvalidWindow(uint64 validFrom, uint64 validUntil);
    /// @notice The access quota is zero.
    error AgreementRegistryZeroQuota();
    /// @notice The signing deadline has passed.
    error AgreementRegistryDeadlinePassed(uint64 deadline);
    /// @notice An amendment must keep the parties of the version it amends.
    error AgreementRegistryAmendmentPartiesChanged(AgreementId previous);

    // --- signatures ---
    /// @notice The signature does not recover to `signer` (wrong key, wrong data, chain or contract).
    error AgreementRegistryInvalidSignature(AgreementId id, address signer);
    /// @notice `signer` may not sign for either party of the agreement.
    error AgreementRegistryUnauthorizedSigner(AgreementId id, address signer);
    /// @notice `party` has already signed.
    error AgreementRegistryAlreadySigned(AgreementId id, Party party);
    /// @notice Signatures were due by `deadline`.
    error AgreementRegistrySignatureExpired(AgreementId id, uint64 deadline);

    // --- lifecycle ---
    /// @notice No agreement is registered under `id`.
    error AgreementRegistryUnknownAgreement(AgreementId id);
    /// @notice The agreement is in `status`, which does not allow this step.
    error AgreementRegistryInvalidStatus(AgreementId id, AgreementStatus status);
    /// @notice `account` may not take this step on the agreement.
    error AgreementRegistryUnauthorizedAccount(AgreementId id, address account);
    /// @notice The agreement is not yet past its `validUntil`.
    error AgreementRegistryNotExpired(AgreementId id, uint64 validUntil);

    /// @notice A new agreement version was proposed; `terms` are exactly what the parties sign.
    event AgreementProposed(
        AgreementId indexed id,
        OrgId indexed holder,
        OrgId indexed requester,
        uint64 version,
        AgreementId previous,
        bytes32 digest,
        AgreementTerms terms
    );
    /// @notice `signer` signed for `party`; `signature` is kept so anyone can re-verify it off chain.
    event AgreementSigned(AgreementId indexed id, address indexed signer, Party party, bytes signature);
    event AgreementActivated(AgreementId indexed id);
    event AgreementSuspended(AgreementId indexed id, address indexed by, bytes32 reason);
    event AgreementResumed(AgreementId indexed id, address indexed by);
    event AgreementRevoked(AgreementId indexed id, address indexed by, bytes32 reason);
    event AgreementExpired(AgreementId indexed id);
    event AgreementSuperseded(AgreementId indexed id, AgreementId indexed by);

    /// @notice Proposes version 1 of an agreement. Only a steward of `terms.holder`.
    /// @return id keccak256(abi.encode(holder, requester, nonce))
    function propose(AgreementTerms calldata terms) external returns (AgreementId id);

    /// @notice Proposes the next version of `previous` (same parties); it supersedes `previous`
    /// once active. Only a steward of the holder.
    function amend(AgreementId previous, AgreementTerms calldata terms) external returns (AgreementId id);

    /// @notice Records `signer`'s EIP-712 signature over the agreement; activates it once both
    /// parties have signed. Anyone may relay.
    function sign(AgreementId id, address signer, bytes calldata signature) external;

    /// @notice Suspends an active agreement. A steward of either party or any regulator.
    function suspend(AgreementId id, bytes32 reason) external;

    /// @notice Resumes a suspended agreement. A regulator, or a steward of the party whose
    /// steward suspended it (never the other party's); a regulator's suspension only a regulator.
    function resume(AgreementId id) external;

    /// @notice Ends an agreement for good. A steward of the holder or any regulator.
    function revoke(AgreementId id, bytes32 reason) external;

    /// @notice Records that an agreement ran past its window. Anyone.
    function expire(AgreementId id) external;

    /// @notice The EIP-712 digest the parties sign for `id`.
    function digest(AgreementId id) external view returns (bytes32);

    /// @notice The status of `id`, EXPIRED as soon as its window is over.
    function status(AgreementId id) external view returns (AgreementStatus);

    /// @notice Everything an access decision needs to know about `id` (status as stored).
    function accessTerms(AgreementId id) external view returns (AccessTerms memory);

    /// @notice The fields of `dataset` that `id` allows (bit set; zero when out of scope).
    function allowedFields(AgreementId id, DatasetId dataset) external view returns (uint256);

    /// @notice Version number and previous version of `id`.
    function versionOf(AgreementId id) external view returns (uint64 version, AgreementId previous);

    /// @notice Who signed `id` for each party (zero while unsigned).
    function signers(AgreementId id) external view returns (address holderSigner, address requesterSigner);
}
