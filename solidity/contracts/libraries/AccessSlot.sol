// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AgreementId} from "../types/Ids.sol";
import {Decision, Tier, Operation} from "../types/DataUse.sol";

/// @title AccessSlot
/// @notice One storage word per recorded request: it refuses a duplicate request id and lets a
/// later result release check what the access allowed, without a second slot.
/// @dev Layout: the agreement id's upper 224 bits | decision (8) | tier (8) | operation (8) | 0x01.
/// Agreement ids are keccak outputs, so 224 bits identify one; the low marker bit keeps the
/// word non-zero for every recorded request.
library AccessSlot {
    uint256 private constant _LOW_MASK = 0xFFFFFFFF;

    function pack(AgreementId agreementId, Decision decision_, Tier tier_, Operation operation_)
        internal
        pure
        returns (uint256)
    {
        return (uint256(AgreementId.unwrap(agreementId)) & ~_LOW_MASK) | (uint256(decision_) << 24)
            | (uint256(tier_) << 16) | (uint256(operation_) << 8) | 1;
    }

    function isRecorded(uint256 slot) internal pure returns (bool) {
        return slot != 0;
    }

    function matches(uint256 slot, AgreementId agreementId) internal pure returns (bool) {
        return slot & ~_LOW_MASK == uint256(AgreementId.unwrap(agreementId)) & ~_LOW_MASK;
    }

    function decision(uint256 slot) internal pure returns (Decision) {
        return Decision(uint8(slot >> 24));
    }

    function tier(uint256 slot) internal pure returns (Tier) {
        return Tier(uint8(slot >> 16));
    }

    function operation(uint256 slot) internal pure returns (Operation) {
        return Operation(uint8(slot >> 8));
    }
}
