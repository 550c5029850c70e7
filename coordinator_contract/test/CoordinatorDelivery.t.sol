// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {
    RevertingConsumer,
    GasBombConsumer,
    ReturnBombConsumer,
    ReentrantConsumer,
    RejectingRecipient,
    MockNode
} from "./utils/Actors.sol";
import {MockERC20} from "./utils/Tokens.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IEscrow} from "../src/interfaces/IEscrow.sol";
import {InferenceConsumer} from "../src/consumer/InferenceConsumer.sol";
import {SentimentConsumer} from "../src/examples/SentimentConsumer.sol";

contract CoordinatorDeliverTest is CoordinatorTest {
    function testCanDeliver() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        bytes memory output = abi.encode("positive", uint256(987_654));
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestFulfilled(id, node, keccak256(output), true, FEE);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, output), "callback ok");
        assertEq(consumer.lastRequestId(), id, "id");
        assertEq(consumer.lastNode(), node, "node");
        assertEq(consumer.lastOutput(), output, "output");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "node credited");
        assertTrue(_status(id) == ICoordinator.Status.Fulfilled, "fulfilled");
    }

    function testFuzzCanDeliver(bytes calldata output, uint256 fee) public {
        if (output.length > coordinator.maxOutputBytes()) output = output[:coordinator.maxOutputBytes()];
        fee = bound(fee, 0, 50 ether);
        uint256 id = _request(hex"01", 1_000_000, fee);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, output), "callback ok");
        assertEq(consumer.lastOutput(), output, "output");
        assertEq(coordinator.balanceOf(address(0), node), fee, "credited");
    }

    function testFuzzProtocolFeeIsFrozenAtRequestTime(uint16 bpsAtRequest, uint16 bpsLater, uint256 fee)
        public
    {
        bpsAtRequest = uint16(bound(bpsAtRequest, 0, 1_000));
        bpsLater = uint16(bound(bpsLater, 0, 1_000));
        fee = bound(fee, 0, 100 ether);
        vm.prank(owner);
        coordinator.setProtocolFee(bpsAtRequest, owner);
        uint256 id = _request(hex"01", GAS_LIMIT, fee);
        vm.prank(owner);
        coordinator.setProtocolFee(bpsLater, owner); // changed between request and delivery
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        uint256 cut = fee * bpsAtRequest / 10_000;
        assertEq(coordinator.balanceOf(address(0), owner), cut, "protocol cut at the request's rate");
        assertEq(coordinator.balanceOf(address(0), node), fee - cut, "node gets the rest");
    }

    function testFuzzRedundantNodesAreEachPaidOnce(uint16 redundancy, uint256 fee) public {
        redundancy = uint16(bound(redundancy, 1, 3));
        fee = bound(fee, 1, 10 ether);
        uint256 id = _requestRedundant(redundancy, fee);
        address[3] memory nodes = [node, node2, node3];
        for (uint256 i; i < redundancy; ++i) {
            vm.prank(nodes[i]);
            coordinator.deliver(id, abi.encode(i));
            assertEq(coordinator.balanceOf(address(0), nodes[i]), fee, "paid once");
        }
        assertEq(consumer.calls(), redundancy, "one callback per delivery");
        assertTrue(_status(id) == ICoordinator.Status.Fulfilled, "fulfilled");
    }

    function testCannotDeliverBeyondRedundancy() public {
        uint256 id = _requestRedundant(2, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.prank(node2);
        coordinator.deliver(id, hex"00");
        vm.expectRevert(_closed(id, ICoordinator.Status.Fulfilled));
        vm.prank(node3);
        coordinator.deliver(id, hex"00");
    }

    function testCannotDeliverTwiceAsTheSameNode() public {
        uint256 id = _requestRedundant(2, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.AlreadyServed.selector, id, node));
        vm.prank(node);
        coordinator.deliver(id, hex"01");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid once");
    }

    function testFuzzCannotDeliverAsUnstakedNode(address caller) public {
        if (registry.isActive(caller)) caller = stranger;
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, caller));
        vm.prank(caller);
        coordinator.deliver(id, hex"00");
    }

    function testCannotDeliverWhileUnbonding() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        registry.beginUnbonding();
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, node));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testFuzzCannotDeliverUnknownRequest(uint256 id) public {
        id = bound(id, coordinator.nextRequestId(), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.UnknownRequest.selector, id));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testFuzzCannotDeliverAfterTheDeadline(uint256 late) public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        uint64 deadline = coordinator.getRequest(id).deadline;
        vm.warp(bound(late, uint256(deadline) + 1, uint256(deadline) + 365 days));
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.DeadlinePassed.selector, id, deadline));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testCanDeliverAtTheDeadline() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.warp(coordinator.getRequest(id).deadline);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, hex"00"), "delivered at the last second");
    }

    function testFuzzCannotDeliverOversizedOutput(uint256 length) public {
        length = bound(length, uint256(coordinator.maxOutputBytes()) + 1, 40_000);
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.OutputTooLarge.selector, length, 16 * 1024));
        vm.prank(node);
        coordinator.deliver(id, new bytes(length));
    }
}

