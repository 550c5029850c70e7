// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferaTest} from "../testing/InferaTest.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {ConsensusSentiment} from "../src/examples/ConsensusSentiment.sol";
import {SentimentConsumer} from "../src/examples/SentimentConsumer.sol";

/// @notice The test kit the package ships (`testing/InferaTest.sol`), on the examples: each helper does what its
/// NatSpec says against the real Coordinator.
contract InferaTestKitTest is InferaTest {
    bytes32 internal constant MODEL = keccak256("classify/minilm-sentiment@1");
    bytes32 internal constant DIGEST = keccak256("weights");

    function testDeliverPaysTheNodeAndRunsTheCallback() public {
        SentimentConsumer consumer = new SentimentConsumer(address(coordinator), MODEL);
        uint256 id = consumer.askSentiment{value: 0.01 ether}("good");
        assertTrue(_deliver(id, abi.encode("positive", uint256(990_000))));
        assertEq(coordinator.balanceOf(address(0), nodes[0]), 0.01 ether);
        assertEq(uint256(_request(id).status), uint256(ICoordinator.Status.Fulfilled));
    }

    function testDeliverConsensusSettlesOnTheAgreedOutput() public {
        ConsensusSentiment consumer = new ConsensusSentiment(address(coordinator), MODEL, DIGEST);
        _commitModel(MODEL, DIGEST);
        uint256 id = consumer.askSentiment{value: 0.03 ether}("good");
        bytes[] memory outputs = new bytes[](3);
        outputs[0] = abi.encode("positive", uint256(0));
        outputs[1] = abi.encode("negative", uint256(0));
        outputs[2] = abi.encode("positive", uint256(0));
        assertTrue(_deliverConsensus(id, outputs), "two of three agree");
        assertEq(consumer.labels(id), "positive");
        assertEq(coordinator.balanceOf(address(0), nodes[0]), 0.01 ether, "agreeing node paid");
        assertEq(coordinator.balanceOf(address(0), nodes[1]), 0, "dissenting node unpaid");
    }

    function testDeliverConsensusWithoutQuorumLeavesTheRequestOpen() public {
        ConsensusSentiment consumer = new ConsensusSentiment(address(coordinator), MODEL, DIGEST);
        _commitModel(MODEL, DIGEST);
        uint256 id = consumer.askSentiment{value: 0.03 ether}("good");
        bytes[] memory outputs = new bytes[](3);
        outputs[0] = abi.encode("positive", uint256(0));
        outputs[1] = abi.encode("negative", uint256(0));
        outputs[2] = abi.encode("neutral", uint256(0));
        assertFalse(_deliverConsensus(id, outputs), "no two agree");
        assertEq(consumer.labels(id), "");
    }

    function testRefundsOnFailureAndOnExpiry() public {
        SentimentConsumer consumer = new SentimentConsumer(address(coordinator), MODEL);
        uint256 failed = consumer.askSentiment{value: 0.01 ether}("x");
        _failRequest(failed, "container rejected the input");
        assertEq(uint256(_request(failed).status), uint256(ICoordinator.Status.Failed));
        uint256 expired = consumer.askSentiment{value: 0.01 ether}("y");
        _expire(expired);
        assertEq(coordinator.balanceOf(address(0), address(consumer)), 0.02 ether, "both fees refunded");
    }

    function testCallbackGasMeasuresTheCallbackFrame() public {
        SentimentConsumer consumer = new SentimentConsumer(address(coordinator), MODEL);
        uint256 id = consumer.askSentiment{value: 0.01 ether}("good");
        (uint256 used, bool ok) =
            _callbackGas(address(consumer), id, abi.encode("positive", uint256(990_000)));
        assertTrue(ok);
        // Two new slots at least (label, score): more than 2 * 20,000; far below the example's 200,000 limit.
        assertGe(used, 40_000);
        assertLe(used, 200_000);
    }
}
