// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

import {OrgId, DatasetId} from "../types/Ids.sol";
import {Tier, Dataset} from "../types/DataUse.sol";

/// @title IDatasetRegistry
/// @notice The datasets a hospital offers, described but never stored: holder, schema reference
/// (e.g. a hash of an OMOP CDM 5.4 table and field list), the ordered field list that agreements
/// and requests address by index (minimum necessary), and the most sensitive tier ever offered.
interface IDatasetRegistry {
    /// @notice The dataset id is zero.
    error DatasetRegistryZeroId();
    /// @notice A dataset is already registered under `dataset`.
    error DatasetRegistryDatasetExists(DatasetId dataset);
    /// @notice A dataset needs between 1 and 256 fields; `count` were given.
    error DatasetRegistryInvalidFieldCount(uint256 count);
    /// @notice `account` is not an active steward of `holder`.
    error DatasetRegistryUnauthorizedSteward(address account, OrgId holder);

    /// @notice A dataset was registered; `fields` are its field names in index order.
    event DatasetRegistered(
        DatasetId indexed dataset, OrgId indexed holder, bytes32 schemaRef, Tier maxTier, string[] fields
    );

    /// @notice Registers a dataset of `holder`. Only a steward of `holder`.
    function registerDataset(
        DatasetId id,
        OrgId holder,
        bytes32 schemaRef,
        string[] calldata fields,
        Tier maxTier
    ) external;

    /// @notice The dataset registered under `id` (holder zero when unknown).
    function dataset(DatasetId id) external view returns (Dataset memory);
}
