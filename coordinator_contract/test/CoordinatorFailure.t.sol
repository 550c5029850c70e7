// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {GasBombConsumer} from "./utils/Actors.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";

contract CoordinatorFailureTest is CoordinatorTest {
    function testOneReportDoesNotDenyService() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.FailureReported(id, node, "model down");
        vm.prank(node);
        coordinator.reportFailure(id, "model down");
        assertTrue(_status(id) == ICoordinator.Status.Open, "still open: quorum is 2");
        vm.prank(node2);
        assertTrue(coordinator.deliver(id, hex"00"), "another node serves it");
        assertEq(coordinator.balanceOf(address(0), node2), FEE, "and is paid");
        assertEq(consumer.failures(), 0, "no error callback");
    }

    function testQuorumOfReportsFailsTheRequestAndRefunds() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.reportFailure(id, "first");
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestFailed(id, "second", FEE, true);
        vm.prank(node2);
        coordinator.reportFailure(id, "second");
        assertTrue(_status(id) == ICoordinator.Status.Failed, "failed");
        assertEq(coordinator.balanceOf(address(0), address(consumer)), FEE, "escrow refunded");
        assertEq(consumer.failures(), 1, "error callback once");
        assertEq(consumer.lastReason(), "second", "reason");
        vm.expectRevert(_closed(id, ICoordinator.Status.Failed));
        vm.prank(node3);
        coordinator.deliver(id, hex"00");
    }

    function testFuzzQuorumIsMaxOfRedundancyAndMinimum(uint16 redundancy, uint16 minReports) public {
        redundancy = uint16(bound(redundancy, 1, 16));
        minReports = uint16(bound(minReports, 1, 16));
        vm.prank(owner);
        coordinator.setLimits(0, 2_000_000, 16 * 1024, 16 * 1024, 16, minReports, 30 days);
        uint256 id = _requestRedundant(redundancy, FEE);
        uint256 expected = redundancy > minReports ? redundancy : minReports;
        assertEq(coordinator.failureQuorum(id), expected, "quorum");
    }

    function testPartialDeliveriesRefundOnlyUnusedSlots() public {
        vm.prank(owner);
        coordinator.setLimits(0, 2_000_000, 16 * 1024, 16 * 1024, 16, 1, 30 days); // quorum = redundancy
        uint256 id = _requestRedundant(3, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.prank(node2);
        coordinator.reportFailure(id, "a");
        assertTrue(_status(id) == ICoordinator.Status.Open, "two of three acted");
        _stake(address(0xB0B4));
        vm.prank(node3);
        coordinator.reportFailure(id, "b");
        vm.prank(address(0xB0B4));
        coordinator.reportFailure(id, "c");
        assertTrue(_status(id) == ICoordinator.Status.Failed, "three reports");
        assertEq(coordinator.balanceOf(address(0), address(consumer)), 2 * FEE, "two unused slots back");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "the delivery stays paid");
    }

    function testCannotReportTwice() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.reportFailure(id, "a");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.AlreadyServed.selector, id, node));
        vm.prank(node);
        coordinator.reportFailure(id, "a");
    }

    function testCannotDeliverAfterReporting() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.reportFailure(id, "a");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.AlreadyServed.selector, id, node));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testFuzzCannotReportAsUnstakedNode(address caller) public {
        if (registry.isActive(caller)) caller = stranger;
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, caller));
        vm.prank(caller);
        coordinator.reportFailure(id, "x");
    }

    function testErrorCallbackGasIsCapped() public {
        GasBombConsumer bomb = new GasBombConsumer(address(coordinator));
        uint256 id = bomb.request{value: FEE}(MODEL, 2_000_000);
        vm.prank(node);
        coordinator.reportFailure(id, "a");
        vm.prank(node2);
        uint256 before = gasleft();
        coordinator.reportFailure(id, "b");
        assertLe(before - gasleft(), 100_000 + 110_000, "a failure costs the reporter at most the error cap");
        assertTrue(_status(id) == ICoordinator.Status.Failed, "failed anyway");
    }
}

contract CoordinatorReclaimTest is CoordinatorTest {
    function testFuzzCanReclaimUnservedSlotsAfterTheDeadline(
        uint16 redundancy,
        uint16 delivered,
        uint256 late
    ) public {
        redundancy = uint16(bound(redundancy, 1, 3));
        delivered = uint16(bound(delivered, 0, redundancy - 1));
        uint256 id = _requestRedundant(redundancy, FEE);
        address[3] memory nodes = [node, node2, node3];
        for (uint256 i; i < delivered; ++i) {
            vm.prank(nodes[i]);
            coordinator.deliver(id, hex"00");
        }
        uint64 deadline = coordinator.getRequest(id).deadline;
        vm.warp(bound(late, uint256(deadline) + 1, uint256(deadline) + 365 days));
        uint256 expected = uint256(redundancy - delivered) * FEE;
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.Reclaimed(id, address(consumer), redundancy - delivered, expected, true);
        vm.prank(stranger); // anyone may trigger it; the refund is the consumer's
        assertEq(coordinator.reclaim(id), expected, "refund");
        assertEq(coordinator.balanceOf(address(0), address(consumer)), expected, "credited to the consumer");
        consumer.withdrawRefunds(address(0), address(0xCAFE));
        assertEq(address(0xCAFE).balance, expected, "and withdrawn");
    }

    function testCannotReclaimBeforeTheDeadline() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        uint64 deadline = coordinator.getRequest(id).deadline;
        vm.warp(deadline);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.DeadlineNotPassed.selector, id, deadline));
        coordinator.reclaim(id);
    }

    function testCannotReclaimTwice() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.warp(block.timestamp + 2 hours);
        coordinator.reclaim(id);
        vm.expectRevert(_closed(id, ICoordinator.Status.Reclaimed));
        coordinator.reclaim(id);
    }

    function testCannotReclaimAFulfilledRequest() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.warp(block.timestamp + 2 hours);
        vm.expectRevert(_closed(id, ICoordinator.Status.Fulfilled));
        coordinator.reclaim(id);
    }

    function testFuzzCannotReclaimAnUnknownRequest(uint256 id) public {
        id = bound(id, coordinator.nextRequestId(), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.UnknownRequest.selector, id));
        coordinator.reclaim(id);
    }

    function testNothingIsPaidAfterAReclaim() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.warp(block.timestamp + 2 hours);
        coordinator.reclaim(id);
        vm.expectRevert(_closed(id, ICoordinator.Status.Reclaimed));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        assertEq(coordinator.balanceOf(address(0), node), 0, "nothing paid");
    }
}

