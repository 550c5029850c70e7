// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IVerifier
/// @notice Checks a node's output for a request. Atomic verifiers answer `Valid` or `Invalid` at once, inside the
/// delivery; optimistic ones answer `Pending` and later call `Coordinator.resolveVerification` within `window()`
/// seconds. A verifier that finds a result invalid slashes the node through the NodeRegistry (it must be one the
/// registry's owner approved). What a verifier checks a delivery against (the request's model id and keccak256 of its
/// input) it reads from `ICoordinator.verificationOf(requestId)`. Implementations: src/verifiers/.
interface IVerifier {
    enum Verdict {
        Pending,
        Valid,
        Invalid
    }

    /// @notice Verdict on `output` (with `proof`) delivered by `node` for `requestId`.
    function verify(uint256 requestId, address node, bytes calldata output, bytes calldata proof)
        external
        returns (Verdict);

    /// @notice Seconds an optimistic verdict may take after the delivery; 0 for an atomic verifier.
    function window() external view returns (uint64);
}
