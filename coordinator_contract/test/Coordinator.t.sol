// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {
    RecordingConsumer,
    RevertingConsumer,
    GasBombConsumer,
    ReturnBombConsumer,
    ReentrantConsumer,
    RejectingRecipient,
    MockNode
} from "./utils/Actors.sol";
import {Coordinator} from "../src/Coordinator.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {InferenceConsumer} from "../src/consumer/InferenceConsumer.sol";
import {SentimentConsumer} from "../src/examples/SentimentConsumer.sol";

abstract contract CoordinatorTest is Test {
    bytes32 internal constant MODEL = keccak256("classify/minilm-sentiment@1");
    uint32 internal constant GAS_LIMIT = 300_000;
    uint256 internal constant FEE = 0.01 ether;

    address internal owner = address(0xA11CE);
    address internal node = address(0xB0B);
    address internal stranger = address(0xBAD);
    Coordinator internal coordinator;
    RecordingConsumer internal consumer;

    function setUp() public virtual {
        coordinator = new Coordinator(owner);
        vm.prank(owner);
        coordinator.registerNode(node);
        consumer = new RecordingConsumer(address(coordinator));
        vm.deal(address(this), 1_000 ether);
    }

    function _request(bytes memory input, uint32 callbackGasLimit, uint256 fee) internal returns (uint256) {
        return consumer.request{value: fee}(MODEL, input, callbackGasLimit);
    }
}

contract CoordinatorNodesTest is CoordinatorTest {
    function testCanRegisterNode() public {
        vm.expectEmit(true, false, false, true, address(coordinator));
        emit ICoordinator.NodeRegistered(stranger);
        vm.prank(owner);
        coordinator.registerNode(stranger);
        assertTrue(coordinator.isNode(stranger), "registered");
    }

    function testFuzzCanRegisterNode(address who) public {
        if (who == node) who = address(uint160(who) ^ 1);
        vm.prank(owner);
        coordinator.registerNode(who);
        assertTrue(coordinator.isNode(who), "registered");
    }

    function testCannotRegisterNodeTwice() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeAlreadyRegistered.selector, node));
        vm.prank(owner);
        coordinator.registerNode(node);
    }

    function testCannotRegisterNodeAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.registerNode(stranger);
    }

    function testFuzzCannotRegisterNodeAsStranger(address caller) public {
        if (caller == owner) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, caller));
        vm.prank(caller);
        coordinator.registerNode(caller);
    }

    function testCanRemoveNode() public {
        vm.expectEmit(true, false, false, true, address(coordinator));
        emit ICoordinator.NodeRemoved(node);
        vm.prank(owner);
        coordinator.removeNode(node);
        assertFalse(coordinator.isNode(node), "removed");
    }

    function testCannotRemoveUnknownNode() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotRegistered.selector, stranger));
        vm.prank(owner);
        coordinator.removeNode(stranger);
    }

    function testCannotRemoveNodeAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.removeNode(node);
    }

    function testCanTransferOwnership() public {
        vm.prank(owner);
        coordinator.transferOwnership(stranger);
        assertEq(coordinator.owner(), stranger, "owner");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, owner));
        vm.prank(owner);
        coordinator.registerNode(address(1));
    }

    function testCannotTransferOwnershipAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.transferOwnership(stranger);
    }

    function testCanSetLimits() public {
        vm.expectEmit(false, false, false, true, address(coordinator));
        emit ICoordinator.LimitsChanged(1 gwei, 500_000, 100, 200);
        vm.prank(owner);
        coordinator.setLimits(1 gwei, 500_000, 100, 200);
        assertEq(coordinator.minFee(), 1 gwei, "minFee");
        assertEq(coordinator.maxCallbackGasLimit(), 500_000, "maxCallbackGasLimit");
        assertEq(coordinator.maxInputBytes(), 100, "maxInputBytes");
        assertEq(coordinator.maxOutputBytes(), 200, "maxOutputBytes");
    }

    function testCannotSetZeroLimit() public {
        vm.expectRevert(ICoordinator.InvalidLimit.selector);
        vm.prank(owner);
        coordinator.setLimits(0, 0, 100, 200);
    }

    function testCannotSetLimitsAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, stranger));
        vm.prank(stranger);
        coordinator.setLimits(0, 1, 1, 1);
    }
}

