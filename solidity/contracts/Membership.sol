// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IMembership} from "./interfaces/IMembership.sol";
import {OrgId} from "./types/Ids.sol";
import {OrgKind, OrgStatus, Role} from "./types/DataUse.sol";

/// @title Membership
/// @notice The data space's organizations and member accounts. The operator is the default
/// admin of OpenZeppelin's AccessControlDefaultAdminRules: handing it over takes two steps and a delay.
contract Membership is IMembership, AccessControlDefaultAdminRules {
    struct Organization {
        OrgKind kind;
        OrgStatus status;
    }

    struct Member {
        OrgId org;
        uint8 roles;
    }

    mapping(OrgId org => Organization) private _organizations;
    mapping(address account => Member) private _members;

    constructor(uint48 adminDelay, address operator) AccessControlDefaultAdminRules(adminDelay, operator) {}

    /// @inheritdoc IMembership
    function registerOrganization(OrgId org, OrgKind kind, string calldata name)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
    {
        if (OrgId.unwrap(org) == bytes32(0) || _organizations[org].status != OrgStatus.NONE) {
            revert MembershipInvalidOrganization(org);
        }
        _organizations[org] = Organization({kind: kind, status: OrgStatus.ACTIVE});
        emit OrganizationRegistered(org, kind, name);
    }

    /// @inheritdoc IMembership
    function suspendOrganization(OrgId org) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setStatus(org, OrgStatus.SUSPENDED);
        emit OrganizationSuspended(org, _msgSender());
    }

    /// @inheritdoc IMembership
    function reinstateOrganization(OrgId org) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setStatus(org, OrgStatus.ACTIVE);
        emit OrganizationReinstated(org, _msgSender());
    }

    /// @inheritdoc IMembership
    function grantMemberRole(OrgId org, address account, Role role) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (account == address(0)) revert MembershipZeroAccount();
        Organization storage organization_ = _organizations[org];
        if (organization_.status == OrgStatus.NONE) revert MembershipUnknownOrganization(org);
        if (!_roleAllowed(organization_.kind, role)) revert MembershipRoleNotAllowed(organization_.kind, role);
        Member storage member = _members[account];
        if (member.roles != 0 && !(member.org == org)) {
            revert MembershipAccountInOtherOrganization(account, member.org);
        }
        uint8 bit = _bit(role);
        if (member.roles & bit != 0) revert MembershipRoleAlreadyGranted(account, role);
        member.org = org;
        member.roles |= bit;
        emit MemberRoleGranted(org, account, role);
    }

    /// @inheritdoc IMembership
    function revokeMemberRole(address account, Role role) external onlyRole(DEFAULT_ADMIN_ROLE) {
        Member storage member = _members[account];
        uint8 bit = _bit(role);
        if (member.roles & bit == 0) revert MembershipRoleNotHeld(account, role);
        OrgId org = member.org;
        member.roles &= ~bit;
        if (member.roles == 0) delete _members[account];
        emit MemberRoleRevoked(org, account, role);
    }

    /// @inheritdoc IMembership
    function organization(OrgId org) external view returns (OrgKind kind, OrgStatus status) {
        Organization storage organization_ = _organizations[org];
        return (organization_.kind, organization_.status);
    }

    /// @inheritdoc IMembership
    function memberOf(address account) external view returns (OrgId org, uint8 roles) {
        Member storage member = _members[account];
        return (member.org, member.roles);
    }

    /// @inheritdoc IMembership
    function hasOrgRole(address account, OrgId org, Role role) public view returns (bool) {
        Member storage member = _members[account];
        return member.org == org && member.roles & _bit(role) != 0
            && _organizations[org].status == OrgStatus.ACTIVE;
    }

    /// @inheritdoc IMembership
    function isRegulator(address account) external view returns (bool) {
        return hasOrgRole(account, _members[account].org, Role.REGULATOR);
    }

    /// @inheritdoc IMembership
    function isAuthorizedSender(address account) external view returns (bool) {
        if (account == defaultAdmin()) return true;
        (address pending,) = pendingDefaultAdmin();
        if (account != address(0) && account == pending) return true;
        Member storage member = _members[account];
        return member.roles != 0 && _organizations[member.org].status == OrgStatus.ACTIVE;
    }

    function _setStatus(OrgId org, OrgStatus status) private {
        Organization storage organization_ = _organizations[org];
        if (organization_.status == OrgStatus.NONE) revert MembershipUnknownOrganization(org);
        if (organization_.status == status) revert MembershipOrganizationStatusUnchanged(org, status);
        organization_.status = status;
    }

    /// @dev Gateways run inside hospitals; regulators stand apart from every other role.
    function _roleAllowed(OrgKind kind, Role role) private pure returns (bool) {
        if (kind == OrgKind.REGULATOR || role == Role.REGULATOR) {
            return kind == OrgKind.REGULATOR && role == Role.REGULATOR;
        }
        if (role == Role.GATEWAY) return kind == OrgKind.HOSPITAL;
        return true;
    }

    function _bit(Role role) private pure returns (uint8) {
        return uint8(1) << uint8(role);
    }
}
