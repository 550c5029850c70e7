// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {Vm} from "../testing/Test.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {InferenceConsumer} from "../src/consumer/InferenceConsumer.sol";
import {InferaLLM} from "../src/consumer/InferaLLM.sol";
import {LLMModeration} from "../src/examples/LLMModeration.sol";
import {LLMScore} from "../src/examples/LLMScore.sol";

/// @notice Stands in for the coordinator of a consumer deployed with this probe's address, to measure the consumer's
/// callback alone: the gas `rawFulfill` used, counted in the probe's own frame (no transaction base cost, none of
/// the coordinator's work), so the figure is the same with and without `--isolate`.
contract CallbackGasProbe {
    function fulfill(InferenceConsumer consumer, uint256 requestId, address node, bytes calldata output)
        external
        returns (uint256 used)
    {
        uint256 before = gasleft();
        consumer.rawFulfill(requestId, node, output);
        used = before - gasleft();
    }
}

/// @notice Reads back what an example asked the Coordinator for, from its `RequestCreated` log (a plain request
/// stores only a hash of its input).
abstract contract LLMExampleTest is CoordinatorTest {
    /// @dev Model id, input and callback gas limit of the last `RequestCreated` since `vm.recordLogs()`.
    function _created() internal returns (bytes32 modelId, bytes memory input, uint32 callbackGasLimit) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i = logs.length; i > 0; --i) {
            Vm.Log memory log = logs[i - 1];
            if (log.emitter == address(coordinator) && log.topics[0] == ICoordinator.RequestCreated.selector)
            {
                (input,,, callbackGasLimit,,,) =
                    abi.decode(log.data, (bytes, address, uint256, uint32, uint16, uint64, address));
                return (log.topics[2], input, callbackGasLimit);
            }
        }
        fail("no RequestCreated");
    }
}

