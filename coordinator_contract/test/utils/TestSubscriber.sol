// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {SubscriptionConsumer} from "../../src/consumer/SubscriptionConsumer.sol";
import {ISubscriptionManager} from "../../src/interfaces/ISubscriptionManager.sol";

/// @title TestSubscriber
/// @notice A subscriber for the node's multi-node tests (tests/multinode.py): any model, redundancy, period and
/// interval count, paid from `msg.value`; interval `i`'s input is `"interval-" ++ uint32(i)`; counts the results of
/// each interval and each node.
contract TestSubscriber is SubscriptionConsumer {
    /// @notice Results received for an interval.
    mapping(uint32 interval => uint256) public results;
    /// @notice Results received from a node for an interval.
    mapping(uint32 interval => mapping(address node => uint256)) public resultsFrom;

    constructor(address manager_) SubscriptionConsumer(manager_) {}

    /// @notice Subscribes with `msg.value`, which must be `feePerNode * redundancy * intervals`.
    function subscribe(
        bytes32 modelId,
        uint16 redundancy,
        uint32 period,
        uint32 intervals,
        uint256 feePerNode
    ) external payable returns (uint256) {
        return _subscribe(
            ISubscriptionManager.SubscriptionParams({
                modelId: modelId,
                callbackGasLimit: 100_000,
                redundancy: redundancy,
                period: period,
                intervals: intervals,
                token: address(0),
                feePerNode: feePerNode
            })
        );
    }

    /// @notice Cancels the subscription: the refund is credited to this contract in the manager.
    function cancel(uint256 subscriptionId) external returns (uint256) {
        return subscriptionManager.cancelSubscription(subscriptionId);
    }

    function subscriptionInput(uint256, uint32 interval) external pure override returns (bytes memory) {
        return abi.encodePacked("interval-", interval);
    }

    function _onIntervalResult(uint256, uint32 interval, address node, bytes calldata) internal override {
        results[interval] += 1;
        resultsFrom[interval][node] += 1;
    }
}
