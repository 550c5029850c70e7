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

contract NodeRegistryOwnerTest is NodeRegistryTest {
    function testConstructorSetsState() public {
        uint256 nonce = vmExtra.getNonce(address(this));
        address predicted = vmExtra.computeCreateAddress(address(this), nonce);
        vm.expectEmit(true, true, true, true, predicted);
        emit INodeRegistry.OwnershipTransferred(address(0), owner);
        vm.expectEmit(true, true, true, true, predicted);
        emit INodeRegistry.ParametersChanged(MIN_STAKE, DELAY);
        NodeRegistry fresh = new NodeRegistry(owner, MIN_STAKE, DELAY);

        assertEq(address(fresh), predicted, "address");
        assertEq(fresh.owner(), owner, "owner");
        assertEq(fresh.minStake(), MIN_STAKE, "min stake");
        assertEq(fresh.unbondingDelay(), DELAY, "delay");
        assertEq(fresh.totalStaked(), 0, "nothing staked");
        assertFalse(fresh.isApprovedVerifier(owner), "no verifier yet");
    }

    function testFuzzConstructorSetsState(address owner_, uint256 minStake, uint256 delay) public {
        if (owner_ == address(0)) owner_ = owner;
        uint64 d = _delay(delay, 1, MAX_DELAY);
        NodeRegistry fresh = new NodeRegistry(owner_, minStake, d);
        assertEq(fresh.owner(), owner_, "owner");
        assertEq(fresh.minStake(), minStake, "min stake");
        assertEq(fresh.unbondingDelay(), d, "delay");
    }

    function testCannotDeployWithZeroOwner() public {
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        new NodeRegistry(address(0), MIN_STAKE, DELAY);
    }

    function testFuzzCannotDeployWithZeroOwner(uint256 minStake, uint256 delay) public {
        uint64 d = _delay(delay, 1, MAX_DELAY);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        new NodeRegistry(address(0), minStake, d);
    }

    function testCannotDeployWithInvalidDelay() public {
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        new NodeRegistry(owner, MIN_STAKE, 0);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        new NodeRegistry(owner, MIN_STAKE, MAX_DELAY + 1);
    }

    function testFuzzCannotDeployWithInvalidDelay(uint256 delay, bool zero) public {
        uint64 d = zero ? 0 : _delay(delay, MAX_DELAY + 1, type(uint64).max);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        new NodeRegistry(owner, MIN_STAKE, d);
    }

    function testCanSetVerifier() public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.VerifierApprovalChanged(stranger, true);
        vm.prank(owner);
        registry.setVerifier(stranger, true);
        assertTrue(registry.isApprovedVerifier(stranger), "approved");

        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.VerifierApprovalChanged(stranger, false);
        vm.prank(owner);
        registry.setVerifier(stranger, false);
        assertFalse(registry.isApprovedVerifier(stranger), "revoked");
    }

    function testFuzzCanSetVerifier(address who, bool approved) public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.VerifierApprovalChanged(who, approved);
        vm.prank(owner);
        registry.setVerifier(who, approved);
        assertEq(registry.isApprovedVerifier(who), approved, "approval");
    }

    function testCannotSetVerifierAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, stranger));
        vm.prank(stranger);
        registry.setVerifier(stranger, true);
    }

    function testFuzzCannotSetVerifierAsStranger(address caller) public {
        if (caller == owner || caller == verifier) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, caller));
        vm.prank(caller);
        registry.setVerifier(caller, true);
        assertFalse(registry.isApprovedVerifier(caller), "not approved");
    }

    function testCanSetParameters() public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.ParametersChanged(5 ether, 1 days);
        vm.prank(owner);
        registry.setParameters(5 ether, 1 days);
        assertEq(registry.minStake(), 5 ether, "min stake");
        assertEq(registry.unbondingDelay(), 1 days, "delay");
    }

    function testFuzzCanSetParameters(uint256 minStake, uint256 delay) public {
        uint64 d = _delay(delay, 1, MAX_DELAY);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.ParametersChanged(minStake, d);
        vm.prank(owner);
        registry.setParameters(minStake, d);
        assertEq(registry.minStake(), minStake, "min stake");
        assertEq(registry.unbondingDelay(), d, "delay");
    }

    function testCannotSetZeroUnbondingDelay() public {
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(owner);
        registry.setParameters(MIN_STAKE, 0);
    }

    function testFuzzCannotSetZeroUnbondingDelay(uint256 minStake) public {
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(owner);
        registry.setParameters(minStake, 0);
        assertEq(registry.unbondingDelay(), DELAY, "unchanged");
    }

    function testCannotSetUnbondingDelayAboveMax() public {
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(owner);
        registry.setParameters(MIN_STAKE, MAX_DELAY + 1);
    }

    function testFuzzCannotSetUnbondingDelayAboveMax(uint256 delay) public {
        uint64 d = _delay(delay, MAX_DELAY + 1, type(uint64).max);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(owner);
        registry.setParameters(MIN_STAKE, d);
    }

    function testCannotSetParametersAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, stranger));
        vm.prank(stranger);
        registry.setParameters(0, DELAY);
    }

    function testFuzzCannotSetParametersAsStranger(address caller, uint256 minStake) public {
        if (caller == owner) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, caller));
        vm.prank(caller);
        registry.setParameters(minStake, DELAY);
        assertEq(registry.minStake(), MIN_STAKE, "unchanged");
    }

    function testRaisingMinStakeDeactivatesNodes() public {
        _register(node, 2 ether);
        vm.prank(owner);
        registry.setParameters(3 ether, DELAY);
        assertFalse(registry.isActive(node), "below the new minimum");
        vm.deal(node, 1 ether);
        vm.prank(node);
        registry.addStake{value: 1 ether}();
        assertTrue(registry.isActive(node), "topped up");
    }

    function testFuzzRaisingMinStakeDeactivatesNodes(uint256 stake, uint256 newMin) public {
        stake = bound(stake, MIN_STAKE, MAX_STAKE);
        newMin = bound(newMin, 0, 2 * MAX_STAKE);
        _register(node, stake);
        vm.prank(owner);
        registry.setParameters(newMin, DELAY);
        assertEq(registry.isActive(node), stake >= newMin, "active iff at the new minimum");
    }

    function testCanTransferOwnership() public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.OwnershipTransferred(owner, stranger);
        vm.prank(owner);
        registry.transferOwnership(stranger);
        assertEq(registry.owner(), stranger, "owner");
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, owner));
        vm.prank(owner);
        registry.setVerifier(owner, true);
    }

    function testFuzzCanTransferOwnership(address newOwner) public {
        if (newOwner == address(0)) newOwner = stranger;
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.OwnershipTransferred(owner, newOwner);
        vm.prank(owner);
        registry.transferOwnership(newOwner);
        assertEq(registry.owner(), newOwner, "owner");
        vm.prank(newOwner);
        registry.setVerifier(newOwner, true);
        assertTrue(registry.isApprovedVerifier(newOwner), "new owner in charge");
    }

    function testCannotTransferOwnershipToZero() public {
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(owner);
        registry.transferOwnership(address(0));
    }

    function testFuzzCannotTransferOwnershipToZero(address current) public {
        if (current == address(0)) current = stranger;
        vm.prank(owner);
        registry.transferOwnership(current);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(current);
        registry.transferOwnership(address(0));
        assertEq(registry.owner(), current, "unchanged");
    }

    function testCannotTransferOwnershipAsStranger() public {
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, stranger));
        vm.prank(stranger);
        registry.transferOwnership(stranger);
    }

    function testFuzzCannotTransferOwnershipAsStranger(address caller) public {
        if (caller == owner) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.Unauthorized.selector, caller));
        vm.prank(caller);
        registry.transferOwnership(caller);
        assertEq(registry.owner(), owner, "unchanged");
    }
}
