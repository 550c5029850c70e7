// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {InferaTest} from "@infera/contracts/testing/InferaTest.sol";
import {MyDapp} from "../src/MyDapp.sol";

contract MyDappTest is InferaTest {
    MyDapp internal dapp;

    function setUp() public override {
        super.setUp();
        dapp = new MyDapp(address(coordinator));
        vm.deal(address(this), 1 ether);
    }

    function testThreeNodesAnswerAndEachIsPaid() public {
        uint256 id = dapp.askThree{value: 3 * 0.001 ether}("I love it");
        for (uint256 i = 0; i < 3; i++) {
            assertTrue(_deliverFrom(i, id, abi.encode("positive", uint256(998_000))), "callback within its limit");
            assertEq(coordinator.balanceOf(address(0), nodes[i]), 0.001 ether, "node paid");
        }
        assertEq(dapp.labels(id), "positive", "label stored");
    }

    function testShortFormFailsOnceAndRefunds() public {
        uint256 id = dapp.ask{value: 0.002 ether}("I love it");
        _failRequest(id, "container down");
        assertTrue(dapp.failed(id), "error callback ran");
        assertEq(dapp.withdrawRefunds(address(0xCAFE)), 0.002 ether, "fee refunded");
    }
}
