// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ISubscriptionManager} from "../interfaces/ISubscriptionManager.sol";

/// @title SubscriptionConsumer
/// @notice Inherit this to receive recurring inference: implement `subscriptionInput` (nodes read each interval's
/// input from it) and `_onIntervalResult`.
abstract contract SubscriptionConsumer {
    /// @notice Thrown by `rawFulfillInterval` when called by anyone but the subscription manager.
    error OnlySubscriptionManager(address caller);

    /// @notice The manager this consumer trusts for interval results.
    ISubscriptionManager public immutable subscriptionManager;

    constructor(address subscriptionManager_) {
        subscriptionManager = ISubscriptionManager(subscriptionManager_);
    }

    /// @notice Entry point for interval results; called with the subscription's callback gas limit.
    function rawFulfillInterval(uint256 subscriptionId, uint32 interval, address node, bytes calldata output)
        external
    {
        if (msg.sender != address(subscriptionManager)) revert OnlySubscriptionManager(msg.sender);
        _onIntervalResult(subscriptionId, interval, node, output);
    }

    /// @notice The ABI-encoded model input for `interval` of `subscriptionId`; nodes call it off-chain (eth_call)
    /// when the interval starts.
    function subscriptionInput(uint256 subscriptionId, uint32 interval)
        external
        view
        virtual
        returns (bytes memory);

    /// @dev Subscribes, paying every interval up front (ETH: `feePerNode * redundancy * intervals` from this
    /// contract's balance; a token: approve the manager for that amount first).
    function _subscribe(ISubscriptionManager.SubscriptionParams memory params) internal returns (uint256) {
        uint256 value =
            params.token == address(0) ? params.feePerNode * params.redundancy * params.intervals : 0;
        return subscriptionManager.createSubscription{value: value}(params);
    }

    /// @dev Node's output for one interval. Keep it within the callback gas limit.
    function _onIntervalResult(uint256 subscriptionId, uint32 interval, address node, bytes calldata output)
        internal
        virtual;
}
