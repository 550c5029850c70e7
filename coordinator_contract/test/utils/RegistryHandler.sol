// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../../testing/Test.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";

/// @notice Drives a `NodeRegistry` with bounded random calls from a fixed set of actors for invariant tests,
/// keeping ghost totals of every wei that went in and out.
/// @dev Every call is shaped to succeed (it does nothing when the random state would make it revert), so each
/// run goes deep instead of burning its calls on reverts.
contract RegistryHandler is Test {
    uint256 internal constant ACTORS = 5;
    uint256 internal constant RECIPIENTS = 3;
    uint256 internal constant MAX_DEPOSIT = 100 ether;

    NodeRegistry public immutable registry;
    address public immutable owner;
    address public immutable verifier;
    address public immutable sink;

    /// @notice Wei sent in by `register` and `addStake`.
    uint256 public ghostDeposited;
    /// @notice Wei sent out by `withdrawStake`.
    uint256 public ghostWithdrawn;
    /// @notice Wei taken from stakes by `slash`.
    uint256 public ghostSlashed;
    /// @notice Wei sent out by `claimSlashed`.
    uint256 public ghostClaimed;
    /// @notice Slashed wei credited and not yet claimed.
    uint256 public ghostUnclaimedSlashed;
    /// @notice How many calls of each kind went through, to see that a run exercised every path.
    mapping(bytes32 => uint256) public calls;
    /// @notice Whether an actor is registered (the registry has no such view: a node slashed to zero that is
    /// not unbonding looks like an unregistered one).
    mapping(address => bool) public ghostRegistered;

    constructor(NodeRegistry registry_, address owner_, address verifier_) {
        registry = registry_;
        owner = owner_;
        verifier = verifier_;
        sink = address(0x5111C);
    }

    // ------------------------------------------------------------------------------------------- actions

    function register(uint256 actorSeed, uint256 amount) external {
        address node = actor(actorSeed);
        if (ghostRegistered[node]) return;
        amount = bound(amount, registry.minStake(), registry.minStake() + MAX_DEPOSIT);
        vm.deal(node, amount);
        vm.prank(node);
        registry.register{value: amount}();
        ghostDeposited += amount;
        ghostRegistered[node] = true;
        calls["register"]++;
    }

    function addStake(uint256 actorSeed, uint256 amount) external {
        address node = actor(actorSeed);
        if (!ghostRegistered[node] || registry.unlockAt(node) != 0) return;
        amount = bound(amount, 1, MAX_DEPOSIT);
        vm.deal(node, amount);
        vm.prank(node);
        registry.addStake{value: amount}();
        ghostDeposited += amount;
        calls["addStake"]++;
    }

    function beginUnbonding(uint256 actorSeed) external {
        address node = actor(actorSeed);
        if (!ghostRegistered[node] || registry.unlockAt(node) != 0) return;
        vm.prank(node);
        registry.beginUnbonding();
        calls["beginUnbonding"]++;
    }

    function withdrawStake(uint256 actorSeed) external {
        address node = actor(actorSeed);
        uint64 unlock = registry.unlockAt(node);
        if (unlock == 0) return;
        if (block.timestamp < unlock) vm.warp(unlock);
        uint256 stake = registry.stakeOf(node);
        uint256 sinkBefore = sink.balance;
        vm.prank(node);
        registry.withdrawStake(sink);
        assertEq(sink.balance - sinkBefore, stake, "withdrawn amount");
        ghostWithdrawn += stake;
        ghostRegistered[node] = false;
        calls["withdrawStake"]++;
    }

    function slash(uint256 actorSeed, uint256 amount, uint256 recipientSeed) external {
        address node = actor(actorSeed);
        uint256 stake = registry.stakeOf(node);
        if (stake == 0) return;
        amount = bound(amount, 1, stake);
        vm.prank(verifier);
        registry.slash(node, amount, recipient(recipientSeed));
        ghostSlashed += amount;
        ghostUnclaimedSlashed += amount;
        calls["slash"]++;
    }

    function claimSlashed(uint256 recipientSeed) external {
        address account = recipient(recipientSeed);
        uint256 amount = registry.slashedBalanceOf(account);
        if (amount == 0) return;
        vm.prank(account);
        registry.claimSlashed(sink);
        ghostClaimed += amount;
        ghostUnclaimedSlashed -= amount;
        calls["claimSlashed"]++;
    }

    function warp(uint256 secondsForward) external {
        vm.warp(block.timestamp + bound(secondsForward, 0, 2 * uint256(registry.unbondingDelay())));
        calls["warp"]++;
    }

    function setParameters(uint256 minStake, uint256 unbondingDelay) external {
        minStake = bound(minStake, 0, 10 ether);
        // casting to 'uint64' is safe because bound() kept unbondingDelay within 30 days
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 delay = uint64(bound(unbondingDelay, 1, 30 days));
        vm.prank(owner);
        registry.setParameters(minStake, delay);
        calls["setParameters"]++;
    }

    // --------------------------------------------------------------------------------------------- views

    /// @notice The node account `seed` picks, one of `ACTORS`.
    function actor(uint256 seed) public pure returns (address) {
        // casting to 'uint160' is safe because the value is a small constant plus a small remainder
        // forge-lint: disable-next-line(unsafe-typecast)
        return address(uint160(0xAC7000 + seed % ACTORS));
    }

    /// @notice The slash recipient `seed` picks, one of `RECIPIENTS`.
    function recipient(uint256 seed) public pure returns (address) {
        // casting to 'uint160' is safe because the value is a small constant plus a small remainder
        // forge-lint: disable-next-line(unsafe-typecast)
        return address(uint160(0x5EC000 + seed % RECIPIENTS));
    }

    /// @notice The sum of `stakeOf` over every actor.
    function sumOfStakes() external view returns (uint256 sum) {
        for (uint256 i; i < ACTORS; ++i) {
            sum += registry.stakeOf(actor(i));
        }
    }

    /// @notice The sum of `slashedBalanceOf` over every recipient.
    function sumOfSlashedBalances() external view returns (uint256 sum) {
        for (uint256 i; i < RECIPIENTS; ++i) {
            sum += registry.slashedBalanceOf(recipient(i));
        }
    }

    /// @notice How many actors are active and hold less than the minimum stake (must always be zero).
    function activeBelowMinStake() external view returns (uint256 count) {
        for (uint256 i; i < ACTORS; ++i) {
            address node = actor(i);
            if (registry.isActive(node) && registry.stakeOf(node) < registry.minStake()) count++;
        }
    }
}
