// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {SubscriptionManager} from "../src/SubscriptionManager.sol";
import {ISubscriptionManager} from "../src/interfaces/ISubscriptionManager.sol";
import {HeadlineSentiment} from "../src/examples/HeadlineSentiment.sol";
import {SubscriptionConsumer} from "../src/consumer/SubscriptionConsumer.sol";
import {SubscriptionHandler} from "./utils/SubscriptionHandler.sol";

contract SubscriptionTest is CoordinatorTest {
    SubscriptionManager internal manager;
    HeadlineSentiment internal headlines;
    uint32 internal constant PERIOD = 1 hours;

    function setUp() public override {
        super.setUp();
        manager = new SubscriptionManager(coordinator);
        headlines = new HeadlineSentiment(address(manager), MODEL);
        headlines.setHeadline("Markets rally as inflation cools");
    }

    function _subscribe(uint32 intervals) internal returns (uint256) {
        return headlines.subscribe{value: FEE * intervals}(PERIOD, intervals);
    }

    function _deliver(address who, uint256 id, uint32 interval) internal returns (bool) {
        vm.prank(who);
        return manager.deliverInterval(id, interval, abi.encode("positive", uint256(900_000)));
    }

    function testCanSubscribe() public {
        vm.expectEmit(true, true, true, true, address(manager));
        emit ISubscriptionManager.SubscriptionCreated(
            1, MODEL, address(headlines), address(0), FEE, 200_000, 1, PERIOD, 5, uint64(block.timestamp)
        );
        uint256 id = _subscribe(5);
        assertEq(address(manager).balance, 5 * FEE, "every interval escrowed up front");
        assertEq(manager.getSubscription(id).intervals, 5, "intervals");
        assertEq(manager.currentInterval(id), 0, "starts at interval 0");
    }

    function testFuzzCanSubscribe(uint32 intervals, uint32 period) public {
        intervals = uint32(bound(intervals, 1, 1_000));
        period = uint32(bound(period, 60, 365 days));
        uint256 id = headlines.subscribe{value: FEE * intervals}(period, intervals);
        assertEq(address(manager).balance, FEE * intervals, "escrow");
        assertEq(manager.getSubscription(id).period, period, "period");
    }

    function testFuzzCannotSubscribeOutsideTheLimits(uint8 which) public {
        ISubscriptionManager.SubscriptionParams memory p = ISubscriptionManager.SubscriptionParams({
            modelId: MODEL,
            callbackGasLimit: 200_000,
            redundancy: 1,
            period: PERIOD,
            intervals: 3,
            token: address(0),
            feePerNode: FEE
        });
        which = which % 5;
        if (which == 0) p.callbackGasLimit = 0;
        if (which == 1) p.redundancy = 0;
        if (which == 2) p.period = 59;
        if (which == 3) p.intervals = 0;
        if (which == 4) p.callbackGasLimit = 3_000_000;
        vm.expectRevert(ISubscriptionManager.InvalidSubscription.selector);
        manager.createSubscription{value: FEE * 3}(p);
    }

    function testFuzzNodesDeliverTheCurrentInterval(uint32 interval) public {
        uint256 id = _subscribe(10);
        interval = uint32(bound(interval, 0, 9));
        vm.warp(block.timestamp + uint256(interval) * PERIOD);
        vm.expectEmit(true, true, true, false, address(manager));
        emit ISubscriptionManager.IntervalFulfilled(id, interval, node, bytes32(0), true);
        assertTrue(_deliver(node, id, interval), "callback ok");
        assertEq(headlines.latestLabel(), "positive", "stored");
        assertEq(headlines.latestInterval(), interval, "interval");
        assertEq(manager.balanceOf(address(0), node), FEE, "paid");
    }

    function testFuzzCannotDeliverAnotherInterval(uint32 interval) public {
        uint256 id = _subscribe(10);
        vm.warp(block.timestamp + 3 * PERIOD);
        if (interval == 3) interval = 4;
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.IntervalNotActive.selector, id, interval));
        _deliver(node, id, interval);
    }

    function testCannotDeliverAfterTheLastInterval() public {
        uint256 id = _subscribe(2);
        vm.warp(block.timestamp + 2 * PERIOD);
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.IntervalNotActive.selector, id, 2));
        _deliver(node, id, 2);
    }

    function testEachIntervalTakesEachNodeOnceUpToRedundancy() public {
        uint256 id = _subscribe(3);
        _deliver(node, id, 0);
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.AlreadyDelivered.selector, id, 0, node));
        _deliver(node, id, 0);
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.IntervalFull.selector, id, 0));
        _deliver(node2, id, 0);
        vm.warp(block.timestamp + PERIOD);
        _deliver(node, id, 1); // a new interval is a new slot
        assertEq(manager.balanceOf(address(0), node), 2 * FEE, "paid per interval");
    }

    function testFuzzCannotDeliverAsUnstakedNode(address caller) public {
        if (registry.isActive(caller)) caller = stranger;
        uint256 id = _subscribe(3);
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.NodeNotActive.selector, caller));
        _deliver(caller, id, 0);
    }

    function testFuzzUnservedEndedIntervalsAreRefundable(uint8 servedMask) public {
        uint256 id = _subscribe(8);
        uint256 servedCount;
        for (uint32 i; i < 8; ++i) {
            if ((servedMask >> i) & 1 == 1) {
                _deliver(node, id, i);
                ++servedCount;
            }
            vm.warp(block.timestamp + PERIOD);
        }
        uint256 refund = manager.reclaimIntervals(id, type(uint32).max);
        assertEq(refund, (8 - servedCount) * FEE, "exactly the unserved intervals");
        assertEq(manager.balanceOf(address(0), address(headlines)), refund, "credited to the consumer");
        assertEq(manager.reclaimIntervals(id, type(uint32).max), 0, "never twice");
    }

    function testCurrentIntervalIsNotRefundedWhileLive() public {
        uint256 id = _subscribe(4);
        vm.warp(block.timestamp + PERIOD + 1); // interval 0 ended unserved, interval 1 is live
        assertEq(manager.reclaimIntervals(id, 4), FEE, "only interval 0");
        _deliver(node, id, 1);
    }

    function testReclaimCanBeChunked() public {
        uint256 id = _subscribe(6);
        vm.warp(block.timestamp + 6 * PERIOD);
        assertEq(manager.reclaimIntervals(id, 2), 2 * FEE, "first chunk");
        assertEq(manager.reclaimIntervals(id, 6), 4 * FEE, "the rest");
    }

    function testCancelRefundsTheFutureAtOnce() public {
        uint256 id = _subscribe(10);
        _deliver(node, id, 0);
        vm.warp(block.timestamp + 2 * PERIOD + 5); // interval 2 is current, 0 served, 1 not
        vm.expectEmit(true, true, true, true, address(manager));
        emit ISubscriptionManager.SubscriptionCancelled(id, 2, 7 * FEE);
        vm.prank(address(headlines));
        assertEq(manager.cancelSubscription(id), 7 * FEE, "intervals 3..9");
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.IntervalNotActive.selector, id, 2));
        _deliver(node, id, 2);
        assertEq(manager.reclaimIntervals(id, type(uint32).max), 2 * FEE, "then 1 and 2, nobody served them");
        assertEq(address(manager).balance, 10 * FEE, "nothing left before withdrawals");
        assertEq(
            manager.balanceOf(address(0), address(headlines)) + manager.balanceOf(address(0), node),
            10 * FEE,
            "every wei is someone's balance"
        );
    }

    function testFuzzOnlyTheConsumerCancelsOnce(address caller) public {
        uint256 id = _subscribe(3);
        if (caller == address(headlines)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.NotCancellable.selector, id, caller));
        vm.prank(caller);
        manager.cancelSubscription(id);
        vm.prank(address(headlines));
        manager.cancelSubscription(id);
        vm.expectRevert(
            abi.encodeWithSelector(ISubscriptionManager.NotCancellable.selector, id, address(headlines))
        );
        vm.prank(address(headlines));
        manager.cancelSubscription(id);
    }

    function testFuzzProtocolFeeIsFrozenPerSubscription(uint16 bps, uint16 later) public {
        bps = uint16(bound(bps, 0, 1_000));
        later = uint16(bound(later, 0, 1_000));
        vm.prank(owner);
        coordinator.setProtocolFee(bps, owner);
        uint256 id = _subscribe(2);
        vm.prank(owner);
        coordinator.setProtocolFee(later, owner);
        _deliver(node, id, 0);
        uint256 cut = FEE * bps / 10_000;
        assertEq(manager.balanceOf(address(0), owner), cut, "cut at the subscription's rate");
        assertEq(manager.balanceOf(address(0), node), FEE - cut, "node gets the rest");
    }

    function testNodesReadTheInputFromTheConsumer() public {
        uint256 id = _subscribe(2);
        assertEq(headlines.subscriptionInput(id, 0), abi.encode("Markets rally as inflation cools"), "input");
    }

    function testCannotCallTheIntervalCallbackDirectly() public {
        vm.expectRevert(
            abi.encodeWithSelector(SubscriptionConsumer.OnlySubscriptionManager.selector, stranger)
        );
        vm.prank(stranger);
        headlines.rawFulfillInterval(1, 0, node, "");
    }

    function testFuzzUnknownSubscription(uint256 id) public {
        id = bound(id, manager.nextSubscriptionId(), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.UnknownSubscription.selector, id));
        manager.currentInterval(id);
    }

    function testNodeWithdrawsSubscriptionEarnings() public {
        uint256 id = _subscribe(1);
        _deliver(node, id, 0);
        vm.prank(node);
        manager.withdraw(address(0), address(0xCAFE));
        assertEq(address(0xCAFE).balance, FEE, "received");
    }
}

