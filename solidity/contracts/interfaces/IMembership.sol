// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId} from "../types/Ids.sol";
import {OrgKind, OrgStatus, Role} from "../types/DataUse.sol";

/// @title IMembership
/// @notice Who belongs to the data space. The operator (the default admin, transferred in two
/// delayed steps) registers organizations and their member accounts; each account belongs to
/// exactly one organization and holds a set of roles there. Suspending an organization disables
/// every member at once. Role holders are fully reconstructible from the events below.
interface IMembership {
    /// @notice The organization id is zero or already registered.
    error MembershipInvalidOrganization(OrgId org);
    /// @notice No organization is registered under `org`.
    error MembershipUnknownOrganization(OrgId org);
    /// @notice The organization is already in `status`.
    error MembershipOrganizationStatusUnchanged(OrgId org, OrgStatus status);
    /// @notice The zero address cannot be a member.
    error MembershipZeroAccount();
    /// @notice `account` already belongs to another organization.
    error MembershipAccountInOtherOrganization(address account, OrgId current);
    /// @notice `role` cannot be held in an organization of `kind` (gateways run in hospitals;
    /// regulator organizations hold only the regulator role, and only they hold it).
    error MembershipRoleNotAllowed(OrgKind kind, Role role);
    /// @notice `account` already holds `role`.
    error MembershipRoleAlreadyGranted(address account, Role role);
    /// @notice `account` does not hold `role`.
    error MembershipRoleNotHeld(address account, Role role);

    event OrganizationRegistered(OrgId indexed org, OrgKind kind, string name);
    event OrganizationSuspended(OrgId indexed org, address indexed by);
    event OrganizationReinstated(OrgId indexed org, address indexed by);
    event MemberRoleGranted(OrgId indexed org, address indexed account, Role indexed role);
    event MemberRoleRevoked(OrgId indexed org, address indexed account, Role indexed role);

    /// @notice Registers an organization. Only the operator.
    function registerOrganization(OrgId org, OrgKind kind, string calldata name) external;

    /// @notice Disables every member of `org` until it is reinstated. Only the operator.
    function suspendOrganization(OrgId org) external;

    /// @notice Re-enables a suspended organization. Only the operator.
    function reinstateOrganization(OrgId org) external;

    /// @notice Grants `role` in `org` to `account`. Only the operator.
    function grantMemberRole(OrgId org, address account, Role role) external;

    /// @notice Revokes `role` from `account`; without roles left it leaves its organization. Only the operator.
    function revokeMemberRole(address account, Role role) external;

    /// @notice The kind and status of `org` (status NONE when unknown).
    function organization(OrgId org) external view returns (OrgKind kind, OrgStatus status);

    /// @notice The organization of `account` and its role bit set (`1 << role`); zero when none.
    function memberOf(address account) external view returns (OrgId org, uint8 roles);

    /// @notice Whether `account` holds `role` in `org` and `org` is active.
    function hasOrgRole(address account, OrgId org, Role role) external view returns (bool);

    /// @notice Whether `account` is an active regulator.
    function isRegulator(address account) external view returns (bool);

    /// @notice Whether the permissioned node should accept transactions from `account`:
    /// the operator, a pending operator, or a member of an active organization.
    function isAuthorizedSender(address account) external view returns (bool);
}
