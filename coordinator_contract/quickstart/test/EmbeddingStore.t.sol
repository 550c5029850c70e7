// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {InferaTest} from "@infera/contracts/testing/InferaTest.sol";
import {InferenceConsumer} from "@infera/contracts/src/consumer/InferenceConsumer.sol";
import {EmbeddingStore} from "../src/EmbeddingStore.sol";

contract EmbeddingStoreTest is InferaTest {
    uint256 internal constant FEE = 0.001 ether;
    EmbeddingStore internal store;

    function setUp() public override {
        super.setUp(); // the real NodeRegistry and Coordinator, three staked nodes
        store = new EmbeddingStore(address(coordinator), keccak256("embed/minilm-l6@1"));
        vm.deal(address(this), 1 ether);
    }

    /// An answer shaped like the embed model's: 384 int8s (every byte non-zero, the costliest to store) and a scale.
    function _answer() internal pure returns (bytes memory) {
        bytes memory int8s = new bytes(384);
        for (uint256 i = 0; i < int8s.length; i++) {
            int8s[i] = bytes1(uint8(i % 2 == 0 ? 0x81 : 0x7f)); // -127 and 127
        }
        return abi.encode(int8s, uint256(7_874_015_748));
    }

    function testStoresTheDeliveredEmbedding() public {
        uint256 id = store.embed{value: FEE}("The cat sat on the mat");
        assertTrue(_deliver(id, _answer()), "the callback must finish within its gas limit");
        (bytes memory int8s, uint256 scaleE12) = store.embeddingOf(id);
        assertEq(int8s.length, 384, "dimensions");
        assertEq(scaleE12, 7_874_015_748, "scale");
        assertEq(uint256(-store.valueE12(id, 0)), 127 * 7_874_015_748, "dimension 0 is -127 * scale");
        assertEq(coordinator.balanceOf(address(0), nodes[0]), FEE, "the node is paid the fee");
    }

    function testCallbackFitsItsGasLimit() public {
        uint256 id = store.embed{value: FEE}("The cat sat on the mat");
        (uint256 used, bool ok) = _callbackGas(address(store), id, _answer());
        emit log_named_uint("EmbeddingStore callback gas", used);
        assertTrue(ok, "the callback reverted");
        // A margin of 10% for what differs on-chain (cold storage the request touched, a longer output).
        assertLe(used * 110 / 100, store.CALLBACK_GAS_LIMIT(), "callback gas + 10% within CALLBACK_GAS_LIMIT");
    }

    function testRefundsAFailedRequest() public {
        uint256 id = store.embed{value: FEE}("");
        _failRequest(id, "input refused: the text is empty");
        assertEq(store.failures(id), "input refused: the text is empty", "the reason reaches the consumer");
        address treasury = address(0xCAFE);
        assertEq(store.withdrawRefunds(treasury), FEE, "the whole fee comes back");
        assertEq(treasury.balance, FEE, "refund sent");
    }

    function testExpiredRequestFailsWithTheDeadlineReason() public {
        uint256 id = store.embed{value: FEE}("nobody serves this");
        _expire(id);
        assertTrue(bytes(store.failures(id)).length > 0, "an error callback ran");
        assertEq(coordinator.balanceOf(address(0), address(store)), FEE, "refund credited");
    }

    function testOnlyTheCoordinatorCanAnswer() public {
        uint256 id = store.embed{value: FEE}("The cat sat on the mat");
        vm.expectRevert(abi.encodeWithSelector(InferenceConsumer.OnlyCoordinator.selector, address(this)));
        store.rawFulfill(id, address(this), _answer());
    }

    function testOnlyTheOwnerWithdraws() public {
        vm.prank(address(0xBAD));
        vm.expectRevert(abi.encodeWithSelector(EmbeddingStore.NotOwner.selector, address(0xBAD)));
        store.withdrawRefunds(address(0xBAD));
    }
}
