// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AgreementId} from "../types/Ids.sol";
import {AgreementTerms, AccessRecord} from "../types/DataUse.sol";

/// @title TypedData
/// @notice EIP-712 struct hashes of what parties sign. The type strings are part of the public
/// interface: the Python side builds the same typed data for wallets and keystores.
library TypedData {
    bytes32 internal constant AGREEMENT_TYPEHASH = keccak256(
        "Agreement(bytes32 id,uint64 version,bytes32 previous,bytes32 holder,bytes32 requester,"
        "bytes32[] datasets,uint256[] fieldMasks,uint8 scenario,uint32[] duoCodes,bytes32 diseaseCode,"
        "bytes32 ethicsApproval,uint8 maxTier,uint8 operations,uint64 validFrom,uint64 validUntil,"
        "uint64 quota,uint8 consentPolicy,bytes32 termsHash,uint256 nonce,uint64 deadline,uint16 breakGlassReviewHours)"
    );

    bytes32 internal constant ACCESS_REQUEST_TYPEHASH = keccak256(
        "AccessRequest(bytes32 requestId,bytes32 agreementId,bytes32 datasetId,uint256 fieldMask,"
        "uint8 tier,uint8 operation,bytes32 requestHash,bytes32 authorizationRef,uint64 deadline)"
    );

    /// @notice Struct hash of an agreement version. Id and version are inside, so a signature
    /// can never be replayed on another agreement or another version of the same one.
    function hashAgreement(AgreementTerms calldata t, AgreementId id, uint64 version, AgreementId previous)
        internal
        pure
        returns (bytes32)
    {
        // Three parts: one abi.encode of all twenty-two words would not fit the stack.
        bytes memory parties = abi.encode(AGREEMENT_TYPEHASH, id, version, previous, t.holder, t.requester);
        bytes memory scope = abi.encode(
            keccak256(abi.encodePacked(t.datasets)),
            keccak256(abi.encodePacked(t.fieldMasks)),
            t.scenario,
            keccak256(abi.encodePacked(t.duoCodes)),
            t.diseaseCode,
            t.ethicsApproval,
            t.maxTier
        );
        bytes memory limits = abi.encode(
            t.operations,
            t.validFrom,
            t.validUntil,
            t.quota,
            t.consentPolicy,
            t.termsHash,
            t.nonce,
            t.deadline,
            t.breakGlassReviewHours
        );
        return keccak256(bytes.concat(parties, scope, limits));
    }

    /// @notice Struct hash of the access request the requester signed.
    function hashAccessRequest(AccessRecord calldata r) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                ACCESS_REQUEST_TYPEHASH,
                r.requestId,
                r.agreementId,
                r.datasetId,
                r.fieldMask,
                r.tier,
                r.operation,
                r.requestHash,
                r.authorizationRef,
                r.deadline
            )
        );
    }
}
