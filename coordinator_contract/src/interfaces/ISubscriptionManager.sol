// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IEscrow} from "./IEscrow.sol";

/// @title ISubscriptionManager
/// @notice Recurring inference: `intervals` intervals of `period` seconds from the subscription's creation; in each,
/// up to `redundancy` nodes deliver once, reading the interval's input from the consumer's `subscriptionInput` view.
interface ISubscriptionManager is IEscrow {
    struct SubscriptionParams {
        bytes32 modelId;
        uint32 callbackGasLimit;
        uint16 redundancy;
        uint32 period;
        uint32 intervals;
        address token;
        uint256 feePerNode;
    }

    struct Subscription {
        address consumer;
        uint64 start;
        uint16 redundancy;
        uint16 protocolFeeBps;
        address token;
        uint32 period;
        uint32 intervals;
        uint32 callbackGasLimit;
        uint32 activeIntervals;
        uint32 refundedThrough;
        bool cancelled;
        uint256 feePerNode;
    }

    /// @notice Thrown by `createSubscription` if a parameter is outside the protocol limits.
    error InvalidSubscription();
    /// @notice Thrown if no subscription has this id.
    error UnknownSubscription(uint256 subscriptionId);
    /// @notice Thrown by `deliverInterval` if `interval` is not the subscription's current, live interval.
    error IntervalNotActive(uint256 subscriptionId, uint32 interval);
    /// @notice Thrown by `deliverInterval` if this node already delivered for the interval.
    error AlreadyDelivered(uint256 subscriptionId, uint32 interval, address node);
    /// @notice Thrown by `deliverInterval` if the interval already has `redundancy` deliveries.
    error IntervalFull(uint256 subscriptionId, uint32 interval);
    /// @notice Thrown by `cancelSubscription` when called by anyone but the consumer, or twice.
    error NotCancellable(uint256 subscriptionId, address caller);
    /// @notice Thrown by the subscription functions if the caller is not an active staked node.
    error NodeNotActive(address node);
    /// @notice Thrown by `deliverInterval` if the output is longer than the Coordinator's maximum.
    error OutputTooLarge(uint256 length, uint256 maxOutputBytes);

    /// @notice A consumer subscribed; carries everything a node needs to serve every interval.
    event SubscriptionCreated(
        uint256 indexed subscriptionId,
        bytes32 indexed modelId,
        address indexed consumer,
        address token,
        uint256 feePerNode,
        uint32 callbackGasLimit,
        uint16 redundancy,
        uint32 period,
        uint32 intervals,
        uint64 start
    );
    /// @notice A node delivered for an interval; `callbackOk` as for one-off requests.
    event IntervalFulfilled(
        uint256 indexed subscriptionId,
        uint32 indexed interval,
        address indexed node,
        bytes32 outputHash,
        bool callbackOk
    );
    /// @notice The consumer cancelled: intervals after `lastInterval` are refunded and will not be served.
    event SubscriptionCancelled(uint256 indexed subscriptionId, uint32 lastInterval, uint256 refund);
    /// @notice Unserved slots of ended intervals were refunded to the consumer.
    event IntervalsRefunded(
        uint256 indexed subscriptionId, uint32 fromInterval, uint32 toInterval, uint256 refund
    );

    function createSubscription(SubscriptionParams calldata params)
        external
        payable
        returns (uint256 subscriptionId);
    function deliverInterval(uint256 subscriptionId, uint32 interval, bytes calldata output)
        external
        returns (bool callbackOk);
    function cancelSubscription(uint256 subscriptionId) external returns (uint256 refund);
    function reclaimIntervals(uint256 subscriptionId, uint32 upTo) external returns (uint256 refund);
    function currentInterval(uint256 subscriptionId) external view returns (uint32);
}