contract SubscriptionInvariantTest is CoordinatorTest {
    SubscriptionManager internal manager;
    SubscriptionHandler internal handler;
    HeadlineSentiment internal headlines;

    function setUp() public override {
        super.setUp();
        manager = new SubscriptionManager(coordinator);
        address[] memory nodes = new address[](3);
        nodes[0] = node;
        nodes[1] = node2;
        nodes[2] = node3;
        handler = new SubscriptionHandler(manager, MODEL, nodes); // it owns its example consumer
        headlines = handler.consumer();
        targetContract(address(handler));
    }

    function _unsettledEscrow() internal view returns (uint256 total) {
        for (uint256 k; k < handler.idCount(); ++k) {
            uint256 id = handler.ids(k);
            ISubscriptionManager.Subscription memory s = manager.getSubscription(id);
            for (uint32 i = s.refundedThrough; i < s.activeIntervals; ++i) {
                total += uint256(s.redundancy - manager.delivered(id, i)) * s.feePerNode;
            }
        }
    }

    function _balances() internal view returns (uint256 total) {
        total = manager.balanceOf(address(0), address(headlines)) + manager.balanceOf(address(0), owner);
        for (uint256 i; i < handler.nodeCount(); ++i) {
            total += manager.balanceOf(address(0), handler.nodes(i));
        }
    }

    function invariantEscrowCoversEveryIntervalNotYetSettled() public view {
        assertEq(address(manager).balance, _unsettledEscrow() + _balances(), "every wei accounted for");
        assertEq(address(manager).balance, handler.ghostIn() - handler.ghostOut(), "in minus out");
    }
}

