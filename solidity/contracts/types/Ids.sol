// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @dev Distinct value types so an agreement id can never be passed where a dataset id is expected.
type OrgId is bytes32;
type DatasetId is bytes32;
type AgreementId is bytes32;

using {eqOrg as ==} for OrgId global;
using {eqDataset as ==} for DatasetId global;
using {eqAgreement as ==} for AgreementId global;

function eqOrg(OrgId a, OrgId b) pure returns (bool) {
    return OrgId.unwrap(a) == OrgId.unwrap(b);
}

function eqDataset(DatasetId a, DatasetId b) pure returns (bool) {
    return DatasetId.unwrap(a) == DatasetId.unwrap(b);
}

function eqAgreement(AgreementId a, AgreementId b) pure returns (bool) {
    return AgreementId.unwrap(a) == AgreementId.unwrap(b);
}
