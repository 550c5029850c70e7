// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConsensusTest} from "./utils/ConsensusBase.sol";
import {ConsensusSentiment} from "../src/examples/ConsensusSentiment.sol";

contract ConsensusSentimentTest is ConsensusTest {
    ConsensusSentiment internal dapp;

    function setUp() public override {
        super.setUp();
        dapp = new ConsensusSentiment(address(coordinator), MODEL, bytes32(0));
    }

    function testFuzzTwoAgreeingNodesSetTheLabel(uint256 scoreE6) public {
        uint256 id = dapp.askSentiment{value: 3 * FEE}("I love it");
        bytes memory answer = abi.encode("positive", scoreE6);
        _commit(id, node, answer);
        _commit(id, node2, abi.encode("negative", scoreE6));
        _commit(id, node3, answer);
        _reveal(id, node, answer);
        _reveal(id, node2, abi.encode("negative", scoreE6));
        assertEq(dapp.labels(id), "", "no agreement yet");
        _reveal(id, node3, answer);
        assertEq(dapp.labels(id), "positive", "the agreed label");
        uint256 before = address(0xD00D).balance;
        dapp.withdrawRefunds(address(0xD00D));
        assertEq(address(0xD00D).balance - before, FEE, "the unused slot came back");
        vm.expectRevert(abi.encodeWithSelector(ConsensusSentiment.NotOwner.selector, stranger));
        vm.prank(stranger);
        dapp.withdrawRefunds(stranger);
    }
}
