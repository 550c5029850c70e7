// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {
    NodeRegistryTest,
    RejectingReceiver,
    ReentrantWithdrawer,
    ReentrantClaimer,
    VmExtra
} from "./utils/RegistryBase.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";

contract NodeRegistryUnbondingTest is NodeRegistryTest {
    function testCanBeginUnbonding() public {
        _register(node, 2 ether);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.UnbondingStarted(node, _now() + DELAY);
        vm.prank(node);
        registry.beginUnbonding();
        assertEq(registry.unlockAt(node), block.timestamp + DELAY, "unlock time");
        assertFalse(registry.isActive(node), "inactive at once");
        assertEq(registry.stakeOf(node), 2 ether, "stake still held");
        assertEq(registry.totalStaked(), 2 ether, "still counted");
    }

    function testFuzzCanBeginUnbonding(uint256 delay, uint256 start) public {
        uint64 d = _delay(delay, 1, MAX_DELAY);
        vm.prank(owner);
        registry.setParameters(MIN_STAKE, d);
        vm.warp(bound(start, 1, type(uint32).max));
        _register(node, MIN_STAKE);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.UnbondingStarted(node, _now() + d);
        vm.prank(node);
        registry.beginUnbonding();
        assertEq(registry.unlockAt(node), block.timestamp + d, "unlock time");
        assertFalse(registry.isActive(node), "inactive");
    }

    function testCannotBeginUnbondingUnregistered() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, stranger));
        vm.prank(stranger);
        registry.beginUnbonding();
    }

    function testFuzzCannotBeginUnbondingUnregistered(address who) public {
        who = _outsider(who);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, who));
        vm.prank(who);
        registry.beginUnbonding();
    }

    function testCannotBeginUnbondingTwice() public {
        _register(node, MIN_STAKE);
        _unbond(node);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.IsUnbonding.selector, node));
        vm.prank(node);
        registry.beginUnbonding();
    }

    function testFuzzCannotBeginUnbondingTwice(uint256 elapsed) public {
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.warp(block.timestamp + bound(elapsed, 0, 10 * uint256(DELAY)));
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.IsUnbonding.selector, node));
        vm.prank(node);
        registry.beginUnbonding();
        assertEq(registry.unlockAt(node), unlock, "unlock time not pushed back");
    }

    function testCannotWithdrawOneSecondBeforeUnlock() public {
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.warp(unlock - 1);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.UnbondingNotOver.selector, node, unlock));
        vm.prank(node);
        registry.withdrawStake(node);
    }

    function testFuzzCannotWithdrawBeforeUnlock(uint256 elapsed) public {
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.warp(block.timestamp + bound(elapsed, 0, DELAY - 1));
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.UnbondingNotOver.selector, node, unlock));
        vm.prank(node);
        registry.withdrawStake(node);
        assertEq(registry.stakeOf(node), MIN_STAKE, "still staked");
    }

    function testCanWithdrawAtUnlock() public {
        _register(node, 2 ether);
        vm.warp(_unbond(node));
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.StakeWithdrawn(node, recipient, 2 ether);
        vm.prank(node);
        assertEq(registry.withdrawStake(recipient), 2 ether, "amount");

        assertEq(recipient.balance, 2 ether, "received");
        assertEq(registry.stakeOf(node), 0, "stake cleared");
        assertEq(registry.unlockAt(node), 0, "record deleted");
        assertFalse(registry.isActive(node), "inactive");
        assertEq(registry.totalStaked(), 0, "total staked");
        assertEq(address(registry).balance, 0, "nothing left");
    }

    function testFuzzCanWithdrawAfterUnlock(uint256 amount, uint256 elapsed) public {
        amount = bound(amount, MIN_STAKE, MAX_STAKE);
        _register(node, amount);
        uint64 unlock = _unbond(node);
        vm.warp(bound(elapsed, unlock, uint256(unlock) + 10 * uint256(DELAY)));
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.StakeWithdrawn(node, recipient, amount);
        vm.prank(node);
        registry.withdrawStake(recipient);
        assertEq(recipient.balance, amount, "received");
        assertEq(registry.totalStaked(), 0, "total staked");
        assertEq(registry.unlockAt(node), 0, "record deleted");
    }

    function testCannotWithdrawWithoutUnbonding() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotUnbonding.selector, node));
        vm.prank(node);
        registry.withdrawStake(node);
    }

    function testFuzzCannotWithdrawWithoutUnbonding(address who, uint256 elapsed) public {
        who = _outsider(who);
        _register(node, MIN_STAKE);
        vm.warp(block.timestamp + bound(elapsed, 0, 10 * uint256(DELAY)));
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotUnbonding.selector, who));
        vm.prank(who);
        registry.withdrawStake(who);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotUnbonding.selector, node));
        vm.prank(node);
        registry.withdrawStake(node);
    }

    function testCannotWithdrawTwice() public {
        _register(node, MIN_STAKE);
        vm.warp(_unbond(node));
        vm.prank(node);
        registry.withdrawStake(recipient);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotUnbonding.selector, node));
        vm.prank(node);
        registry.withdrawStake(recipient);
    }

    function testFuzzCannotWithdrawTwice(uint256 amount, uint256 other) public {
        amount = bound(amount, MIN_STAKE, MAX_STAKE);
        other = bound(other, MIN_STAKE, MAX_STAKE);
        _register(stranger, other);
        _register(node, amount);
        vm.warp(_unbond(node));
        vm.prank(node);
        registry.withdrawStake(recipient);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotUnbonding.selector, node));
        vm.prank(node);
        registry.withdrawStake(recipient);
        assertEq(recipient.balance, amount, "paid once");
        assertEq(address(registry).balance, other, "the other stake is untouched");
    }

    function testCannotWithdrawToRejectingRecipient() public {
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.warp(unlock);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.TransferFailed.selector, address(rejecting), MIN_STAKE)
        );
        vm.prank(node);
        registry.withdrawStake(address(rejecting));

        assertEq(registry.stakeOf(node), MIN_STAKE, "stake restored");
        assertEq(registry.unlockAt(node), unlock, "record restored");
        assertEq(registry.totalStaked(), MIN_STAKE, "total restored");
        vm.prank(node);
        registry.withdrawStake(recipient);
        assertEq(recipient.balance, MIN_STAKE, "withdrawn elsewhere");
    }

    function testFuzzCannotWithdrawToRejectingRecipient(uint256 amount) public {
        amount = bound(amount, MIN_STAKE, MAX_STAKE);
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, amount);
        vm.warp(_unbond(node));
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.TransferFailed.selector, address(rejecting), amount)
        );
        vm.prank(node);
        registry.withdrawStake(address(rejecting));
        assertEq(registry.stakeOf(node), amount, "stake restored");
        assertEq(registry.totalStaked(), amount, "total restored");
    }

    function testReentrantWithdrawerCannotWithdrawTwice() public {
        _register(stranger, 5 ether);
        ReentrantWithdrawer attacker = new ReentrantWithdrawer(registry);
        vm.deal(address(this), 2 ether);
        attacker.register{value: 2 ether}();
        attacker.beginUnbonding();
        vm.warp(registry.unlockAt(address(attacker)));

        assertEq(attacker.withdraw(), 2 ether, "amount");
        assertTrue(attacker.reentered(), "re-entry attempted");
        assertFalse(attacker.reentrySucceeded(), "re-entry failed");
        assertEq(
            attacker.reentryError(),
            abi.encodeWithSelector(INodeRegistry.NotUnbonding.selector, address(attacker)),
            "re-entry reason"
        );
        assertEq(address(attacker).balance, 2 ether, "paid once");
        assertEq(address(registry).balance, 5 ether, "other stake untouched");
        assertEq(registry.totalStaked(), 5 ether, "total staked");
    }

    function testFuzzReentrantWithdrawerCannotWithdrawTwice(uint256 amount, uint256 other) public {
        amount = bound(amount, MIN_STAKE, MAX_STAKE);
        other = bound(other, MIN_STAKE, MAX_STAKE);
        _register(stranger, other);
        ReentrantWithdrawer attacker = new ReentrantWithdrawer(registry);
        vm.deal(address(this), amount);
        attacker.register{value: amount}();
        attacker.beginUnbonding();
        vm.warp(registry.unlockAt(address(attacker)));
        attacker.withdraw();
        assertFalse(attacker.reentrySucceeded(), "re-entry failed");
        assertEq(address(attacker).balance, amount, "paid once");
        assertEq(address(registry).balance, other, "other stake untouched");
    }

    function testStartedUnbondingKeepsItsDelay() public {
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.prank(owner);
        registry.setParameters(MIN_STAKE, MAX_DELAY);
        assertEq(registry.unlockAt(node), unlock, "unchanged");
        vm.warp(unlock);
        vm.prank(node);
        registry.withdrawStake(recipient);
        assertEq(recipient.balance, MIN_STAKE, "withdrawn at the original unlock time");
    }

    function testFuzzStartedUnbondingKeepsItsDelay(uint256 newDelay) public {
        uint64 d = _delay(newDelay, 1, MAX_DELAY);
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.prank(owner);
        registry.setParameters(MIN_STAKE, d);
        assertEq(registry.unlockAt(node), unlock, "unchanged");
        vm.warp(unlock - 1);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.UnbondingNotOver.selector, node, unlock));
        vm.prank(node);
        registry.withdrawStake(recipient);
        vm.warp(unlock);
        vm.prank(node);
        registry.withdrawStake(recipient);
    }

    function testCanWithdrawFullySlashedNode() public {
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, MIN_STAKE);
        vm.warp(_unbond(node));
        _slash(node, MIN_STAKE, recipient);
        // Nothing is left to send, so even a recipient that rejects ETH does not stop the node from leaving.
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.StakeWithdrawn(node, address(rejecting), 0);
        vm.prank(node);
        assertEq(registry.withdrawStake(address(rejecting)), 0, "nothing to send");
        assertEq(registry.unlockAt(node), 0, "record deleted");
        _register(node, MIN_STAKE);
        assertTrue(registry.isActive(node), "can register again");
    }

    function testFuzzCanWithdrawSlashedNode(uint256 amount, uint256 slashed) public {
        amount = bound(amount, MIN_STAKE, MAX_STAKE);
        slashed = bound(slashed, 1, amount);
        _register(node, amount);
        vm.warp(_unbond(node));
        _slash(node, slashed, recipient);
        vm.prank(node);
        assertEq(registry.withdrawStake(stranger), amount - slashed, "remainder");
        assertEq(stranger.balance, amount - slashed, "remainder received");
        assertEq(address(registry).balance, slashed, "slashed ETH stays for its recipient");
    }
}
