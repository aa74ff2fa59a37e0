// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {BreakGlassReason, Tier, Scenario, ConsentPolicy, Operation, ReleaseKind} from "../types/DataUse.sol";

/// @title AccessRules
/// @notice The data space's fixed policy: scenario ceilings (hierarchical access), the consent each
/// scenario needs, and what may be released from an access. The gateway's policy core mirrors it.
library AccessRules {
    uint8 internal constant ALL_OPERATIONS = 0x07;
    /// @notice The longest review window an agreement may give its break-glass accesses (30 days).
    uint16 internal constant MAX_BREAK_GLASS_REVIEW_HOURS = 720;
    /// @dev A break-glass request's `authorizationRef`: this tag, left-aligned, with the
    /// BreakGlassReason in the last byte. No code hash (keccak256) takes this form in practice.
    bytes32 internal constant BREAK_GLASS_TAG = "DUL:break-glass";

    /// @notice The most sensitive tier a scenario may ever reach.
    function ceiling(Scenario scenario) internal pure returns (Tier) {
        if (scenario == Scenario.CLINICAL_CARE || scenario == Scenario.INSURANCE_CLAIM) return Tier.IDENTIFIED;
        if (scenario == Scenario.RESEARCH) return Tier.PSEUDONYMIZED;
        if (scenario == Scenario.AI_TRAINING) return Tier.MODEL_PARAMETERS;
        return Tier.DEIDENTIFIED; // TEACHING
    }

    /// @notice The consent policy an agreement for `scenario` at `maxTier` must carry; `crossOrg`:
    /// the requester is another organization than the holder.
    /// @dev Research above de-identified needs patient consent; insurance claims, and identified
    /// clinical care by another organization (a transfer or referral), need a patient's code.
    /// Clinical care within the holder is the hospital's own treatment relationship: no transfer.
    function requiredConsent(Scenario scenario, Tier maxTier, bool crossOrg) internal pure returns (ConsentPolicy) {
        if (scenario == Scenario.INSURANCE_CLAIM) return ConsentPolicy.PATIENT_AUTHORIZATION;
        if (scenario == Scenario.CLINICAL_CARE && crossOrg && maxTier == Tier.IDENTIFIED) {
            return ConsentPolicy.PATIENT_AUTHORIZATION;
        }
        if (scenario == Scenario.RESEARCH && maxTier > Tier.DEIDENTIFIED) return ConsentPolicy.COHORT_CONSENT;
        return ConsentPolicy.NONE;
    }

    /// @notice Whether an agreement may allow break-glass: only a clinical-care transfer, whose
    /// accesses otherwise need the patient's code, with a review window of 1 to 720 hours.
    function breakGlassAllowed(Scenario scenario, ConsentPolicy policy, uint16 reviewHours) internal pure returns (bool) {
        if (reviewHours == 0) return true;
        return scenario == Scenario.CLINICAL_CARE && policy == ConsentPolicy.PATIENT_AUTHORIZATION
            && reviewHours <= MAX_BREAK_GLASS_REVIEW_HOURS;
    }

    /// @notice Whether `authorizationRef` claims break-glass (whatever its reason byte).
    function isBreakGlass(bytes32 authorizationRef) internal pure returns (bool) {
        return authorizationRef & ~bytes32(uint256(0xff)) == BREAK_GLASS_TAG;
    }

    /// @notice The reason a break-glass `authorizationRef` names (NONE when it names none known).
    function breakGlassReason(bytes32 authorizationRef) internal pure returns (BreakGlassReason) {
        uint8 reason = uint8(uint256(authorizationRef));
        if (reason > uint8(type(BreakGlassReason).max)) return BreakGlassReason.NONE;
        return BreakGlassReason(reason);
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
