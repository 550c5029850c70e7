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

contract NodeRegistryRegisterTest is NodeRegistryTest {
    function testCanRegister() public {
        vm.deal(node, 2 ether);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.NodeRegistered(node, 2 ether);
        vm.prank(node);
        registry.register{value: 2 ether}();

        assertEq(registry.stakeOf(node), 2 ether, "stake");
        assertTrue(registry.isActive(node), "active");
        assertEq(registry.unlockAt(node), 0, "not unbonding");
        assertEq(registry.totalStaked(), 2 ether, "total staked");
        assertEq(address(registry).balance, 2 ether, "held");
    }

    function testFuzzCanRegister(address who, uint256 amount) public {
        who = _outsider(who);
        amount = bound(amount, MIN_STAKE, MAX_STAKE);
        vm.deal(who, amount);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.NodeRegistered(who, amount);
        vm.prank(who);
        registry.register{value: amount}();
        assertEq(registry.stakeOf(who), amount, "stake");
        assertTrue(registry.isActive(who), "active");
        assertEq(registry.totalStaked(), amount, "total staked");
    }

    function testCannotRegisterBelowMinStake() public {
        vm.deal(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.StakeTooLow.selector, MIN_STAKE - 1, MIN_STAKE));
        vm.prank(node);
        registry.register{value: MIN_STAKE - 1}();
    }

    function testFuzzCannotRegisterBelowMinStake(uint256 amount) public {
        amount = bound(amount, 0, MIN_STAKE - 1);
        vm.deal(node, amount);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.StakeTooLow.selector, amount, MIN_STAKE));
        vm.prank(node);
        registry.register{value: amount}();
        assertEq(registry.totalStaked(), 0, "nothing staked");
    }

    function testCannotRegisterTwice() public {
        _register(node, MIN_STAKE);
        vm.deal(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.AlreadyRegistered.selector, node));
        vm.prank(node);
        registry.register{value: MIN_STAKE}();
    }

    function testFuzzCannotRegisterTwice(uint256 first, uint256 second) public {
        first = bound(first, MIN_STAKE, MAX_STAKE);
        second = bound(second, MIN_STAKE, MAX_STAKE);
        _register(node, first);
        vm.deal(node, second);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.AlreadyRegistered.selector, node));
        vm.prank(node);
        registry.register{value: second}();
        assertEq(registry.stakeOf(node), first, "first stake kept");
    }

    function testCannotRegisterWhileUnbonding() public {
        _register(node, MIN_STAKE);
        uint64 unlock = _unbond(node);
        vm.warp(unlock);
        vm.deal(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.AlreadyRegistered.selector, node));
        vm.prank(node);
        registry.register{value: MIN_STAKE}();
    }

    function testFuzzCannotRegisterWhileUnbonding(uint256 elapsed) public {
        _register(node, MIN_STAKE);
        _unbond(node);
        vm.warp(block.timestamp + bound(elapsed, 0, 10 * uint256(DELAY)));
        vm.deal(node, MIN_STAKE);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.AlreadyRegistered.selector, node));
        vm.prank(node);
        registry.register{value: MIN_STAKE}();
    }

    function testCannotRegisterAbove128Bits() public {
        uint256 amount = uint256(type(uint128).max) + 1;
        vm.deal(node, amount);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(node);
        registry.register{value: amount}();
    }

    function testFuzzCannotRegisterAbove128Bits(uint256 amount) public {
        amount = bound(amount, uint256(type(uint128).max) + 1, type(uint256).max);
        vm.deal(node, amount);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(node);
        registry.register{value: amount}();
    }

    function testCanRegisterAgainAfterWithdrawal() public {
        _register(node, 3 ether);
        vm.warp(_unbond(node));
        vm.prank(node);
        registry.withdrawStake(node);

        _register(node, MIN_STAKE);
        assertTrue(registry.isActive(node), "active again");
        assertEq(registry.stakeOf(node), MIN_STAKE, "fresh stake");
        assertEq(registry.unlockAt(node), 0, "not unbonding");
        assertEq(registry.totalStaked(), MIN_STAKE, "total staked");
    }

    function testFuzzCanRegisterAgainAfterWithdrawal(uint256 first, uint256 second) public {
        first = bound(first, MIN_STAKE, MAX_STAKE);
        second = bound(second, MIN_STAKE, MAX_STAKE);
        _register(node, first);
        vm.warp(_unbond(node));
        vm.prank(node);
        registry.withdrawStake(recipient);
        _register(node, second);
        assertTrue(registry.isActive(node), "active again");
        assertEq(registry.stakeOf(node), second, "fresh stake");
        assertEq(address(registry).balance, second, "only the new stake held");
    }

    function testCanRegisterWithoutStakeWhenMinStakeIsZero() public {
        vm.prank(owner);
        registry.setParameters(0, DELAY);
        vm.prank(node);
        registry.register();
        assertTrue(registry.isActive(node), "active with zero stake");
        assertEq(registry.stakeOf(node), 0, "no stake");
    }

    function testFuzzCanRegisterWhenMinStakeIsLowered(uint256 minStake, uint256 amount) public {
        minStake = bound(minStake, 0, MIN_STAKE - 1);
        amount = bound(amount, minStake, MIN_STAKE - 1);
        vm.prank(owner);
        registry.setParameters(minStake, DELAY);
        _register(node, amount);
        assertTrue(registry.isActive(node), "active");
        assertEq(registry.stakeOf(node), amount, "stake");
    }
}