contract CoordinatorIsolationTest is CoordinatorTest {
    MockNode internal mockNode;

    function setUp() public override {
        super.setUp();
        mockNode = new MockNode(coordinator);
        _stake(address(mockNode));
    }

    function testCallbackGetsItsFullGasLimit() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.deliver{gas: 1_000_000}(id, hex"00");
        assertLe(consumer.gasAtEntry(), GAS_LIMIT, "never more than the limit");
        assertGe(consumer.gasAtEntry(), GAS_LIMIT - 5_000, "not starved");
    }

    function testCannotStarveTheCallback() public {
        uint256 id = _request(hex"01", 500_000, FEE);
        try mockNode.deliver(id, hex"00", 300_000) {
            fail("a starved delivery must revert");
        } catch (bytes memory reason) {
            // forge-lint: disable-next-line(unsafe-typecast)
            assertEq(bytes4(reason), IEscrow.InsufficientGasForCallback.selector, "reason"); // the selector
        }
        assertTrue(_status(id) == ICoordinator.Status.Open, "still open");
        assertTrue(mockNode.deliver(id, hex"00", 900_000), "delivers with enough gas");
    }

    function testFuzzCannotStarveTheCallback(uint256 gasToForward) public {
        uint256 id = _request(hex"01", 500_000, FEE);
        gasToForward = bound(gasToForward, 60_000, 560_000);
        try mockNode.deliver(id, hex"00", gasToForward) returns (bool ok) {
            assertTrue(ok, "whenever a delivery settles, the callback had its whole limit");
        } catch {
            assertTrue(_status(id) == ICoordinator.Status.Open, "a starved delivery settles nothing");
        }
    }

    function testDeliverSucceedsWhenCallbackReverts() public {
        RevertingConsumer bad = new RevertingConsumer(address(coordinator));
        uint256 id = bad.request{value: FEE}(MODEL, GAS_LIMIT);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestFulfilled(id, node, keccak256(hex"00"), false, FEE);
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"00"), "callback failed");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "node paid anyway");
    }

    function testFuzzGasBombCostsTheNodeAtMostTheLimit(uint256 gasLimit) public {
        gasLimit = bound(gasLimit, 10_000, coordinator.maxCallbackGasLimit());
        GasBombConsumer bomb = new GasBombConsumer(address(coordinator));
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 id = bomb.request{value: FEE}(MODEL, uint32(gasLimit)); // bounded to the uint32 maximum above
        vm.prank(node);
        uint256 before = gasleft();
        bool ok = coordinator.deliver{gas: gasLimit + 200_000}(id, hex"00");
        assertFalse(ok, "callback ran out of gas");
        assertLe(before - gasleft(), gasLimit + 120_000, "the limit plus fixed overhead");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "node paid");
    }

    function testReturnBombIsNotCopied() public {
        ReturnBombConsumer bomb = new ReturnBombConsumer(address(coordinator));
        uint256 id = bomb.request{value: FEE}(MODEL, 1_000_000);
        vm.prank(node);
        uint256 before = gasleft();
        assertFalse(coordinator.deliver(id, hex"00"), "callback reverted");
        assertLe(before - gasleft(), 1_120_000, "return data not copied");
    }

    function testReentrantConsumerGainsNothing() public {
        ReentrantConsumer sneaky = new ReentrantConsumer(address(coordinator));
        _stake(address(sneaky)); // even as a staked node it cannot deliver twice or reclaim early
        uint256 id = sneaky.request{value: FEE}(MODEL, 500_000);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, hex"00"), "callback ok");
        assertEq(sneaky.reentryFailures(), 3, "deliver, reclaim and withdraw all refused");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "the node was paid");
        assertEq(address(coordinator).balance, FEE, "nothing left the coordinator");
    }

    function testDeliverToAnEoaConsumerSettles() public {
        address eoa = address(0xE0A);
        vm.deal(eoa, 1 ether);
        vm.prank(eoa);
        uint256 id = coordinator.requestInference{value: FEE}(MODEL, hex"01", GAS_LIMIT);
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"00"), "nothing to call back");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "node paid");
    }

    function testCannotCallConsumerCallbacksDirectly() public {
        vm.expectRevert(abi.encodeWithSelector(InferenceConsumer.OnlyCoordinator.selector, stranger));
        vm.prank(stranger);
        consumer.rawFulfill(1, node, hex"00");
        vm.expectRevert(abi.encodeWithSelector(InferenceConsumer.OnlyCoordinator.selector, stranger));
        vm.prank(stranger);
        consumer.rawFail(1, "no");
    }
}

