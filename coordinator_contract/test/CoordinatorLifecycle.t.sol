// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {OptimisticVerifier} from "./utils/Verifiers.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {CoordinatorConfig} from "../src/CoordinatorConfig.sol";

/// @notice Cancel, and the rule that every request ends in exactly one terminal callback (or none, if cancelled).
contract CoordinatorCancelTest is CoordinatorTest {
    function testCanCancelBeforeAnyNodeActed() public {
        uint256 id = _requestRedundant(2, FEE);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestCancelled(id, 2 * FEE);
        assertEq(consumer.cancel(id), 2 * FEE, "whole escrow");
        assertTrue(_status(id) == ICoordinator.Status.Cancelled, "cancelled");
        assertEq(uint8(ICoordinator.Status.Cancelled), 5, "appended after Reclaimed");
        assertEq(coordinator.balanceOf(address(0), address(consumer)), 2 * FEE, "credited, pulled later");
        assertEq(consumer.calls() + consumer.failures(), 0, "no callback for a cancel");
    }

    function testFuzzCanCancelBeforeAnyNodeActed(uint16 redundancy, uint256 fee, uint256 elapsed) public {
        redundancy = uint16(bound(redundancy, 1, 16));
        fee = bound(fee, 1, 1_000 ether);
        uint256 id =
            consumer.requestWith{value: fee * redundancy}(_params(redundancy, fee, address(0)), hex"01");
        vm.warp(block.timestamp + bound(elapsed, 0, 2 hours)); // a cancel after the deadline is the consumer's right
        assertEq(consumer.cancel(id), fee * redundancy, "whole escrow");
        consumer.withdrawRefunds(address(0), address(0xCAFE));
        assertEq(address(0xCAFE).balance, fee * redundancy, "withdrawn");
    }

    function testFuzzOnlyTheConsumerCancels(address caller) public {
        if (caller == address(consumer)) caller = stranger;
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NotConsumer.selector, id, caller));
        vm.prank(caller);
        coordinator.cancelRequest(id);
    }

    function testCannotCancelAnUnknownRequest() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.UnknownRequest.selector, 7));
        consumer.cancel(7);
    }

    function testCannotCancelAfterADelivery() public {
        uint256 id = _requestRedundant(2, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodesAlreadyActed.selector, id, 1, 0, 0));
        consumer.cancel(id);
    }

    function testFuzzCannotCancelAfterAFailureReport(uint16 redundancy) public {
        redundancy = uint16(bound(redundancy, 2, 3)); // quorum >= 2: one report leaves it open
        uint256 id = _requestRedundant(redundancy, FEE);
        vm.prank(node);
        coordinator.reportFailure(id, "down");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodesAlreadyActed.selector, id, 0, 1, 0));
        consumer.cancel(id);
    }

    function testCannotCancelWithAnOutputAwaitingItsVerdict() public {
        OptimisticVerifier optimistic = new OptimisticVerifier(coordinator, 1 hours);
        vm.prank(owner);
        registry.setVerifier(address(optimistic), true);
        uint256 id =
            consumer.requestVerified{value: FEE}(_params(1, FEE, address(0)), hex"01", address(optimistic));
        vm.prank(node);
        coordinator.deliverWithProof(id, hex"00", "");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodesAlreadyActed.selector, id, 0, 0, 1));
        consumer.cancel(id);
        optimistic.judge(id, node, false); // rejected: nobody's output stands, the consumer may withdraw the request
        assertEq(consumer.cancel(id), FEE, "cancel after a rejection");
    }

    function testCannotCancelAClosedRequest() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.expectRevert(_closed(id, ICoordinator.Status.Fulfilled));
        consumer.cancel(id);
    }

    function testACancelledRequestTakesNoDeliveryReportOrReclaim() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        consumer.cancel(id);
        vm.expectRevert(_closed(id, ICoordinator.Status.Cancelled));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.expectRevert(_closed(id, ICoordinator.Status.Cancelled));
        vm.prank(node);
        coordinator.reportFailure(id, "x");
        vm.warp(block.timestamp + 2 hours);
        vm.expectRevert(_closed(id, ICoordinator.Status.Cancelled));
        coordinator.reclaim(id);
        vm.expectRevert(_closed(id, ICoordinator.Status.Cancelled));
        consumer.cancel(id);
        assertEq(address(coordinator).balance, FEE, "the escrow is the consumer's balance, held once");
    }
}

