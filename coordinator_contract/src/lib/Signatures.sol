// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title Signatures
/// @notice Recovers the signer of a 65-byte `r ‖ s ‖ v` secp256k1 signature, refusing malleable copies.
library Signatures {
    /// @dev secp256k1n / 2: signatures with a larger `s` are malleable copies and are refused.
    uint256 internal constant MAX_S = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    /// @notice The signer of `digest`, or zero for a malformed signature (not 65 bytes, `v` not 27 or 28), a
    /// malleable one (high `s`) or one ecrecover rejects.
    function recover(bytes32 digest, bytes memory signature) internal pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r;
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(signature, 0x20))
            s := mload(add(signature, 0x40))
            v := byte(0, mload(add(signature, 0x60)))
        }
        if (uint256(s) > MAX_S || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
