// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {PromptConsumer} from "../src/examples/PromptConsumer.sol";
import {DelegatedSentiment} from "../src/examples/DelegatedSentiment.sol";

contract PromptConsumerTest is CoordinatorTest {
    PromptConsumer internal prompter;

    function setUp() public override {
        super.setUp();
        prompter = new PromptConsumer(address(coordinator), keccak256("generate/tiny@1"));
    }

    function testFuzzCanAskAndStoreTheReply(string memory reply) public {
        if (bytes(reply).length > 256) reply = "a long reply";
        uint256 id = prompter.ask{value: FEE}("Write a haiku about oracles", 48);
        vm.prank(node);
        assertTrue(coordinator.deliver(id, abi.encode(reply)), "callback ok");
        assertEq(prompter.replies(id), reply, "stored");
    }

    function testFuzzCannotAskForTooManyTokens(uint32 tokens) public {
        if (tokens != 0) tokens = uint32(bound(tokens, 65, type(uint32).max));
        vm.expectRevert(abi.encodeWithSelector(PromptConsumer.TooManyTokens.selector, tokens, 64));
        prompter.ask{value: FEE}("hi", tokens);
    }
}

contract DelegatedSentimentTest is CoordinatorTest {
    uint256 internal constant SIGNER_KEY = 0x5EC2E7;
    DelegatedSentiment internal dapp;

    function setUp() public override {
        super.setUp();
        dapp = new DelegatedSentiment(address(coordinator), vm.addr(SIGNER_KEY));
        dapp.fund{value: 1 ether}();
    }

    /// @dev External so the memory struct reaches the coordinator's calldata-taking view.
    function digestOf(ICoordinator.DelegatedRequest calldata req) external view returns (bytes32) {
        return coordinator.delegatedRequestDigest(req);
    }

    function _signed(uint256 nonce, uint256 key)
        internal
        view
        returns (ICoordinator.DelegatedRequest memory req, bytes memory sig)
    {
        req = ICoordinator.DelegatedRequest({
            consumer: address(dapp),
            modelId: MODEL,
            inputHash: keccak256(abi.encode("I love it")),
            callbackGasLimit: GAS_LIMIT,
            redundancy: 1,
            token: address(0),
            feePerNode: FEE,
            nonce: nonce,
            expiry: uint64(block.timestamp + 1 hours),
            deadline: uint64(block.timestamp + 2 hours)
        });
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, this.digestOf(req));
        sig = abi.encodePacked(r, s, v);
    }

    function testFuzzSignedRequestIsAnsweredWithoutADappTransaction(uint256 nonce) public {
        (ICoordinator.DelegatedRequest memory req, bytes memory sig) = _signed(nonce, SIGNER_KEY);
        vm.prank(node);
        uint256 id =
            coordinator.deliverDelegated(req, abi.encode("I love it"), sig, abi.encode("positive", 1));
        assertEq(dapp.labels(id), "positive", "stored");
        assertEq(coordinator.balanceOf(address(0), address(dapp)), 1 ether - FEE, "paid from the deposit");
    }

    function testOwnerRotatesTheSignerAndWithdraws() public {
        (ICoordinator.DelegatedRequest memory req, bytes memory oldSig) = _signed(1, SIGNER_KEY);
        dapp.setSigner(vm.addr(0xBEEF));
        vm.expectRevert(ICoordinator.InvalidSignature.selector);
        vm.prank(node);
        coordinator.deliverDelegated(req, abi.encode("I love it"), oldSig, abi.encode("positive", 1));
        dapp.withdrawFunds(address(0xCAFE));
        assertEq(address(0xCAFE).balance, 1 ether, "deposit back");
    }

    function testFuzzOnlyTheOwnerManagesTheDapp(address caller) public {
        if (caller == address(this)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(DelegatedSentiment.NotOwner.selector, caller));
        vm.prank(caller);
        dapp.setSigner(caller);
    }
}
