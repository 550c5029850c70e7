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

contract NodeRegistrySlashTest is NodeRegistryTest {
    function testCanSlash() public {
        _register(node, 3 ether);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.NodeSlashed(node, verifier, recipient, 1 ether);
        vm.prank(verifier);
        registry.slash(node, 1 ether, recipient);

        assertEq(registry.stakeOf(node), 2 ether, "stake");
        assertEq(registry.totalStaked(), 2 ether, "total staked");
        assertEq(registry.slashedBalanceOf(recipient), 1 ether, "credited");
        assertEq(recipient.balance, 0, "not pushed");
        assertEq(address(registry).balance, 3 ether, "still held");
        assertTrue(registry.isActive(node), "still above min stake");
    }

    function testFuzzCanSlash(uint256 stake, uint256 amount) public {
        stake = bound(stake, MIN_STAKE, MAX_STAKE);
        amount = bound(amount, 1, stake);
        _register(node, stake);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.NodeSlashed(node, verifier, recipient, amount);
        _slash(node, amount, recipient);
        assertEq(registry.stakeOf(node), stake - amount, "stake");
        assertEq(registry.totalStaked(), stake - amount, "total staked");
        assertEq(registry.slashedBalanceOf(recipient), amount, "credited");
        assertEq(registry.isActive(node), stake - amount >= MIN_STAKE, "active iff still at the minimum");
    }

    function testCanSlashWhileUnbonding() public {
        _register(node, 3 ether);
        uint64 unlock = _unbond(node);
        vm.warp(unlock);
        _slash(node, 1 ether, recipient);
        assertEq(registry.stakeOf(node), 2 ether, "slashed during unbonding");
        assertEq(registry.unlockAt(node), unlock, "still unbonding");
        vm.prank(node);
        assertEq(registry.withdrawStake(node), 2 ether, "withdraws the remainder");
    }

    function testFuzzCanSlashWhileUnbonding(uint256 amount, uint256 elapsed) public {
        amount = bound(amount, 1, 3 ether);
        _register(node, 3 ether);
        _unbond(node);
        vm.warp(block.timestamp + bound(elapsed, 0, 10 * uint256(DELAY)));
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.NodeSlashed(node, verifier, recipient, amount);
        _slash(node, amount, recipient);
        assertEq(registry.stakeOf(node), 3 ether - amount, "slashed during unbonding");
        assertEq(registry.slashedBalanceOf(recipient), amount, "credited");
    }

    function testSlashBelowMinStakeMakesNodeInactive() public {
        _register(node, MIN_STAKE);
        assertTrue(registry.isActive(node), "active");
        _slash(node, 1, recipient);
        assertFalse(registry.isActive(node), "inactive");
        assertEq(registry.stakeOf(node), MIN_STAKE - 1, "stake");
    }

    function testFuzzSlashBelowMinStakeMakesNodeInactive(uint256 stake, uint256 remaining) public {
        stake = bound(stake, MIN_STAKE, MAX_STAKE);
        remaining = bound(remaining, 0, MIN_STAKE - 1);
        _register(node, stake);
        _slash(node, stake - remaining, recipient);
        assertFalse(registry.isActive(node), "inactive");
        assertEq(registry.stakeOf(node), remaining, "stake");
    }

    function testCannotSlashAsStranger() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.VerifierNotApproved.selector, stranger));
        vm.prank(stranger);
        registry.slash(node, 1, stranger);
    }

    function testFuzzCannotSlashAsStranger(address caller, uint256 amount) public {
        if (caller == verifier) caller = stranger;
        amount = bound(amount, 1, MIN_STAKE);
        _register(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.VerifierNotApproved.selector, caller));
        vm.prank(caller);
        registry.slash(node, amount, recipient);
        assertEq(registry.stakeOf(node), MIN_STAKE, "untouched");
    }

    function testCannotSlashAsRevokedVerifier() public {
        _register(node, MIN_STAKE);
        vm.prank(owner);
        registry.setVerifier(verifier, false);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.VerifierNotApproved.selector, verifier));
        vm.prank(verifier);
        registry.slash(node, 1, recipient);
    }

    function testFuzzCannotSlashAsRevokedVerifier(address other, uint256 amount) public {
        other = _outsider(other);
        amount = bound(amount, 1, MIN_STAKE);
        _register(node, MIN_STAKE);
        vm.startPrank(owner);
        registry.setVerifier(other, true);
        registry.setVerifier(other, false);
        vm.stopPrank();
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.VerifierNotApproved.selector, other));
        vm.prank(other);
        registry.slash(node, amount, recipient);
        _slash(node, amount, recipient);
        assertEq(registry.stakeOf(node), MIN_STAKE - amount, "the approved verifier still can");
    }

    function testCannotSlashUnregisteredNode() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, stranger));
        vm.prank(verifier);
        registry.slash(stranger, 1, recipient);
    }

    function testFuzzCannotSlashUnregisteredNode(address who, uint256 amount) public {
        who = _outsider(who);
        amount = bound(amount, 1, MAX_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, who));
        vm.prank(verifier);
        registry.slash(who, amount, recipient);
    }

    function testCannotSlashWithdrawnNode() public {
        _register(node, MIN_STAKE);
        vm.warp(_unbond(node));
        vm.prank(node);
        registry.withdrawStake(node);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, node));
        vm.prank(verifier);
        registry.slash(node, 1, recipient);
    }

    function testFuzzCannotSlashWithdrawnNode(uint256 amount) public {
        amount = bound(amount, 1, MIN_STAKE);
        _register(node, MIN_STAKE);
        vm.warp(_unbond(node));
        vm.prank(node);
        registry.withdrawStake(node);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, node));
        vm.prank(verifier);
        registry.slash(node, amount, recipient);
    }

    function testCannotSlashMoreThanStake() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.SlashExceedsStake.selector, MIN_STAKE + 1, MIN_STAKE)
        );
        vm.prank(verifier);
        registry.slash(node, MIN_STAKE + 1, recipient);
    }

    function testFuzzCannotSlashMoreThanStake(uint256 stake, uint256 amount) public {
        stake = bound(stake, MIN_STAKE, MAX_STAKE);
        amount = bound(amount, stake + 1, type(uint256).max);
        _register(node, stake);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.SlashExceedsStake.selector, amount, stake));
        vm.prank(verifier);
        registry.slash(node, amount, recipient);
    }

    function testCannotSlashZero() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(verifier);
        registry.slash(node, 0, recipient);
    }

    function testFuzzCannotSlashZero(uint256 stake) public {
        stake = bound(stake, MIN_STAKE, MAX_STAKE);
        _register(node, stake);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(verifier);
        registry.slash(node, 0, recipient);
        assertEq(registry.stakeOf(node), stake, "untouched");
    }

    function testCannotSlashToZeroRecipient() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(verifier);
        registry.slash(node, 1, address(0));
    }

    function testFuzzCannotSlashToZeroRecipient(uint256 amount) public {
        amount = bound(amount, 1, MIN_STAKE);
        _register(node, MIN_STAKE);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(verifier);
        registry.slash(node, amount, address(0));
    }

    function testRejectingRecipientIsCreditedAndClaimsElsewhere() public {
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, 2 ether);
        _slash(node, 1 ether, address(rejecting));
        assertEq(registry.slashedBalanceOf(address(rejecting)), 1 ether, "credited");

        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.SlashedClaimed(address(rejecting), recipient, 1 ether);
        assertEq(rejecting.claim(registry, recipient), 1 ether, "claimed");
        assertEq(recipient.balance, 1 ether, "received elsewhere");
        assertEq(registry.slashedBalanceOf(address(rejecting)), 0, "cleared");
    }

    function testFuzzRejectingRecipientIsCreditedAndClaimsElsewhere(uint256 amount) public {
        amount = bound(amount, 1, MAX_STAKE);
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, MAX_STAKE);
        _slash(node, amount, address(rejecting));
        rejecting.claim(registry, recipient);
        assertEq(recipient.balance, amount, "received elsewhere");
        assertEq(address(registry).balance, MAX_STAKE - amount, "only the stake left");
    }

    function testCanClaimSlashed() public {
        _register(node, 2 ether);
        _register(stranger, 3 ether);
        _slash(node, 1 ether, recipient);
        _slash(stranger, 2 ether, recipient);
        assertEq(registry.slashedBalanceOf(recipient), 3 ether, "credits add up");

        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.SlashedClaimed(recipient, owner, 3 ether);
        vm.prank(recipient);
        assertEq(registry.claimSlashed(owner), 3 ether, "amount");
        assertEq(owner.balance, 3 ether, "received");
        assertEq(registry.slashedBalanceOf(recipient), 0, "cleared");
        assertEq(address(registry).balance, registry.totalStaked(), "only stakes left");
    }

    function testFuzzCanClaimSlashed(uint256 a, uint256 b) public {
        a = bound(a, 1, MAX_STAKE);
        b = bound(b, 1, MAX_STAKE);
        _register(node, MAX_STAKE);
        _register(stranger, MAX_STAKE);
        _slash(node, a, recipient);
        _slash(stranger, b, recipient);
        vm.prank(recipient);
        assertEq(registry.claimSlashed(recipient), a + b, "amount");
        assertEq(recipient.balance, a + b, "received");
        assertEq(address(registry).balance, 2 * MAX_STAKE - a - b, "only stakes left");
    }

    function testCannotClaimNothing() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NothingToClaim.selector, recipient));
        vm.prank(recipient);
        registry.claimSlashed(recipient);
    }

    function testFuzzCannotClaimNothing(address who) public {
        who = _outsider(who);
        _register(node, MIN_STAKE);
        _slash(node, 1, recipient);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NothingToClaim.selector, who));
        vm.prank(who);
        registry.claimSlashed(who);
    }

    function testCannotClaimTwice() public {
        _register(node, MIN_STAKE);
        _slash(node, 1 ether, recipient);
        vm.prank(recipient);
        registry.claimSlashed(recipient);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NothingToClaim.selector, recipient));
        vm.prank(recipient);
        registry.claimSlashed(recipient);
    }

    function testFuzzCannotClaimTwice(uint256 amount) public {
        amount = bound(amount, 1, MAX_STAKE);
        _register(node, MAX_STAKE);
        _slash(node, amount, recipient);
        vm.prank(recipient);
        registry.claimSlashed(recipient);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NothingToClaim.selector, recipient));
        vm.prank(recipient);
        registry.claimSlashed(recipient);
        assertEq(recipient.balance, amount, "paid once");
    }

    function testCannotClaimToRejectingRecipient() public {
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, MIN_STAKE);
        _slash(node, 1 ether, recipient);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.TransferFailed.selector, address(rejecting), 1 ether)
        );
        vm.prank(recipient);
        registry.claimSlashed(address(rejecting));
        assertEq(registry.slashedBalanceOf(recipient), 1 ether, "kept on failure");
    }

    function testFuzzCannotClaimToRejectingRecipient(uint256 amount) public {
        amount = bound(amount, 1, MAX_STAKE);
        RejectingReceiver rejecting = new RejectingReceiver();
        _register(node, MAX_STAKE);
        _slash(node, amount, recipient);
        vm.expectRevert(
            abi.encodeWithSelector(INodeRegistry.TransferFailed.selector, address(rejecting), amount)
        );
        vm.prank(recipient);
        registry.claimSlashed(address(rejecting));
        assertEq(registry.slashedBalanceOf(recipient), amount, "kept on failure");
    }

    function testReentrantClaimerCannotClaimTwice() public {
        ReentrantClaimer claimer = new ReentrantClaimer(registry);
        _register(node, 3 ether);
        _slash(node, 1 ether, address(claimer));

        assertEq(claimer.claim(), 1 ether, "amount");
        assertTrue(claimer.reentered(), "re-entry attempted");
        assertFalse(claimer.reentrySucceeded(), "re-entry failed");
        assertEq(
            claimer.reentryError(),
            abi.encodeWithSelector(INodeRegistry.NothingToClaim.selector, address(claimer)),
            "re-entry reason"
        );
        assertEq(address(claimer).balance, 1 ether, "paid once");
        assertEq(address(registry).balance, 2 ether, "stake untouched");
    }

    function testFuzzReentrantClaimerCannotClaimTwice(uint256 amount) public {
        amount = bound(amount, 1, MAX_STAKE);
        ReentrantClaimer claimer = new ReentrantClaimer(registry);
        _register(node, MAX_STAKE);
        _slash(node, amount, address(claimer));
        claimer.claim();
        assertFalse(claimer.reentrySucceeded(), "re-entry failed");
        assertEq(address(claimer).balance, amount, "paid once");
        assertEq(address(registry).balance, MAX_STAKE - amount, "stake untouched");
    }
}