/// @notice Every path of a request ends in exactly one terminal callback: the results of a fulfilled request, one
/// error callback for a failed or reclaimed one (after any partial results), none for a cancelled one. After the end,
/// every other way to end it (deliver, report, reclaim, cancel) is refused, so no second terminal callback exists.
contract CoordinatorTerminalCallbackTest is CoordinatorTest {
    function setUp() public override {
        super.setUp();
        _stake(address(0xB0B4));
    }

    /// @dev Tries every way to end `id` again, after its deadline, and checks the callbacks did not change.
    function _tryToEndAgain(uint256 id, uint256 results, uint256 errors) internal {
        vm.warp(uint256(coordinator.getRequest(id).deadline) + 1);
        address[4] memory nodes = [node, node2, node3, address(0xB0B4)];
        for (uint256 i; i < nodes.length; ++i) {
            vm.prank(nodes[i]);
            try coordinator.deliver(id, hex"00") {
                fail("a closed request took a delivery");
            } catch {}
            vm.prank(nodes[i]);
            try coordinator.reportFailure(id, "late") {
                fail("a closed request took a report");
            } catch {}
        }
        try coordinator.reclaim(id) {
            fail("a closed request was reclaimed");
        } catch {}
        try consumer.cancel(id) {
            fail("a closed request was cancelled");
        } catch {}
        assertEq(consumer.calls(), results, "results");
        assertEq(consumer.failures(), errors, "error callbacks");
    }

    function testFulfilledEndsInItsResultsOnly() public {
        uint256 id = _requestRedundant(2, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"01");
        vm.prank(node2);
        coordinator.deliver(id, hex"02");
        assertTrue(_status(id) == ICoordinator.Status.Fulfilled, "fulfilled");
        _tryToEndAgain(id, 2, 0);
    }

    function testQuorumFailureEndsInOneErrorCallback() public {
        uint256 id = _requestRedundant(2, FEE);
        vm.prank(node);
        coordinator.reportFailure(id, "a");
        vm.prank(node2);
        coordinator.reportFailure(id, "b");
        assertTrue(_status(id) == ICoordinator.Status.Failed, "failed");
        assertEq(consumer.failures(), 1, "one error callback");
        _tryToEndAgain(id, 0, 1);
    }

    function testReclaimedEndsInOneErrorCallback() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.warp(block.timestamp + 1 hours + 1);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.Reclaimed(id, address(consumer), 1, FEE, true);
        vm.prank(node); // the node that saw the request closes it as part of its service
        coordinator.reclaim(id);
        assertEq(consumer.failures(), 1, "one error callback");
        assertEq(consumer.lastReason(), "deadline: 1 of 1 unserved", "reason");
        _tryToEndAgain(id, 0, 1);
    }

    function testFuzzPartiallyDeliveredThenReclaimedEndsInOneErrorCallback(
        uint16 redundancy,
        uint16 delivered
    ) public {
        redundancy = uint16(bound(redundancy, 2, 4));
        delivered = uint16(bound(delivered, 1, redundancy - 1));
        uint256 id = _requestRedundant(redundancy, FEE);
        address[4] memory nodes = [node, node2, node3, address(0xB0B4)];
        for (uint256 i; i < delivered; ++i) {
            vm.prank(nodes[i]);
            coordinator.deliver(id, hex"00");
        }
        vm.warp(block.timestamp + 1 hours + 1);
        assertEq(coordinator.reclaim(id), uint256(redundancy - delivered) * FEE, "unserved slots refunded");
        assertEq(consumer.failures(), 1, "one error callback after the partial results");
        assertEq(
            consumer.lastReason(),
            string.concat(
                "deadline: ",
                vm.toString(uint256(redundancy - delivered)),
                " of ",
                vm.toString(uint256(redundancy)),
                " unserved"
            ),
            "reason names the unserved slots"
        );
        _tryToEndAgain(id, delivered, 1);
    }

    function testCancelledEndsWithoutACallback() public {
        uint256 id = _requestRedundant(2, FEE);
        consumer.cancel(id);
        _tryToEndAgain(id, 0, 0);
    }

    function testAReclaimThatFoundEveryOutputPendingOwesOneErrorCallbackToTheFirstRejection() public {
        OptimisticVerifier slow = new OptimisticVerifier(coordinator, 3 hours); // window outlives the deadline
        vm.prank(owner);
        registry.setVerifier(address(slow), true);
        uint256 id =
            consumer.requestVerified{value: 2 * FEE}(_params(2, FEE, address(0)), hex"01", address(slow));
        vm.prank(node);
        coordinator.deliverWithProof(id, hex"01", "");
        vm.prank(node2);
        coordinator.deliverWithProof(id, hex"02", "");
        vm.warp(block.timestamp + 1 hours + 1);
        assertEq(coordinator.reclaim(id), 0, "nothing unserved yet");
        assertEq(consumer.failures(), 0, "so no error callback yet");
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.Reclaimed(id, address(consumer), 1, FEE, true);
        slow.judge(id, node, false);
        assertEq(consumer.failures(), 1, "the first rejection makes the owed callback");
        slow.judge(id, node2, false);
        assertEq(consumer.failures(), 1, "and only the first");
        assertEq(coordinator.balanceOf(address(0), address(consumer)), 2 * FEE, "both slots refunded");
        _tryToEndAgain(id, 0, 1);
    }
}

