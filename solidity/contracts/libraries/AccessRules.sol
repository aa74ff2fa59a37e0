// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {Tier, Scenario, ConsentPolicy, Operation, ReleaseKind} from "../types/DataUse.sol";

/// @title AccessRules
/// @notice The data space's fixed policy: scenario ceilings (hierarchical access), the consent each
/// scenario needs, and what may be released from an access. The gateway's policy core mirrors it.
library AccessRules {
    uint8 internal constant ALL_OPERATIONS = 0x07;

    /// @notice The most sensitive tier a scenario may ever reach.
    function ceiling(Scenario scenario) internal pure returns (Tier) {
        if (scenario == Scenario.CLINICAL_CARE || scenario == Scenario.INSURANCE_CLAIM) return Tier.IDENTIFIED;
        if (scenario == Scenario.RESEARCH) return Tier.PSEUDONYMIZED;
        if (scenario == Scenario.AI_TRAINING) return Tier.MODEL_PARAMETERS;
        return Tier.DEIDENTIFIED; // TEACHING
    }

    /// @notice The consent policy an agreement for `scenario` at `maxTier` must carry.
    /// @dev Research above de-identified needs patient consent; insurance claims need a patient's code.
    function requiredConsent(Scenario scenario, Tier maxTier) internal pure returns (ConsentPolicy) {
        if (scenario == Scenario.INSURANCE_CLAIM) return ConsentPolicy.PATIENT_AUTHORIZATION;
        if (scenario == Scenario.RESEARCH && maxTier > Tier.DEIDENTIFIED) return ConsentPolicy.COHORT_CONSENT;
        return ConsentPolicy.NONE;
    }

    /// @notice Whether `operations` (a bit set) contains `operation`.
    function allows(uint8 operations, Operation operation) internal pure returns (bool) {
        return operations & (uint8(1) << uint8(operation)) != 0;
    }

    /// @notice Whether a granted access at `tier` for `operation` may release a result of `kind`.
    /// @dev Aggregates may leave any query; model updates only a training run; extracts only an
    /// export at or above the tier they reveal.
    function releasable(ReleaseKind kind, Tier tier, Operation operation) internal pure returns (bool) {
        if (kind == ReleaseKind.AGGREGATE_RESULT) return operation != Operation.TRAIN;
        if (kind == ReleaseKind.MODEL_UPDATE) return operation == Operation.TRAIN;
        if (operation != Operation.EXPORT_RESULT) return false;
        if (kind == ReleaseKind.DEIDENTIFIED_EXTRACT) return tier >= Tier.DEIDENTIFIED;
        if (kind == ReleaseKind.PSEUDONYMIZED_EXTRACT) return tier >= Tier.PSEUDONYMIZED;
        return tier == Tier.IDENTIFIED; // IDENTIFIED_EXTRACT
    }
}
