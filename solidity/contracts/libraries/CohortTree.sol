// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.30;

/// @title CohortTree
/// @notice RFC 9162 Merkle trees over subject references, as `dul/cohort.py` builds them: a leaf is
/// `sha256(0x00 || subject)`, an inner node `sha256(0x01 || left || right)`, both through the
/// sha256 precompile. Inclusion proofs are RFC 9162 audit paths, bottom up.
library CohortTree {
    /// @notice The leaf hash of one subject reference.
    function leafHash(bytes32 subject) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes1(0x00), subject));
    }

    /// @notice The hash of an inner node.
    function nodeHash(bytes32 left, bytes32 right) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes1(0x01), left, right));
    }

    /// @notice Whether `leaf` is leaf `index` of the tree with head (`root`, `size`), given its
    /// audit path `proof` (RFC 9162 §2.1.3.2). False for an index outside the tree, a proof that
    /// is too short or too long, or any hash that does not match.
    function verifyInclusion(bytes32 root, uint256 size, uint256 index, bytes32 leaf, bytes32[] calldata proof)
        internal
        pure
        returns (bool)
    {
        if (index >= size) return false;
        uint256 fn = index;
        uint256 sn = size - 1;
        bytes32 node = leaf;
        uint256 length = proof.length;
        for (uint256 i = 0; i < length; ++i) {
            if (sn == 0) return false;
            if (fn & 1 == 1 || fn == sn) {
                node = nodeHash(proof[i], node);
                while (fn & 1 == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                node = nodeHash(node, proof[i]);
            }
            fn >>= 1;
            sn >>= 1;
        }
        return sn == 0 && node == root;
    }
}