/// @notice The two-slot request record: its narrow fields are kept in range by named errors.
contract CoordinatorPackingTest is CoordinatorTest {
    function testFuzzCannotPayAFeeAboveTheCap(uint256 fee) public {
        fee = bound(fee, uint256(type(uint80).max) + 1, type(uint128).max);
        vm.deal(address(this), fee);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.FeeTooHigh.selector, fee, type(uint80).max));
        consumer.request{value: fee}(MODEL, hex"01", GAS_LIMIT);
    }

    function testCanPayTheHighestFee() public {
        uint256 fee = type(uint80).max;
        vm.deal(address(this), fee);
        uint256 id = consumer.request{value: fee}(MODEL, hex"01", GAS_LIMIT);
        assertEq(coordinator.getRequest(id).feePerNode, fee, "kept whole");
    }

    function testFuzzCannotSetALimitAboveItsCap(uint8 which, uint256 excess) public {
        which = uint8(bound(which, 0, 4));
        uint16 small = uint16(bound(excess, 1, 1_000));
        uint256[5] memory max = [
            uint256(type(uint80).max), type(uint24).max, 255, 255, uint256(coordinator.MAX_DEADLINE_WINDOW())
        ];
        uint256 minFee = which == 0 ? max[0] + small : 0;
        uint32 gasLimit = which == 1 ? uint32(type(uint24).max) + small : 2_000_000;
        uint16 redundancy = which == 2 ? 255 + small : 16;
        uint16 reports = which == 3 ? 255 + small : 2;
        uint64 window = which == 4 ? coordinator.MAX_DEADLINE_WINDOW() + small : 30 days;
        vm.expectRevert(
            abi.encodeWithSelector(ICoordinator.LimitOutOfRange.selector, max[which] + small, max[which])
        );
        vm.prank(owner);
        coordinator.setLimits(minFee, gasLimit, 16 * 1024, 16 * 1024, redundancy, reports, window);
    }

    function testTheWidestLimitsStillFitTheRecord() public {
        uint64 cap = coordinator.MAX_DEADLINE_WINDOW();
        vm.prank(owner);
        coordinator.setLimits(0, type(uint24).max, 16 * 1024, 16 * 1024, 255, 255, cap);
        ICoordinator.RequestParams memory p = _params(255, 1, address(0));
        p.callbackGasLimit = type(uint24).max;
        p.deadline = uint64(block.timestamp) + cap;
        uint256 id = consumer.requestWith{value: 255}(p, hex"01");
        ICoordinator.RequestView memory v = coordinator.getRequest(id);
        assertEq(v.redundancy, 255, "redundancy");
        assertEq(v.callbackGasLimit, type(uint24).max, "gas limit");
        assertEq(v.deadline, p.deadline, "deadline");
        assertEq(coordinator.failureQuorum(id), 255, "quorum");
    }

    function testConfigKeepsItsCaps() public view {
        CoordinatorConfig config = coordinator;
        assertEq(config.MAX_DEADLINE_WINDOW(), 365 days, "deadline window cap");
        assertEq(coordinator.minFee(), 0, "default minimum fee");
    }
}