contract NodeRegistryStakeTest is NodeRegistryTest {
    function testCanAddStake() public {
        _register(node, MIN_STAKE);
        vm.deal(node, 2 ether);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.StakeAdded(node, 2 ether, 3 ether);
        vm.prank(node);
        registry.addStake{value: 2 ether}();
        assertEq(registry.stakeOf(node), 3 ether, "stake");
        assertEq(registry.totalStaked(), 3 ether, "total staked");
        assertEq(address(registry).balance, 3 ether, "held");
    }

    function testFuzzCanAddStake(uint256 initial, uint256 extra) public {
        initial = bound(initial, MIN_STAKE, MAX_STAKE);
        extra = bound(extra, 1, MAX_STAKE);
        _register(node, initial);
        vm.deal(node, extra);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.StakeAdded(node, extra, initial + extra);
        vm.prank(node);
        registry.addStake{value: extra}();
        assertEq(registry.stakeOf(node), initial + extra, "stake");
        assertEq(registry.totalStaked(), initial + extra, "total staked");
    }

    function testCannotAddZeroStake() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(node);
        registry.addStake();
    }

    function testFuzzCannotAddZeroStake(uint256 initial) public {
        initial = bound(initial, MIN_STAKE, MAX_STAKE);
        _register(node, initial);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(node);
        registry.addStake{value: 0}();
        assertEq(registry.stakeOf(node), initial, "unchanged");
    }

    function testCannotAddStakeUnregistered() public {
        vm.deal(stranger, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, stranger));
        vm.prank(stranger);
        registry.addStake{value: 1 ether}();
    }

    function testFuzzCannotAddStakeUnregistered(address who, uint256 amount) public {
        who = _outsider(who);
        amount = bound(amount, 0, MAX_STAKE);
        vm.deal(who, amount);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, who));
        vm.prank(who);
        registry.addStake{value: amount}();
    }

    function testCannotAddStakeWhileUnbonding() public {
        _register(node, MIN_STAKE);
        _unbond(node);
        vm.deal(node, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.IsUnbonding.selector, node));
        vm.prank(node);
        registry.addStake{value: 1 ether}();
    }

    function testFuzzCannotAddStakeWhileUnbonding(uint256 amount, uint256 elapsed) public {
        amount = bound(amount, 1, MAX_STAKE);
        _register(node, MIN_STAKE);
        _unbond(node);
        vm.warp(block.timestamp + bound(elapsed, 0, 10 * uint256(DELAY)));
        vm.deal(node, amount);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.IsUnbonding.selector, node));
        vm.prank(node);
        registry.addStake{value: amount}();
    }

    function testCannotAddStakeBeyond128Bits() public {
        _register(node, type(uint128).max);
        vm.deal(node, 1);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(node);
        registry.addStake{value: 1}();
    }

    function testFuzzCannotAddStakeBeyond128Bits(uint256 initial, uint256 extra) public {
        initial = bound(initial, MIN_STAKE, type(uint128).max);
        extra = bound(extra, uint256(type(uint128).max) - initial + 1, 2 * uint256(type(uint128).max));
        _register(node, initial);
        vm.deal(node, extra);
        vm.expectRevert(INodeRegistry.InvalidAmount.selector);
        vm.prank(node);
        registry.addStake{value: extra}();
        assertEq(registry.stakeOf(node), initial, "unchanged");
    }

    function testCanAddStakeToBecomeActiveAgain() public {
        _register(node, MIN_STAKE);
        _slash(node, 0.5 ether, recipient);
        assertFalse(registry.isActive(node), "below min stake");
        vm.deal(node, 0.5 ether);
        vm.prank(node);
        registry.addStake{value: 0.5 ether}();
        assertTrue(registry.isActive(node), "topped up");
    }

    function testFuzzCanAddStakeToBecomeActiveAgain(uint256 slashed, uint256 topUp) public {
        slashed = bound(slashed, 1, MIN_STAKE);
        topUp = bound(topUp, 1, MAX_STAKE);
        _register(node, MIN_STAKE);
        _slash(node, slashed, recipient);
        assertFalse(registry.isActive(node), "below min stake");
        vm.deal(node, topUp);
        vm.prank(node);
        registry.addStake{value: topUp}();
        assertEq(registry.isActive(node), topUp >= slashed, "active iff topped up to the minimum");
        assertEq(registry.totalStaked(), MIN_STAKE - slashed + topUp, "total staked");
    }
}
