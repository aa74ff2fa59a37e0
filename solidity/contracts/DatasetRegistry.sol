// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {IDatasetRegistry} from "./interfaces/IDatasetRegistry.sol";
import {IMembership} from "./interfaces/IMembership.sol";
import {OrgId, DatasetId} from "./types/Ids.sol";
import {Dataset, Role, Tier} from "./types/DataUse.sol";

/// @title DatasetRegistry
/// @notice Registers the datasets hospitals offer to the data space. No data, ever: only the
/// description agreements and access requests refer to.
contract DatasetRegistry is IDatasetRegistry {
    uint256 private constant _MAX_FIELDS = 256;

    IMembership public immutable MEMBERSHIP;

    mapping(DatasetId id => Dataset) private _datasets;

    constructor(IMembership membership) {
        MEMBERSHIP = membership;
    }

    /// @inheritdoc IDatasetRegistry
    function registerDataset(
        DatasetId id,
        OrgId holder,
        bytes32 schemaRef,
        string[] calldata fields,
        Tier maxTier
    ) external {
        if (DatasetId.unwrap(id) == bytes32(0)) revert DatasetRegistryZeroId();
        if (!MEMBERSHIP.hasOrgRole(msg.sender, holder, Role.STEWARD)) {
            revert DatasetRegistryUnauthorizedSteward(msg.sender, holder);
        }
        if (OrgId.unwrap(_datasets[id].holder) != bytes32(0)) revert DatasetRegistryDatasetExists(id);
        if (fields.length == 0 || fields.length > _MAX_FIELDS) revert DatasetRegistryInvalidFieldCount(fields.length);
        _datasets[id] =
            Dataset({holder: holder, schemaRef: schemaRef, fieldCount: uint16(fields.length), maxTier: maxTier});
        emit DatasetRegistered(id, holder, schemaRef, maxTier, fields);
    }

    /// @inheritdoc IDatasetRegistry
    function dataset(DatasetId id) external view returns (Dataset memory) {
        return _datasets[id];
    }
}
