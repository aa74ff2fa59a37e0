// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {MessageHashUtils} from "@openzeppelin/contracts/utils/cryptography/MessageHashUtils.sol";
import {TypedData} from "../libraries/TypedData.sol";
import {AgreementId} from "../types/Ids.sol";
import {AccessRecord, AgreementTerms} from "../types/DataUse.sol";

/// @title TypedDataMock
/// @notice Test-only: exposes the EIP-712 hashing the registry uses, so cross-language vectors
/// (signed off chain, e.g. by eth-account) can be checked against the on-chain code.
contract TypedDataMock {
    /// @notice The `Agreement` struct hash exactly as AgreementRegistry computes it.
    function hashAgreement(AgreementTerms calldata terms, AgreementId id, uint64 version, AgreementId previous)
        external
        pure
        returns (bytes32)
    {
        return TypedData.hashAgreement(terms, id, version, previous);
    }

    /// @notice The type hash of `Agreement`.
    function agreementTypehash() external pure returns (bytes32) {
        return TypedData.AGREEMENT_TYPEHASH;
    }

    /// @notice The `AccessRequest` struct hash exactly as AccessLog computes it.
    function hashAccessRequest(AccessRecord calldata record) external pure returns (bytes32) {
        return TypedData.hashAccessRequest(record);
    }

    /// @notice The type hash of `AccessRequest`.
    function accessRequestTypehash() external pure returns (bytes32) {
        return TypedData.ACCESS_REQUEST_TYPEHASH;
    }

    /// @notice The EIP-712 digest of `structHash` under `domainSeparator`.
    function toTypedDataHash(bytes32 domainSeparator, bytes32 structHash) external pure returns (bytes32) {
        return MessageHashUtils.toTypedDataHash(domainSeparator, structHash);
    }

    /// @notice The signer of `digest` (reverts on a malformed or malleable signature).
    function recover(bytes32 digest, bytes calldata signature) external pure returns (address) {
        return ECDSA.recover(digest, signature);
    }
}
