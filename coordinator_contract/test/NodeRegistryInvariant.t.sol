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
import {RegistryHandler} from "./utils/RegistryHandler.sol";

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
