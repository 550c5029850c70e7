// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IDelegatingConsumer
/// @notice A consumer that lets an off-chain signer create requests on its behalf (EIP-712 delegated requests).
interface IDelegatingConsumer {
    /// @notice The key whose EIP-712 signatures create requests for this consumer; zero disables delegation.
    /// Changing it invalidates every unused signature of the previous signer at once.
    function delegatedSigner() external view returns (address);
}
