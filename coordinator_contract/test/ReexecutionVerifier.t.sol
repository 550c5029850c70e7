// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {ReexecutionVerifier} from "../src/verifiers/ReexecutionVerifier.sol";
import {VerifierBase} from "../src/verifiers/VerifierBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IVerifier} from "../src/interfaces/IVerifier.sol";

contract ReexecutionVerifierTest is CoordinatorTest {
    uint64 internal constant CHALLENGE = 30 minutes;
    uint64 internal constant VOTE = 30 minutes;
    uint16 internal constant QUORUM = 2;
    uint256 internal constant SLASH = 0.5 ether;
    bytes internal constant OUTPUT = hex"c0ffee";
    bytes32 internal constant WRONG = keccak256("another output");
    address internal node4 = address(0xB0B4);
    ReexecutionVerifier internal verifier;
    uint256 internal id;
    uint256 internal deliveredAt;

    function setUp() public override {
        super.setUp();
        _stake(node4);
        verifier = new ReexecutionVerifier(owner, coordinator, registry, CHALLENGE, VOTE, QUORUM, SLASH);
        vm.prank(owner);
        registry.setVerifier(address(verifier), true);
        ICoordinator.RequestParams memory p = _params(1, FEE, address(0));
        p.deadline = uint64(block.timestamp + 2 hours);
        id = consumer.requestVerified{value: FEE}(p, hex"01", address(verifier));
        deliveredAt = block.timestamp;
        vm.prank(node);
        assertTrue(coordinator.deliverWithProof(id, OUTPUT, "") == IVerifier.Verdict.Pending, "pending");
    }

    function testAnUndisputedOutputStandsAfterTheWindow() public {
        assertEq(verifier.window(), CHALLENGE + VOTE, "window");
        (bytes32 outputHash, uint64 claimedAt,,,,) = verifier.claims(id, node);
        assertEq(outputHash, keccak256(OUTPUT), "claim recorded");
        assertEq(claimedAt, deliveredAt, "at delivery");
        vm.warp(deliveredAt + CHALLENGE + VOTE + 1);
        vm.prank(stranger); // anyone settles it
        coordinator.finalizeDelivery(id, node, OUTPUT);
        assertEq(consumer.lastOutput(), OUTPUT, "handed over");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid");
    }

    function testFuzzAQuorumAgainstRejectsTheOutputAndSlashesToTheChallenger(uint256 elapsed) public {
        vm.warp(deliveredAt + bound(elapsed, 0, CHALLENGE));
        vm.expectEmit(true, true, true, true, address(verifier));
        emit ReexecutionVerifier.DisputeOpened(id, node, node2, WRONG);
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.warp(deliveredAt + CHALLENGE + VOTE); // the last second of the window
        vm.expectEmit(true, true, true, true, address(verifier));
        emit ReexecutionVerifier.Voted(id, node, node3, false);
        vm.expectEmit(true, true, true, true, address(verifier));
        emit ReexecutionVerifier.DisputeResolved(id, node, false);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliveryRejected(id, node);
        vm.prank(node3);
        verifier.vote(id, node, keccak256("yet another")); // any other hash is a vote against
        assertEq(registry.stakeOf(node), MIN_STAKE - SLASH, "slashed");
        assertEq(registry.slashedBalanceOf(node2), SLASH, "to the challenger");
        assertEq(consumer.calls(), 0, "never handed over");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NothingPending.selector, id, node));
        coordinator.finalizeDelivery(id, node, OUTPUT);
    }

    function testARejectedSlotIsOpenForAnotherNode() public {
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.prank(node3);
        verifier.vote(id, node, WRONG);
        vm.prank(node4);
        coordinator.deliverWithProof(id, hex"beef", "");
        vm.warp(block.timestamp + CHALLENGE + VOTE + 1);
        coordinator.finalizeDelivery(id, node4, hex"beef");
        assertEq(consumer.lastOutput(), hex"beef", "the honest answer arrives");
    }

    function testAQuorumForConfirmsTheOutputAtOnce() public {
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.prank(node3);
        verifier.vote(id, node, keccak256(OUTPUT));
        vm.expectEmit(true, true, true, true, address(verifier));
        emit ReexecutionVerifier.DisputeResolved(id, node, true);
        vm.prank(node4);
        verifier.vote(id, node, keccak256(OUTPUT));
        coordinator.finalizeDelivery(id, node, OUTPUT); // no need to wait out the window
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid");
        assertEq(registry.stakeOf(node), MIN_STAKE, "not slashed");
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.NoOpenDispute.selector, id, node));
        vm.prank(node3);
        verifier.vote(id, node, WRONG);
    }

    function testWithoutAQuorumByTheEndTheOutputStands() public {
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.prank(node3);
        verifier.vote(id, node, keccak256(OUTPUT)); // one against, one for
        uint256 closedAt = deliveredAt + CHALLENGE + VOTE;
        vm.warp(closedAt + 1);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.VotingClosed.selector, id, node, closedAt));
        vm.prank(node4);
        verifier.vote(id, node, WRONG);
        coordinator.finalizeDelivery(id, node, OUTPUT);
        assertEq(consumer.lastOutput(), OUTPUT, "stands");
    }

    function testFuzzCannotDisputeAfterTheChallengeWindow(uint256 late) public {
        uint256 closedAt = deliveredAt + CHALLENGE;
        vm.warp(bound(late, closedAt + 1, closedAt + 365 days));
        vm.expectRevert(
            abi.encodeWithSelector(ReexecutionVerifier.ChallengeWindowClosed.selector, id, node, closedAt)
        );
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
    }

    function testCannotDisputeWithTheClaimedOutput() public {
        bytes32 same = keccak256(OUTPUT);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.SameOutput.selector, id, node, same));
        vm.prank(node2);
        verifier.dispute(id, node, same);
    }

    function testCannotDisputeTwice() public {
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.AlreadyDisputed.selector, id, node));
        vm.prank(node3);
        verifier.dispute(id, node, WRONG);
    }

    function testANodeCannotJudgeItsOwnOutput() public {
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.OwnOutput.selector, id, node));
        vm.prank(node);
        verifier.dispute(id, node, WRONG);
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.OwnOutput.selector, id, node));
        vm.prank(node);
        verifier.vote(id, node, keccak256(OUTPUT));
    }

    function testFuzzOnlyActiveNodesJudge(address caller) public {
        if (caller == node || caller == node2 || caller == node3 || caller == node4) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.NotActiveNode.selector, caller));
        vm.prank(caller);
        verifier.dispute(id, node, WRONG);
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.NotActiveNode.selector, caller));
        vm.prank(caller);
        verifier.vote(id, node, WRONG);
    }

    function testEachNodeVotesOnce() public {
        vm.prank(node2);
        verifier.dispute(id, node, WRONG);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.AlreadyVoted.selector, id, node, node2));
        vm.prank(node2); // the dispute was its vote
        verifier.vote(id, node, WRONG);
    }

    function testCannotVoteWithoutADisputeOrOnAnUnknownDelivery() public {
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.NoOpenDispute.selector, id, node));
        vm.prank(node2);
        verifier.vote(id, node, WRONG);
        vm.expectRevert(abi.encodeWithSelector(ReexecutionVerifier.NoClaim.selector, id, node2));
        vm.prank(node3);
        verifier.dispute(id, node2, WRONG);
    }

    function testFuzzOnlyTheCoordinatorRecordsClaims(address caller) public {
        if (caller == address(coordinator)) caller = stranger;
        vm.expectRevert(abi.encodeWithSelector(VerifierBase.NotTheCoordinator.selector, caller));
        vm.prank(caller);
        verifier.verify(id, node2, OUTPUT, "");
    }

    function testCannotDeployWithoutAChallengeWindowOrQuorum() public {
        vm.expectRevert(VerifierBase.InvalidParameter.selector);
        new ReexecutionVerifier(owner, coordinator, registry, 0, VOTE, QUORUM, SLASH);
        vm.expectRevert(VerifierBase.InvalidParameter.selector);
        new ReexecutionVerifier(owner, coordinator, registry, CHALLENGE, VOTE, 0, SLASH);
    }
}
