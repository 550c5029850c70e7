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

    /// @dev A consensus request (3 nodes, quorum 2) from the example, its model digest committed by every node.
    function _askConsensus() internal returns (ConsensusSentiment consumer, uint256 id) {
        consumer = new ConsensusSentiment(address(coordinator), MODEL, DIGEST);
        _commitModel(MODEL, DIGEST);
        id = consumer.askSentiment{value: 0.03 ether}("good");
    }

    /// @dev The three nodes' outputs: each label with the score zeroed, as the classifier's consensus form has it.
    function _labels(string memory a, string memory b, string memory c)
        internal
        pure
        returns (bytes[] memory outputs)
    {
        outputs = new bytes[](3);
        outputs[0] = abi.encode(a, uint256(0));
        outputs[1] = abi.encode(b, uint256(0));
        outputs[2] = abi.encode(c, uint256(0));
    }

    /// @dev Each deployed contract names itself: the node refuses a `coordinator_address` that does not.
    function testContractsNameTheirTypeAndVersion() public view {
        assertEq(coordinator.typeAndVersion(), "InferaCoordinator 0.1.0");
        assertEq(registry.typeAndVersion(), "InferaNodeRegistry 0.1.0");
        assertTrue(registry.isRegistered(nodes[0]));
        assertFalse(registry.isRegistered(address(0xdead)));
    }

    function testDeliverPaysTheNodeAndRunsTheCallback() public {
        SentimentConsumer consumer = new SentimentConsumer(address(coordinator), MODEL);
        uint256 id = consumer.askSentiment{value: 0.01 ether}("good");
        assertTrue(_deliver(id, abi.encode("positive", uint256(990_000))));
        assertEq(coordinator.balanceOf(address(0), nodes[0]), 0.01 ether);
        assertEq(uint256(_request(id).status), uint256(ICoordinator.Status.Fulfilled));
    }

    function testDeliverConsensusSettlesOnTheAgreedOutput() public {
        (ConsensusSentiment consumer, uint256 id) = _askConsensus();
        assertTrue(_deliverConsensus(id, _labels("positive", "negative", "positive")), "two of three agree");
        assertEq(consumer.labels(id), "positive");
        assertEq(coordinator.balanceOf(address(0), nodes[0]), 0.01 ether, "agreeing node paid");
        assertEq(coordinator.balanceOf(address(0), nodes[1]), 0, "dissenting node unpaid");
    }

    function testDeliverConsensusWithoutQuorumLeavesTheRequestOpen() public {
        (ConsensusSentiment consumer, uint256 id) = _askConsensus();
        assertFalse(_deliverConsensus(id, _labels("positive", "negative", "neutral")), "no two agree");
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
