// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../../testing/Test.sol";
import {HeadlineSentiment} from "../../src/examples/HeadlineSentiment.sol";
import {SubscriptionManager} from "../../src/SubscriptionManager.sol";

/// @notice Drives the subscription manager with random subscriptions, deliveries, cancellations, reclaims and
/// withdrawals, counting the ETH that goes in and out.
contract SubscriptionHandler is Test {
    SubscriptionManager public immutable manager;
    HeadlineSentiment public immutable consumer;
    address[] public nodes;
    uint256[] public ids;
    uint256 public ghostIn;
    uint256 public ghostOut;

    constructor(SubscriptionManager manager_, bytes32 modelId, address[] memory nodes_) {
        manager = manager_;
        consumer = new HeadlineSentiment(address(manager_), modelId); // owned by this handler
        nodes = nodes_;
    }

    function subscribe(uint256 intervals, uint256 fee) external {
        // forge-lint: disable-next-line(unsafe-typecast)
        uint32 n = uint32(bound(intervals, 1, 12)); // bounded to 12
        uint256 value = bound(fee, 0, 1 ether) * n;
        vm.deal(address(this), value);
        ids.push(consumer.subscribe{value: value}(600, n));
        ghostIn += value; // value is a multiple of n, so the consumer forwards all of it
    }

    function deliver(uint256 idSeed, uint256 nodeSeed) external {
        if (ids.length == 0) return;
        uint256 id = ids[idSeed % ids.length];
        uint32 interval = manager.currentInterval(id);
        vm.prank(nodes[nodeSeed % nodes.length]);
        try manager.deliverInterval(id, interval, abi.encode("positive", uint256(1))) {} catch {}
    }

    function passTime(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 3_600));
    }

    function cancel(uint256 idSeed) external {
        if (ids.length == 0) return;
        vm.prank(address(consumer));
        try manager.cancelSubscription(ids[idSeed % ids.length]) {} catch {}
    }

    function reclaim(uint256 idSeed, uint32 upTo) external {
        if (ids.length == 0) return;
        manager.reclaimIntervals(ids[idSeed % ids.length], upTo);
    }

    function withdraw(uint256 nodeSeed) external {
        address node = nodes[nodeSeed % nodes.length];
        uint256 amount = manager.balanceOf(address(0), node);
        if (amount == 0) return;
        vm.prank(node);
        manager.withdraw(address(0), address(0xD00D));
        ghostOut += amount;
    }

    function idCount() external view returns (uint256) {
        return ids.length;
    }

    function nodeCount() external view returns (uint256) {
        return nodes.length;
    }
}