contract CoordinatorRequestTest is CoordinatorTest {
    function testCanRequest() public {
        bytes memory input = abi.encode("hello");
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestCreated(1, MODEL, address(consumer), input, FEE, GAS_LIMIT);
        uint256 id = _request(input, GAS_LIMIT, FEE);

        assertEq(id, 1, "first id");
        assertEq(coordinator.nextRequestId(), 2, "next id");
        assertEq(address(coordinator).balance, FEE, "fee escrowed");
        (address c, uint32 gasLimit, uint256 fee, bool fulfilled) = coordinator.getRequest(id);
        assertEq(c, address(consumer), "consumer");
        assertEq(gasLimit, GAS_LIMIT, "gas limit");
        assertEq(fee, FEE, "fee");
        assertFalse(fulfilled, "not fulfilled");
    }

    function testFuzzCanRequest(bytes memory input, uint256 gasLimit, uint256 fee) public {
        if (input.length == 0 || input.length > coordinator.maxInputBytes()) input = hex"00";
        gasLimit = bound(gasLimit, 1, coordinator.maxCallbackGasLimit());
        fee = bound(fee, 0, 100 ether);
        // casting to 'uint32' is safe because bound() kept gasLimit within uint32
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 id = _request(input, uint32(gasLimit), fee);
        (address c, uint32 storedGas, uint256 storedFee,) = coordinator.getRequest(id);
        assertEq(c, address(consumer), "consumer");
        assertEq(storedGas, gasLimit, "gas limit");
        assertEq(storedFee, fee, "fee");
        assertEq(address(coordinator).balance, fee, "escrow");
    }

    function testRequestIdsIncrease() public {
        uint256 a = _request(hex"01", GAS_LIMIT, FEE);
        uint256 b = _request(hex"02", GAS_LIMIT, FEE);
        assertEq(b, a + 1, "sequential ids");
        assertEq(address(coordinator).balance, 2 * FEE, "both escrowed");
    }

    function testCannotRequestWithZeroGasLimit() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidCallbackGasLimit.selector, 0, 2_000_000));
        _request(hex"01", 0, FEE);
    }

    function testFuzzCannotRequestAboveMaxGasLimit(uint256 gasLimit) public {
        gasLimit = bound(gasLimit, uint256(coordinator.maxCallbackGasLimit()) + 1, type(uint32).max);
        vm.expectRevert(
            abi.encodeWithSelector(ICoordinator.InvalidCallbackGasLimit.selector, gasLimit, 2_000_000)
        );
        // casting to 'uint32' is safe because bound() kept gasLimit within uint32
        // forge-lint: disable-next-line(unsafe-typecast)
        _request(hex"01", uint32(gasLimit), FEE);
    }

    function testCannotRequestEmptyInput() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidInputLength.selector, 0, 16 * 1024));
        _request("", GAS_LIMIT, FEE);
    }

    function testFuzzCannotRequestOversizedInput(uint256 length) public {
        length = bound(length, uint256(coordinator.maxInputBytes()) + 1, 40_000);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidInputLength.selector, length, 16 * 1024));
        _request(new bytes(length), GAS_LIMIT, FEE);
    }

    function testFuzzCannotRequestBelowMinFee(uint256 fee) public {
        vm.prank(owner);
        coordinator.setLimits(1 ether, 2_000_000, 16 * 1024, 16 * 1024);
        fee = bound(fee, 0, 1 ether - 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.FeeTooLow.selector, fee, 1 ether));
        _request(hex"01", GAS_LIMIT, fee);
    }
}

