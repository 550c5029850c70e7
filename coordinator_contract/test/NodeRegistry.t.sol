// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {RegistryHandler} from "./utils/RegistryHandler.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";

/// @notice Cheatcodes this file needs that `test/utils/Test.sol` does not declare.
interface VmExtra {
    function getNonce(address account) external view returns (uint64);
    function computeCreateAddress(address deployer, uint256 nonce) external pure returns (address);
}

/// @notice An account that refuses ETH but can still claim slashed ETH to somewhere else.
contract RejectingReceiver {
    function claim(INodeRegistry registry, address to) external returns (uint256) {
        return registry.claimSlashed(to);
    }

    receive() external payable {
        revert("no thanks");
    }
}

/// @notice A node run by a contract whose `receive` tries to withdraw its stake a second time.
contract ReentrantWithdrawer {
    INodeRegistry public immutable registry;
    bool public reentered;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(INodeRegistry registry_) {
        registry = registry_;
    }

    function register() external payable {
        registry.register{value: msg.value}();
    }

    function beginUnbonding() external {
        registry.beginUnbonding();
    }

    function withdraw() external returns (uint256) {
        return registry.withdrawStake(address(this));
    }

    receive() external payable {
        if (reentered) return;
        reentered = true;
        try registry.withdrawStake(address(this)) {
            reentrySucceeded = true;
        } catch (bytes memory reason) {
            reentryError = reason;
        }
    }
}

/// @notice A slash recipient whose `receive` tries to claim its slashed balance a second time.
contract ReentrantClaimer {
    INodeRegistry public immutable registry;
    bool public reentered;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(INodeRegistry registry_) {
        registry = registry_;
    }

    function claim() external returns (uint256) {
        return registry.claimSlashed(address(this));
    }

    receive() external payable {
        if (reentered) return;
        reentered = true;
        try registry.claimSlashed(address(this)) {
            reentrySucceeded = true;
        } catch (bytes memory reason) {
            reentryError = reason;
        }
    }
}

