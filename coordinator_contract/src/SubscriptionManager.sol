// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Escrow} from "./Escrow.sol";
import {Coordinator} from "./Coordinator.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {ISubscriptionManager} from "./interfaces/ISubscriptionManager.sol";

/// @title SubscriptionManager
/// @notice Recurring inference requests, paid for up front.
/// @dev Guarantees: every interval's `feePerNode * redundancy` is escrowed at creation; in each interval at most
/// `redundancy` distinct active nodes deliver, each paid once, and only while that interval is current; an interval
/// nobody (fully) served is refundable once it ended (`reclaimIntervals`), and cancelling refunds every future interval
/// at once; limits and the protocol fee come from the Coordinator (the fee rate is frozen per subscription);
/// callbacks are isolated as the Coordinator's are (exact gas, no return data copied).
contract SubscriptionManager is ISubscriptionManager, Escrow {
    /// @notice What this contract is and its version, as "InferaSubscriptionManager <semver>" (see the
    /// Coordinator's).
    string public constant typeAndVersion = "InferaSubscriptionManager 0.1.0";
    uint32 public constant MIN_PERIOD = 60;
    uint32 public constant MAX_PERIOD = 365 days;
    uint32 public constant MAX_INTERVALS = 100_000;

    Coordinator public immutable coordinator;
    INodeRegistry public immutable registry;
    uint256 public nextSubscriptionId = 1;
    mapping(uint256 => Subscription) internal _subscriptions;
    /// @notice Deliveries made for each interval.
    mapping(uint256 subscriptionId => mapping(uint32 interval => uint16)) public delivered;
    /// @notice Whether a node delivered for an interval.
    mapping(uint256 subscriptionId => mapping(uint32 interval => mapping(address node => bool))) public
        served;

    constructor(Coordinator coordinator_) {
        coordinator = coordinator_;
        registry = coordinator_.registry();
    }

    /// @inheritdoc ISubscriptionManager
    function createSubscription(SubscriptionParams calldata p)
        external
        payable
        returns (uint256 subscriptionId)
    {
        Coordinator c = coordinator;
        if (
            p.callbackGasLimit == 0 || p.callbackGasLimit > c.maxCallbackGasLimit() || p.redundancy == 0
                || p.redundancy > c.maxRedundancy() || p.period < MIN_PERIOD || p.period > MAX_PERIOD
                || p.intervals == 0 || p.intervals > MAX_INTERVALS || p.feePerNode < c.minFee()
        ) revert InvalidSubscription();
        _collect(p.token, p.feePerNode * p.redundancy * p.intervals);

        subscriptionId = nextSubscriptionId++;
        _subscriptions[subscriptionId] = Subscription({
            consumer: msg.sender,
            start: uint64(block.timestamp),
            redundancy: p.redundancy,
            protocolFeeBps: c.protocolFeeBps(),
            token: p.token,
            period: p.period,
            intervals: p.intervals,
            callbackGasLimit: p.callbackGasLimit,
            activeIntervals: p.intervals,
            refundedThrough: 0,
            cancelled: false,
            feePerNode: p.feePerNode
        });
        emit SubscriptionCreated(
            subscriptionId,
            p.modelId,
            msg.sender,
            p.token,
            p.feePerNode,
            p.callbackGasLimit,
            p.redundancy,
            p.period,
            p.intervals,
            uint64(block.timestamp)
        );
    }

    /// @inheritdoc ISubscriptionManager
    function deliverInterval(uint256 subscriptionId, uint32 interval, bytes calldata output)
        external
        returns (bool callbackOk)
    {
        if (!registry.isActive(msg.sender)) revert NodeNotActive(msg.sender);
        Subscription storage s = _get(subscriptionId);
        if (interval != _current(s) || interval >= s.activeIntervals || s.cancelled) {
            revert IntervalNotActive(subscriptionId, interval);
        }
        uint256 maxOutput = coordinator.maxOutputBytes();
        if (output.length > maxOutput) revert OutputTooLarge(output.length, maxOutput);
        if (served[subscriptionId][interval][msg.sender]) {
            revert AlreadyDelivered(subscriptionId, interval, msg.sender);
        }
        uint16 count = delivered[subscriptionId][interval] + 1;
        if (count > s.redundancy) revert IntervalFull(subscriptionId, interval);
        served[subscriptionId][interval][msg.sender] = true;
        delivered[subscriptionId][interval] = count;

        uint256 fee = s.feePerNode;
        if (fee != 0) {
            uint256 cut = fee * s.protocolFeeBps / 10_000;
            balanceOf[s.token][msg.sender] += fee - cut;
            if (cut != 0) balanceOf[s.token][coordinator.protocolFeeRecipient()] += cut;
        }
        callbackOk = _callWithExactGas(
            s.callbackGasLimit,
            s.consumer,
            abi.encodeWithSignature(
                "rawFulfillInterval(uint256,uint32,address,bytes)",
                subscriptionId,
                interval,
                msg.sender,
                output
            )
        );
        emit IntervalFulfilled(subscriptionId, interval, msg.sender, keccak256(output), callbackOk);
    }

    /// @inheritdoc ISubscriptionManager
    function cancelSubscription(uint256 subscriptionId) external returns (uint256 refund) {
        Subscription storage s = _get(subscriptionId);
        if (msg.sender != s.consumer || s.cancelled) revert NotCancellable(subscriptionId, msg.sender);
        s.cancelled = true;
        // The current interval keeps what was delivered; it and earlier ones are settled by `reclaimIntervals`.
        uint32 current = _current(s);
        uint32 last = current < s.activeIntervals ? current : s.activeIntervals - 1;
        uint256 future = uint256(s.activeIntervals) - last - 1;
        s.activeIntervals = last + 1;
        refund = future * s.redundancy * s.feePerNode;
        balanceOf[s.token][s.consumer] += refund;
        emit SubscriptionCancelled(subscriptionId, last, refund);
    }

    /// @inheritdoc ISubscriptionManager
    function reclaimIntervals(uint256 subscriptionId, uint32 upTo) external returns (uint256 refund) {
        Subscription storage s = _get(subscriptionId);
        // Intervals that can no longer take deliveries: the past ones, and the current one once cancelled.
        uint32 ended = _current(s);
        if (s.cancelled) ended = s.activeIntervals;
        if (ended > s.activeIntervals) ended = s.activeIntervals;
        if (upTo > ended) upTo = ended;
        uint32 from = s.refundedThrough;
        if (upTo <= from) return 0;
        uint256 slots;
        for (uint32 i = from; i < upTo; ++i) {
            slots += s.redundancy - delivered[subscriptionId][i];
        }
        s.refundedThrough = upTo;
        refund = slots * s.feePerNode;
        balanceOf[s.token][s.consumer] += refund;
        emit IntervalsRefunded(subscriptionId, from, upTo, refund);
    }

    /// @inheritdoc ISubscriptionManager
    function currentInterval(uint256 subscriptionId) external view returns (uint32) {
        return _current(_get(subscriptionId));
    }

    /// @notice The stored state of a subscription.
    function getSubscription(uint256 subscriptionId) external view returns (Subscription memory) {
        return _subscriptions[subscriptionId];
    }

    function _get(uint256 subscriptionId) internal view returns (Subscription storage s) {
        s = _subscriptions[subscriptionId];
        if (s.consumer == address(0)) revert UnknownSubscription(subscriptionId);
    }

    /// @dev Intervals elapsed since the start; capped so it fits the interval counter.
    function _current(Subscription storage s) internal view returns (uint32) {
        uint256 elapsed = (block.timestamp - s.start) / s.period;
        // forge-lint: disable-next-line(unsafe-typecast)
        return elapsed > type(uint32).max ? type(uint32).max : uint32(elapsed); // capped on the line before
    }
}