contract CoordinatorDeliverTest is CoordinatorTest {
    function testCanDeliver() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        bytes memory output = abi.encode("positive", uint256(987_654));

        vm.expectEmit(true, true, false, true, address(coordinator));
        emit ICoordinator.RequestFulfilled(id, node, keccak256(output), true);
        vm.prank(node);
        bool ok = coordinator.deliver(id, output);

        assertTrue(ok, "callback ok");
        assertEq(consumer.lastRequestId(), id, "consumer saw id");
        assertEq(consumer.lastOutput(), output, "consumer saw output");
        assertEq(coordinator.balanceOf(node), FEE, "node credited");
        (,,, bool fulfilled) = coordinator.getRequest(id);
        assertTrue(fulfilled, "fulfilled");
    }

    function testFuzzCanDeliver(bytes calldata output, uint256 fee) public {
        if (output.length > coordinator.maxOutputBytes()) output = output[:coordinator.maxOutputBytes()];
        fee = bound(fee, 0, 50 ether);
        uint256 id = _request(hex"01", 1_000_000, fee);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, output), "callback ok");
        assertEq(consumer.lastOutput(), output, "output");
        assertEq(coordinator.balanceOf(node), fee, "node credited");
    }

    function testCallbackGetsItsFullGasLimit() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.deliver{gas: 1_000_000}(id, hex"00");
        // The callback starts with the limit minus the consumer's own dispatch (a few thousand gas at most).
        assertLe(consumer.gasAtEntry(), GAS_LIMIT, "never more than the limit");
        assertGe(consumer.gasAtEntry(), GAS_LIMIT - 5_000, "not starved");
    }

    function testCannotDeliverAsStranger() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotRegistered.selector, stranger));
        vm.prank(stranger);
        coordinator.deliver(id, hex"00");
    }

    function testFuzzCannotDeliverAsStranger(address caller) public {
        if (caller == node) caller = stranger;
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotRegistered.selector, caller));
        vm.prank(caller);
        coordinator.deliver(id, hex"00");
    }

    function testCannotDeliverAsRemovedNode() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(owner);
        coordinator.removeNode(node);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotRegistered.selector, node));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testFuzzCannotDeliverUnknownRequest(uint256 id) public {
        id = bound(id, coordinator.nextRequestId(), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.UnknownRequest.selector, id));
        vm.prank(node);
        coordinator.deliver(id, hex"00");
    }

    function testCannotDeliverTwice() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.prank(node);
        coordinator.deliver(id, hex"00");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.AlreadyFulfilled.selector, id));
        vm.prank(node);
        coordinator.deliver(id, hex"01");
        assertEq(consumer.calls(), 1, "one callback");
        assertEq(coordinator.balanceOf(node), FEE, "paid once");
    }

    function testFuzzCannotDeliverOversizedOutput(uint256 length) public {
        length = bound(length, uint256(coordinator.maxOutputBytes()) + 1, 40_000);
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.OutputTooLarge.selector, length, 16 * 1024));
        vm.prank(node);
        coordinator.deliver(id, new bytes(length));
    }

    function testCannotStarveTheCallback() public {
        MockNode mockNode = new MockNode(coordinator);
        vm.prank(owner);
        coordinator.registerNode(address(mockNode));
        uint256 id = _request(hex"01", 500_000, FEE);
        // Enough gas to pass every check but not enough to hand the callback its 500k.
        try mockNode.deliver(id, hex"00", 300_000) {
            fail("a starved delivery must revert");
        } catch (bytes memory reason) {
            // casting to 'bytes4' is safe because it takes the selector, the first 4 bytes
            // forge-lint: disable-next-line(unsafe-typecast)
            assertEq(bytes4(reason), ICoordinator.InsufficientGasForCallback.selector, "revert reason");
        }
        (,,, bool fulfilled) = coordinator.getRequest(id);
        assertFalse(fulfilled, "still open");
        assertTrue(mockNode.deliver(id, hex"00", 900_000), "delivers with enough gas");
    }

    function testFuzzCannotStarveTheCallback(uint256 gasToForward) public {
        MockNode mockNode = new MockNode(coordinator);
        vm.prank(owner);
        coordinator.registerNode(address(mockNode));
        uint256 id = _request(hex"01", 500_000, FEE);
        gasToForward = bound(gasToForward, 60_000, 500_000);
        try mockNode.deliver(id, hex"00", gasToForward) returns (bool ok) {
            // Whenever a delivery goes through, the callback must have had its whole limit and succeeded.
            assertTrue(ok, "callback ran with its limit");
        } catch {
            (,,, bool fulfilled) = coordinator.getRequest(id);
            assertFalse(fulfilled, "a starved delivery settles nothing");
        }
    }

    function testDeliverSucceedsWhenCallbackReverts() public {
        RevertingConsumer bad = new RevertingConsumer(address(coordinator));
        uint256 id = bad.request{value: FEE}(MODEL, GAS_LIMIT);
        vm.expectEmit(true, true, false, true, address(coordinator));
        emit ICoordinator.RequestFulfilled(id, node, keccak256(hex"00"), false);
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"00"), "callback failed");
        assertEq(coordinator.balanceOf(node), FEE, "node paid anyway");
    }

    function testFuzzGasBombCostsTheNodeAtMostTheLimit(uint256 gasLimit) public {
        gasLimit = bound(gasLimit, 10_000, coordinator.maxCallbackGasLimit());
        GasBombConsumer bomb = new GasBombConsumer(address(coordinator));
        // casting to 'uint32' is safe because bound() kept gasLimit within uint32
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 id = bomb.request{value: FEE}(MODEL, uint32(gasLimit));
        vm.prank(node);
        uint256 before = gasleft();
        bool ok = coordinator.deliver{gas: gasLimit + 200_000}(id, hex"00");
        uint256 used = before - gasleft();
        assertFalse(ok, "callback ran out of gas");
        assertLe(used, gasLimit + 100_000, "node pays the limit plus fixed overhead");
        assertEq(coordinator.balanceOf(node), FEE, "node paid");
    }

    function testReturnBombIsNotCopied() public {
        ReturnBombConsumer bomb = new ReturnBombConsumer(address(coordinator));
        uint256 id = bomb.request{value: FEE}(MODEL, 1_000_000);
        vm.prank(node);
        uint256 before = gasleft();
        bool ok = coordinator.deliver(id, hex"00");
        assertFalse(ok, "callback reverted");
        assertLe(before - gasleft(), 1_100_000, "return data not copied");
    }

    function testReentrantCallbackCannotDeliverAgain() public {
        ReentrantConsumer sneaky = new ReentrantConsumer(address(coordinator));
        uint256 id = sneaky.request{value: FEE}(MODEL, 300_000);
        vm.prank(owner);
        coordinator.registerNode(address(sneaky));
        vm.prank(node);
        assertTrue(coordinator.deliver(id, hex"00"), "callback ok");
        assertTrue(sneaky.reentryFailed(), "re-entry rejected");
        assertEq(coordinator.balanceOf(node), FEE, "only the node was paid");
        assertEq(coordinator.balanceOf(address(sneaky)), 0, "the re-entrant paid nothing");
    }

    function testDeliverToEoaConsumerSettles() public {
        address eoa = address(0xE0A);
        vm.deal(eoa, 1 ether);
        vm.prank(eoa);
        uint256 id = coordinator.requestInference{value: FEE}(MODEL, hex"01", GAS_LIMIT);
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"00"), "nothing to call back");
        assertEq(coordinator.balanceOf(node), FEE, "node paid");
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
        address payable to = payable(address(0xCAFE));
        vm.expectEmit(true, true, false, true, address(coordinator));
        emit ICoordinator.Withdrawn(node, to, FEE);
        vm.prank(node);
        assertEq(coordinator.withdraw(to), FEE, "amount");
        assertEq(to.balance, FEE, "received");
        assertEq(coordinator.balanceOf(node), 0, "balance cleared");
        assertEq(address(coordinator).balance, 0, "escrow empty");
    }

    function testFuzzCanWithdraw(uint256 fee) public {
        fee = bound(fee, 1, 100 ether);
        _earn(fee);
        vm.prank(node);
        coordinator.withdraw(address(0xCAFE));
        assertEq(address(0xCAFE).balance, fee, "received");
    }

    function testCannotWithdrawNothing() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NothingToWithdraw.selector, node));
        vm.prank(node);
        coordinator.withdraw(node);
    }

    function testCannotWithdrawToRejectingRecipient() public {
        _earn(FEE);
        RejectingRecipient r = new RejectingRecipient();
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.TransferFailed.selector, address(r), FEE));
        vm.prank(node);
        coordinator.withdraw(address(r));
        assertEq(coordinator.balanceOf(node), FEE, "kept on failure");
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
        (string memory text, string memory label, uint256 score, bool answered) = sentiment.sentiments(id);
        assertEq(text, "I love it", "text");
        assertEq(label, "positive", "label");
        assertEq(score, 912_345, "score");
        assertTrue(answered, "answered");
    }

    function testFuzzCanReceiveSentiment(string memory label, uint256 score) public {
        if (bytes(label).length > 64) label = "long";
        uint256 id = sentiment.askSentiment{value: FEE}("text");
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode(label, score)), "callback ok");
        (,, uint256 stored, bool answered) = sentiment.sentiments(id);
        assertEq(stored, score, "score");
        assertTrue(answered, "answered");
    }

    function testMalformedOutputLeavesTheQuestionOpen() public {
        uint256 id = sentiment.askSentiment{value: FEE}("text");
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"deadbeef"), "decode failed in the callback");
        (,,, bool answered) = sentiment.sentiments(id);
        assertFalse(answered, "not answered");
    }

    function testCannotFulfillFromStranger() public {
        vm.expectRevert(abi.encodeWithSelector(InferenceConsumer.OnlyCoordinator.selector, stranger));
        vm.prank(stranger);
        sentiment.rawFulfill(1, abi.encode("positive", uint256(1)));
    }

    function testFuzzCannotFulfillFromStranger(address caller) public {
        if (caller == address(coordinator)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(InferenceConsumer.OnlyCoordinator.selector, caller));
        vm.prank(caller);
        sentiment.rawFulfill(1, abi.encode("positive", uint256(1)));
    }
}