contract LLMModerationTest is LLMExampleTest {
    LLMModeration internal moderation;

    function setUp() public override {
        super.setUp();
        moderation = new LLMModeration(address(coordinator), InferaLLM.MODEL_ID);
    }

    function _verdict(uint256 id) internal view returns (bool answered, bool flagged, bool failed) {
        return moderation.verdicts(id);
    }

    function testRequestsTheSpamChoice() public {
        vm.recordLogs();
        moderation.check{value: FEE}("Cheap watches at example.com!!!");
        string[] memory allowed = new string[](2);
        allowed[0] = "yes";
        allowed[1] = "no";
        bytes memory input = InferaLLM.choice(
            moderation.SYSTEM(),
            "Is the following post spam? Answer yes or no.\n\nPost: Cheap watches at example.com!!!",
            allowed
        );
        (bytes32 modelId, bytes memory sent, uint32 callbackGasLimit) = _created();
        assertEq(modelId, InferaLLM.MODEL_ID, "model");
        assertEq(sent, input, "a yes/no Choice about the post");
        assertEq(callbackGasLimit, moderation.CALLBACK_GAS_LIMIT(), "gas limit");
    }

    function testFuzzRequestsTheSpamChoice(string memory post) public {
        vm.recordLogs();
        moderation.check{value: FEE}(post);
        (, bytes memory sent,) = _created();
        assertEq(sent, moderation.input(post), "input");
    }

    function testCanFlagSpam() public {
        uint256 id = moderation.check{value: FEE}("Cheap watches at example.com!!!");
        vm.expectEmit(true, true, true, true, address(moderation));
        emit LLMModeration.Moderated(id, node, true);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("yes", int256(0))), "callback ok");
        (bool answered, bool flagged, bool failed) = _verdict(id);
        assertTrue(answered, "answered");
        assertTrue(flagged, "spam flagged");
        assertFalse(failed, "not failed");
    }

    function testCanClearAPost() public {
        uint256 id = moderation.check{value: FEE}("The meeting moved to 3pm.");
        vm.expectEmit(true, true, true, true, address(moderation));
        emit LLMModeration.Moderated(id, node, false);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("no", int256(1))), "callback ok");
        (bool answered, bool flagged,) = _verdict(id);
        assertTrue(answered, "answered");
        assertFalse(flagged, "not flagged");
    }

    function testFuzzTheIndexDecidesTheVerdict(bool spam, string memory text) public {
        if (bytes(text).length > 64) text = "some text";
        uint256 id = moderation.check{value: FEE}("post");
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode(text, spam ? int256(0) : int256(1))), "callback ok");
        (bool answered, bool flagged,) = _verdict(id);
        assertTrue(answered, "answered");
        assertEq(flagged, spam, "flagged iff the index is that of yes");
    }

    function testRejectsAValueThatIsNotAnIndex() public {
        uint256 id = moderation.check{value: FEE}("post");
        vm.expectEmit(true, true, true, true, address(moderation));
        emit LLMModeration.ModerationRejected(id, node, 2);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("maybe", int256(2))), "callback ok");
        (bool answered,,) = _verdict(id);
        assertFalse(answered, "nothing stored");
    }

    function testFuzzRejectsAValueThatIsNotAnIndex(int256 value) public {
        if (value == 0 || value == 1) value = -1;
        uint256 id = moderation.check{value: FEE}("post");
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("yes", value)), "callback ok");
        (bool answered, bool flagged,) = _verdict(id);
        assertFalse(answered, "nothing stored");
        assertFalse(flagged, "not flagged");
    }

    function testMalformedOutputLeavesThePostUnchecked() public {
        uint256 id = moderation.check{value: FEE}("post");
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"deadbeef"), "decode failed in the callback");
        (bool answered,,) = _verdict(id);
        assertFalse(answered, "not answered");
    }

    function testCanRecordAFailedCheckAndRefundIt() public {
        uint256 id = moderation.check{value: FEE}("post");
        vm.prank(node);
        coordinator.reportFailure(id, "model down");
        vm.expectEmit(true, true, true, true, address(moderation));
        emit LLMModeration.ModerationFailed(id, "model down");
        vm.prank(node2);
        coordinator.reportFailure(id, "model down");
        (bool answered,, bool failed) = _verdict(id);
        assertFalse(answered, "not answered");
        assertTrue(failed, "failed");
        moderation.withdrawRefunds(address(0xCAFE));
        assertEq(address(0xCAFE).balance, FEE, "refund withdrawn by the owner");
    }

    function testFuzzOnlyTheOwnerWithdrawsRefunds(address caller) public {
        if (caller == address(this)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(LLMModeration.NotOwner.selector, caller));
        vm.prank(caller);
        moderation.withdrawRefunds(caller);
    }

    /// @dev The callback's gas: `forge test --match-test testCallbackFitsItsGasLimit -vvvv --isolate` shows the
    /// rawFulfill frame; the gas report (`forge test --gas-report`) lists rawFulfill too.
    function testCallbackFitsItsGasLimit() public {
        uint256 id = moderation.check{value: FEE}("Cheap watches at example.com!!!");
        vm.prank(node);
        assertTrue(
            coordinator.deliver(id, abi.encode("yes", int256(0))), "callback within CALLBACK_GAS_LIMIT"
        );
    }

    /// @dev The callback alone, its storage cold: about 25,000 gas (README, "The LLM model").
    function testFuzzCallbackUsesAtMostHalfItsLimit(bool spam, uint256 id) public {
        CallbackGasProbe probe = new CallbackGasProbe();
        LLMModeration alone = new LLMModeration(address(probe), InferaLLM.MODEL_ID);
        uint256 used =
            probe.fulfill(alone, id, node, abi.encode(spam ? "yes" : "no", spam ? int256(0) : int256(1)));
        (bool answered,,) = alone.verdicts(id);
        assertTrue(answered, "stored");
        assertLe(used, alone.CALLBACK_GAS_LIMIT() / 2, "a 2x margin");
    }
}