contract CoordinatorBatchTest is CoordinatorTest {
    function _items(uint256[] memory ids) internal pure returns (ICoordinator.BatchItem[] memory items) {
        items = new ICoordinator.BatchItem[](ids.length);
        for (uint256 i; i < ids.length; ++i) {
            items[i] = ICoordinator.BatchItem({requestId: ids[i], failed: false, data: abi.encode(i)});
        }
    }

    function testCanDeliverABatch() public {
        uint256[] memory ids = new uint256[](5);
        for (uint256 i; i < ids.length; ++i) {
            ids[i] = _request(hex"01", GAS_LIMIT, FEE);
        }
        vm.prank(node);
        assertEq(coordinator.deliverBatch(_items(ids)), 5, "all settled");
        assertEq(coordinator.balanceOf(address(0), node), 5 * FEE, "paid for each");
        assertEq(consumer.calls(), 5, "five callbacks");
    }

    function testBadItemsAreSkippedAndTheRestSettle() public {
        uint256 good = _request(hex"01", GAS_LIMIT, FEE);
        uint256 done = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node2);
        coordinator.deliver(done, hex"00");
        uint256[] memory ids = new uint256[](3);
        ids[0] = 999; // unknown
        ids[1] = done; // already fulfilled
        ids[2] = good;
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliverySkipped(999, node, ICoordinator.UnknownRequest.selector);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliverySkipped(done, node, ICoordinator.RequestClosed.selector);
        vm.prank(node);
        assertEq(coordinator.deliverBatch(_items(ids)), 1, "one settled");
        assertTrue(_status(good) == ICoordinator.Status.Fulfilled, "the good one landed");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid once");
    }

    function testBatchCarriesFailureReports() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        ICoordinator.BatchItem[] memory items = new ICoordinator.BatchItem[](1);
        items[0] = ICoordinator.BatchItem({requestId: id, failed: true, data: bytes("cannot decode")});
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.FailureReported(id, node, "cannot decode");
        vm.prank(node);
        coordinator.deliverBatch(items);
        assertEq(coordinator.getRequest(id).failures, 1, "counted");
    }

    function testFuzzBatchSettlesExactlyTheValidItems(uint8 count, uint256 seed) public {
        count = uint8(bound(count, 1, 20));
        uint256[] memory ids = new uint256[](count);
        uint256 valid;
        for (uint256 i; i < count; ++i) {
            if (uint256(keccak256(abi.encode(seed, i))) % 3 == 0) {
                ids[i] = 10_000 + i; // unknown
            } else {
                ids[i] = _request(hex"01", 100_000, FEE);
                ++valid;
            }
        }
        vm.prank(node);
        assertEq(coordinator.deliverBatch(_items(ids)), valid, "settled");
        assertEq(coordinator.balanceOf(address(0), node), valid * FEE, "paid for the valid ones only");
    }

    function testCannotCallTheBatchItemHookDirectly() public {
        ICoordinator.BatchItem memory item = ICoordinator.BatchItem({requestId: 1, failed: false, data: ""});
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, node));
        vm.prank(node);
        coordinator.settleBatchItem(node, item);
    }

    function testCannotBatchAsUnstakedNode() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, stranger));
        vm.prank(stranger);
        coordinator.deliverBatch(new ICoordinator.BatchItem[](0));
    }

    function testBatchReaderReturnsEveryRequest() public {
        uint256 a = _request(hex"01", GAS_LIMIT, FEE);
        uint256 b = _requestRedundant(3, FEE);
        vm.prank(node);
        coordinator.deliver(a, hex"00");
        uint256[] memory ids = new uint256[](3);
        ids[0] = a;
        ids[1] = b;
        ids[2] = 12345;
        ICoordinator.RequestView[] memory views = coordinator.getRequests(ids);
        assertTrue(views[0].status == ICoordinator.Status.Fulfilled, "a fulfilled");
        assertEq(views[1].redundancy, 3, "b redundancy");
        assertTrue(views[1].status == ICoordinator.Status.Open, "b open");
        assertTrue(views[2].status == ICoordinator.Status.None, "unknown");
    }
}