abstract contract NodeRegistryTest is Test {
    VmExtra internal constant vmExtra = VmExtra(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 internal constant MIN_STAKE = 1 ether;
    uint64 internal constant DELAY = 7 days;
    uint64 internal constant MAX_DELAY = 365 days;
    uint256 internal constant MAX_STAKE = 1_000_000 ether;

    address internal owner = address(0xA11CE);
    address internal verifier = address(0xFE7);
    address internal node = address(0xB0B);
    address internal stranger = address(0xBAD);
    address internal recipient = address(0xCAFE);
    NodeRegistry internal registry;

    function setUp() public virtual {
        registry = new NodeRegistry(owner, MIN_STAKE, DELAY);
        vm.prank(owner);
        registry.setVerifier(verifier, true);
        vm.warp(1_700_000_000);
        vm.label(owner, "owner");
        vm.label(verifier, "verifier");
        vm.label(node, "node");
        vm.label(stranger, "stranger");
        vm.label(recipient, "recipient");
    }

    function _register(address who, uint256 amount) internal {
        vm.deal(who, amount);
        vm.prank(who);
        registry.register{value: amount}();
    }

    function _unbond(address who) internal returns (uint64) {
        vm.prank(who);
        registry.beginUnbonding();
        return registry.unlockAt(who);
    }

    function _slash(address who, uint256 amount, address to) internal {
        vm.prank(verifier);
        registry.slash(who, amount, to);
    }

    /// @dev `who`, moved off every address the tests give a role to (and the registry and cheatcode accounts).
    function _outsider(address who) internal view returns (address) {
        if (
            who == node || who == owner || who == verifier || who == recipient || who == address(registry)
                || who == address(this) || who == address(vm) || uint160(who) <= 0xFFFF
        ) {
            return address(uint160(uint256(keccak256(abi.encode(who)))));
        }
        return who;
    }

    function _now() internal view returns (uint64) {
        // casting to 'uint64' is safe because the tests never warp past 2**64 seconds
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(block.timestamp);
    }

    /// @dev `x` bounded to [min, max] as an unbonding delay.
    function _delay(uint256 x, uint64 min, uint64 max) internal pure returns (uint64) {
        // casting to 'uint64' is safe because bound() keeps the result within [min, max], both uint64
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(bound(x, min, max));
    }
}

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

/// @dev 4 invariants x 128 runs x 100 calls keeps the suite fast; raise the runs when changing the registry.
/// forge-config: default.invariant.runs = 128
/// forge-config: default.invariant.depth = 100
contract NodeRegistryInvariantTest is NodeRegistryTest {
    RegistryHandler internal handler;

    function setUp() public override {
        super.setUp();
        handler = new RegistryHandler(registry, owner, verifier);
        targetContract(address(handler));
    }

    function invariantBalanceCoversStakesAndSlashedCredits() public view {
        assertEq(
            address(registry).balance,
            registry.totalStaked() + handler.ghostUnclaimedSlashed(),
            "balance == staked + unclaimed slashed"
        );
    }

    function invariantTotalStakedIsTheSumOfStakes() public view {
        assertEq(registry.totalStaked(), handler.sumOfStakes(), "total staked == sum of stakes");
    }

    function invariantGhostFlowsAddUp() public view {
        assertEq(
            registry.totalStaked(),
            handler.ghostDeposited() - handler.ghostWithdrawn() - handler.ghostSlashed(),
            "staked == deposited - withdrawn - slashed"
        );
        assertEq(
            handler.ghostUnclaimedSlashed(),
            handler.ghostSlashed() - handler.ghostClaimed(),
            "unclaimed == slashed - claimed"
        );
        assertEq(handler.ghostUnclaimedSlashed(), handler.sumOfSlashedBalances(), "credits match the ghost");
    }

    function invariantNoActiveNodeBelowMinStake() public view {
        assertEq(handler.activeBelowMinStake(), 0, "active nodes hold the minimum stake");
    }

    function testHandlerSequenceKeepsInvariants() public {
        handler.register(0, 5 ether);
        handler.register(1, 2 ether);
        handler.addStake(0, 1 ether);
        handler.slash(0, 3 ether, 0);
        handler.beginUnbonding(1);
        handler.slash(1, 1 ether, 1);
        handler.withdrawStake(1);
        handler.claimSlashed(0);
        handler.setParameters(4 ether, 1 days);
        handler.register(1, 6 ether);
        _checkInvariants();
        assertEq(handler.calls("withdrawStake"), 1, "withdrew");
        assertEq(handler.calls("claimSlashed"), 1, "claimed");
        assertEq(address(registry).balance, 3 ether + 6 ether + 1 ether, "stakes plus one unclaimed credit");
    }

    function testFuzzHandlerSequenceKeepsInvariants(uint256[12] memory seeds) public {
        for (uint256 i; i < seeds.length; ++i) {
            uint256 s = seeds[i];
            uint256 action = s % 8;
            if (action == 0) handler.register(s >> 8, s >> 16);
            else if (action == 1) handler.addStake(s >> 8, s >> 16);
            else if (action == 2) handler.beginUnbonding(s >> 8);
            else if (action == 3) handler.withdrawStake(s >> 8);
            else if (action == 4) handler.slash(s >> 8, s >> 16, s >> 24);
            else if (action == 5) handler.claimSlashed(s >> 8);
            else if (action == 6) handler.warp(s >> 8);
            else handler.setParameters(s >> 8, s >> 16);
            _checkInvariants();
        }
    }

    function _checkInvariants() internal view {
        invariantBalanceCoversStakesAndSlashedCredits();
        invariantTotalStakedIsTheSumOfStakes();
        invariantGhostFlowsAddUp();
        invariantNoActiveNodeBelowMinStake();
    }
}