contract LLMScoreTest is LLMExampleTest {
    LLMScore internal scorer;

    function setUp() public override {
        super.setUp();
        scorer = new LLMScore(address(coordinator), InferaLLM.MODEL_ID);
    }

    function testRequestsAnIntegerFromOneToTen() public {
        vm.recordLogs();
        scorer.score{value: FEE}("Water boils at 100 C at sea level.");
        bytes memory input = InferaLLM.integer(
            scorer.SYSTEM(),
            "Score the following text from 1 (useless) to 10 (excellent).\n\nText: Water boils at 100 C at sea level.",
            1,
            10
        );
        (bytes32 modelId, bytes memory sent, uint32 callbackGasLimit) = _created();
        assertEq(modelId, InferaLLM.MODEL_ID, "model");
        assertEq(sent, input, "an Integer in [1, 10] about the text");
        assertEq(callbackGasLimit, scorer.CALLBACK_GAS_LIMIT(), "gas limit");
    }

    function testFuzzRequestsAnIntegerFromOneToTen(string memory text) public {
        vm.recordLogs();
        scorer.score{value: FEE}(text);
        (, bytes memory sent,) = _created();
        assertEq(sent, scorer.input(text), "input");
    }

    function testCanStoreAScore() public {
        uint256 id = scorer.score{value: FEE}("text");
        vm.expectEmit(true, true, true, true, address(scorer));
        emit LLMScore.ScoreReceived(id, node, 7);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("7", int256(7))), "callback ok");
        assertEq(scorer.scores(id), 7, "stored");
    }

    function testFuzzCanStoreAScore(uint256 s) public {
        s = bound(s, 1, 10);
        uint256 id = scorer.score{value: FEE}("text");
        vm.prank(node);
        // forge-lint: disable-next-line(unsafe-typecast)
        assertTrue(coordinator.deliver(id, abi.encode(vm.toString(s), int256(s))), "callback ok"); // s in [1, 10]
        assertEq(scorer.scores(id), s, "stored");
    }

    function testRejectsAScoreOutOfRange() public {
        uint256 id = scorer.score{value: FEE}("text");
        vm.expectEmit(true, true, true, true, address(scorer));
        emit LLMScore.ScoreRejected(id, node, 11);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("11", int256(11))), "callback ok");
        assertEq(scorer.scores(id), 0, "nothing stored");
        id = scorer.score{value: FEE}("text");
        vm.prank(node);
        coordinator.deliver(id, abi.encode("0", int256(0)));
        assertEq(scorer.scores(id), 0, "0 is below the range");
    }

    function testFuzzRejectsAScoreOutOfRange(int256 value) public {
        if (value >= 1 && value <= 10) value = value > 5 ? type(int256).max : type(int256).min;
        uint256 id = scorer.score{value: FEE}("text");
        vm.expectEmit(true, true, true, true, address(scorer));
        emit LLMScore.ScoreRejected(id, node, value);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode("", value)), "callback ok");
        assertEq(scorer.scores(id), 0, "nothing stored");
    }

    function testMalformedOutputStoresNothing() public {
        uint256 id = scorer.score{value: FEE}("text");
        vm.prank(node);
        assertFalse(coordinator.deliver(id, hex"deadbeef"), "decode failed in the callback");
        assertEq(scorer.scores(id), 0, "nothing stored");
    }

    function testCanRecordAFailedScoreAndRefundIt() public {
        uint256 id = scorer.score{value: FEE}("text");
        vm.prank(node);
        coordinator.reportFailure(id, "model down");
        vm.expectEmit(true, true, true, true, address(scorer));
        emit LLMScore.ScoreFailed(id, "model down");
        vm.prank(node2);
        coordinator.reportFailure(id, "model down");
        assertTrue(scorer.failed(id), "failed");
        scorer.withdrawRefunds(address(0xCAFE));
        assertEq(address(0xCAFE).balance, FEE, "refund withdrawn by the owner");
    }

    function testFuzzOnlyTheOwnerWithdrawsRefunds(address caller) public {
        if (caller == address(this)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(LLMScore.NotOwner.selector, caller));
        vm.prank(caller);
        scorer.withdrawRefunds(caller);
    }

    /// @dev The callback's gas: `forge test --match-test testCallbackFitsItsGasLimit -vvvv --isolate` shows the
    /// rawFulfill frame; the gas report (`forge test --gas-report`) lists rawFulfill too.
    function testCallbackFitsItsGasLimit() public {
        uint256 id = scorer.score{value: FEE}("text");
        vm.prank(node);
        assertTrue(
            coordinator.deliver(id, abi.encode("10", int256(10))), "callback within CALLBACK_GAS_LIMIT"
        );
    }

    /// @dev The callback alone, its storage cold: about 25,000 gas (README, "The LLM model").
    function testFuzzCallbackUsesAtMostHalfItsLimit(uint256 s, uint256 id) public {
        s = bound(s, 1, 10);
        CallbackGasProbe probe = new CallbackGasProbe();
        LLMScore alone = new LLMScore(address(probe), InferaLLM.MODEL_ID);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 used = probe.fulfill(alone, id, node, abi.encode(vm.toString(s), int256(s))); // s in [1, 10]
        assertEq(alone.scores(id), s, "stored");
        assertLe(used, alone.CALLBACK_GAS_LIMIT() / 2, "a 2x margin");
    }
}