/// @notice A subscriber that cancels its own subscription from inside the interval callback.
contract CancellingSubscriber is SubscriptionConsumer {
    bool public cancelled;

    constructor(address manager_) SubscriptionConsumer(manager_) {}

    function subscribe(uint32 intervals) external payable returns (uint256) {
        return _subscribe(
            ISubscriptionManager.SubscriptionParams({
                modelId: keccak256("m"),
                callbackGasLimit: 300_000,
                redundancy: 1,
                period: 1 hours,
                intervals: intervals,
                token: address(0),
                feePerNode: msg.value / intervals
            })
        );
    }

    function subscriptionInput(uint256, uint32) external pure override returns (bytes memory) {
        return hex"01";
    }

    function _onIntervalResult(uint256 subscriptionId, uint32, address, bytes calldata) internal override {
        subscriptionManager.cancelSubscription(subscriptionId);
        cancelled = true;
    }
}

contract SubscriptionReentrancyTest is CoordinatorTest {
    function testCancellingFromTheCallbackKeepsEscrowWhole() public {
        SubscriptionManager manager = new SubscriptionManager(coordinator);
        CancellingSubscriber sub = new CancellingSubscriber(address(manager));
        uint256 id = sub.subscribe{value: 5 * FEE}(5);
        vm.prank(node);
        assertTrue(manager.deliverInterval(id, 0, hex"00"), "callback (and its cancel) succeeded");
        assertTrue(sub.cancelled(), "cancelled from inside the callback");
        assertEq(manager.balanceOf(address(0), node), FEE, "the delivery stays paid");
        assertEq(manager.balanceOf(address(0), address(sub)), 4 * FEE, "the four future intervals refunded");
        vm.expectRevert(abi.encodeWithSelector(ISubscriptionManager.IntervalNotActive.selector, id, 0));
        vm.prank(node2);
        manager.deliverInterval(id, 0, hex"00");
        assertEq(address(manager).balance, 5 * FEE, "every wei is a balance");
    }
}
