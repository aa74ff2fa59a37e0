// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Decision, Tier, Operation} from "../types/DataUse.sol";

/// @title AccessSlot
/// @notice One storage word per recorded access, under its agreement and request id: it refuses
/// a duplicate and lets a later result release check what the access allowed, without a second slot.
/// @dev Layout: decision (8) | tier (8) | operation (8) | 0x01. The low marker bit keeps the word
/// non-zero for every recorded access.
library AccessSlot {
    function pack(Decision decision_, Tier tier_, Operation operation_) internal pure returns (uint256) {
        return (uint256(decision_) << 24) | (uint256(tier_) << 16) | (uint256(operation_) << 8) | 1;
    }

    function isRecorded(uint256 slot) internal pure returns (bool) {
        return slot != 0;
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