contract CoordinatorWithdrawTest is CoordinatorTest {
    function _earn(uint256 fee) internal {
        uint256 id = _request(hex"01", GAS_LIMIT, fee);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testCanWithdraw() public {
        _earn(FEE);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IEscrow.Withdrawn(node, address(0), address(0xCAFE), FEE);
        vm.prank(node);
        assertEq(coordinator.withdraw(address(0), address(0xCAFE)), FEE, "amount");
        assertEq(address(0xCAFE).balance, FEE, "received");
        assertEq(address(coordinator).balance, 0, "escrow empty");
    }

    function testFuzzCanWithdrawATokenEarning(uint256 fee) public {
        fee = bound(fee, 1, type(uint80).max);
        MockERC20 token = new MockERC20();
        token.mint(address(consumer), fee);
        consumer.approve(address(token), fee);
        uint256 id = consumer.requestWith(_params(1, fee, address(token)), hex"01");
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.prank(node);
        coordinator.withdraw(address(token), address(0xCAFE));
        assertEq(token.balanceOf(address(0xCAFE)), fee, "received in the token");
    }

    function testCannotWithdrawNothing() public {
        vm.expectRevert(abi.encodeWithSelector(IEscrow.NothingToWithdraw.selector, node, address(0)));
        vm.prank(node);
        coordinator.withdraw(address(0), node);
    }

    function testCannotWithdrawToRejectingRecipient() public {
        _earn(FEE);
        RejectingRecipient r = new RejectingRecipient();
        vm.expectRevert(abi.encodeWithSelector(IEscrow.TransferFailed.selector, address(0), address(r), FEE));
        vm.prank(node);
        coordinator.withdraw(address(0), address(r));
        assertEq(coordinator.balanceOf(address(0), node), FEE, "kept on failure");
    }
}

contract SentimentConsumerTest is CoordinatorTest {
    SentimentConsumer internal sentiment;

    function setUp() public override {
        super.setUp();
        sentiment = new SentimentConsumer(address(coordinator), MODEL);
    }

    function testCanAskAndReceiveSentiment() public {
        uint256 id = sentiment.askSentiment{value: FEE}("I love it");
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("positive", uint256(912_345))), "callback ok");
        (string memory text, string memory label, uint256 score, bool answered, bool failed) =
            sentiment.sentiments(id);
        assertEq(text, "I love it", "text");
        assertEq(label, "positive", "label");
        assertEq(score, 912_345, "score");
        assertTrue(answered, "answered");
        assertFalse(failed, "not failed");
    }

    function testFuzzCanReceiveSentiment(string memory label, uint256 score) public {
        if (bytes(label).length > 64) label = "long";
        uint256 id = sentiment.askSentiment{value: FEE}("text");
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode(label, score)), "callback ok");
        (,, uint256 stored, bool answered,) = sentiment.sentiments(id);
        assertEq(stored, score, "score");
        assertTrue(answered, "answered");
    }

    function testMalformedOutputLeavesTheQuestionOpen() public {
        uint256 id = sentiment.askSentiment{value: FEE}("text");
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"deadbeef"), "decode failed in the callback");
        (,,, bool answered,) = sentiment.sentiments(id);
        assertFalse(answered, "not answered");
    }

    function testCanRecordAFailedQuestionAndRefundIt() public {
        uint256 id = sentiment.askSentiment{value: FEE}("text");
        vm.prank(node);
        coordinator.reportFailure(id, "model down");
        vm.prank(node2);
        coordinator.reportFailure(id, "model down");
        (,,,, bool failed) = sentiment.sentiments(id);
        assertTrue(failed, "failed");
        sentiment.withdrawRefunds(address(0xCAFE));
        assertEq(address(0xCAFE).balance, FEE, "refund withdrawn by the owner");
    }

    function testCannotWithdrawRefundsAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(SentimentConsumer.NotOwner.selector, stranger));
        vm.prank(stranger);
        sentiment.withdrawRefunds(stranger);
    }
}
