// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {HashProofVerifier, OptimisticVerifier, BrokenVerifier} from "./utils/Verifiers.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IVerifier} from "../src/interfaces/IVerifier.sol";

contract CoordinatorVerificationTest is CoordinatorTest {
    HashProofVerifier internal atomic;
    OptimisticVerifier internal optimistic;
    uint64 internal constant WINDOW = 1 hours;
    bytes internal constant OUTPUT = hex"c0ffee";

    function setUp() public override {
        super.setUp();
        atomic = new HashProofVerifier(registry, coordinator, 0.5 ether);
        optimistic = new OptimisticVerifier(coordinator, WINDOW);
        vm.startPrank(owner);
        registry.setVerifier(address(atomic), true);
        registry.setVerifier(address(optimistic), true);
        vm.stopPrank();
    }

    function _verified(address verifier, uint16 redundancy) internal returns (uint256) {
        ICoordinator.RequestParams memory p = _params(redundancy, FEE, address(0));
        p.deadline = uint64(block.timestamp + 2 hours);
        return consumer.requestVerified{value: FEE * redundancy}(p, hex"01", verifier);
    }

    function _goodProof(bytes memory output) internal pure returns (bytes memory) {
        return abi.encode(keccak256(output));
    }

    function testCannotRequestWithAnUnapprovedVerifier() public {
        BrokenVerifier rogue = new BrokenVerifier();
        ICoordinator.RequestParams memory p = _params(1, FEE, address(0));
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.VerifierNotApproved.selector, address(rogue)));
        coordinator.requestVerifiedInference{value: FEE}(p, hex"01", address(rogue));
    }

    function testFuzzAVerifiedRequestNamesItsVerifierAndStoresWhatItChecks(bytes memory input) public {
        if (input.length == 0 || input.length > 1024) input = abi.encode(keccak256(input));
        ICoordinator.RequestParams memory p = _params(1, FEE, address(0));
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestCreated(
            1, MODEL, address(consumer), input, address(0), FEE, GAS_LIMIT, 1, p.deadline, address(atomic)
        );
        uint256 id = consumer.requestVerified{value: FEE}(p, input, address(atomic));
        (address verifier, bytes32 modelId, bytes32 inputHash, uint16 pending) =
            coordinator.verificationOf(id);
        assertEq(verifier, address(atomic), "verifier");
        assertEq(modelId, MODEL, "model id");
        assertEq(inputHash, keccak256(input), "input hash");
        assertEq(pending, 0, "nothing pending");
    }

    function testAPlainRequestStoresNoVerification() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        (address verifier, bytes32 modelId, bytes32 inputHash,) = coordinator.verificationOf(id);
        assertEq(verifier, address(0), "no verifier");
        assertEq(modelId, bytes32(0), "no model id stored");
        assertEq(inputHash, bytes32(0), "no input hash stored");
    }

    function testVerifiedRequestsNeedAProof() public {
        uint256 id = _verified(address(atomic), 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.ProofRequired.selector, id));
        vm.prank(node);
        coordinator.deliver(id, OUTPUT);
    }

    function testProofsAreOnlyForVerifiedRequests() public {
        uint256 id = _request(hex"01", GAS_LIMIT, FEE);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NoVerifier.selector, id));
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
    }

    function testFuzzAtomicValidProofPaysAndCallsBack(bytes calldata output) public {
        if (output.length > 1024) output = output[:1024];
        uint256 id =
            consumer.requestVerified{value: FEE}(_params(1, FEE, address(0)), hex"01", address(atomic));
        vm.prank(node);
        assertTrue(
            coordinator.deliverWithProof(id, output, _goodProof(output)) == IVerifier.Verdict.Valid, "valid"
        );
        assertEq(consumer.lastOutput(), output, "handed over");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid");
    }

    function testAtomicInvalidProofIsRefusedSlashedAndTheSlotReopens() public {
        uint256 id = _verified(address(atomic), 1);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliveryRejected(id, node);
        vm.prank(node);
        assertTrue(coordinator.deliverWithProof(id, OUTPUT, "forged") == IVerifier.Verdict.Invalid, "invalid");
        assertEq(consumer.calls(), 0, "the consumer never sees it");
        assertEq(coordinator.balanceOf(address(0), node), 0, "not paid");
        assertEq(registry.slashedBalanceOf(address(consumer)), 0.5 ether, "stake slashed to the consumer");
        assertEq(registry.stakeOf(node), MIN_STAKE - 0.5 ether, "node lost stake");
        assertFalse(registry.isActive(node), "slashed below the minimum stake: out");
        vm.prank(node2); // a bad node cannot deny the answer: the slot is open for an honest one
        coordinator.deliverWithProof(id, OUTPUT, _goodProof(OUTPUT));
        assertEq(consumer.lastOutput(), OUTPUT, "answered");
        assertEq(coordinator.balanceOf(address(0), node2), FEE, "the honest node is paid");
    }

    function testBrokenVerifierFailsTheDeliveryNotTheNode() public {
        BrokenVerifier broken = new BrokenVerifier();
        vm.prank(owner);
        registry.setVerifier(address(broken), true);
        uint256 id = _verified(address(broken), 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.VerifierFailed.selector, id, address(broken)));
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        assertEq(registry.stakeOf(node), MIN_STAKE, "no slash");
    }

    function testOptimisticResultWaitsForTheWindow() public {
        uint256 id = _verified(address(optimistic), 1);
        uint64 verdictBy = uint64(block.timestamp) + WINDOW;
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.VerificationPending(id, node, keccak256(OUTPUT), verdictBy);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        assertEq(consumer.calls(), 0, "no unverified result in the callback");
        assertEq(coordinator.balanceOf(address(0), node), 0, "not paid yet");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.VerificationNotDone.selector, id, verdictBy));
        vm.prank(node);
        coordinator.finalizeDelivery(id, node, OUTPUT);

        vm.warp(verdictBy + 1);
        vm.prank(node);
        assertTrue(coordinator.finalizeDelivery(id, node, OUTPUT), "settled after the window");
        assertEq(consumer.lastOutput(), OUTPUT, "handed over");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "paid");
    }

    function testFuzzOptimisticVerdictBeforeTheWindow(bool valid, uint256 elapsed) public {
        uint256 id = _verified(address(optimistic), 1);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        vm.warp(block.timestamp + bound(elapsed, 0, WINDOW));
        optimistic.judge(id, node, valid);
        if (valid) {
            vm.prank(node);
            coordinator.finalizeDelivery(id, node, OUTPUT); // no need to wait out the window
            assertEq(coordinator.balanceOf(address(0), node), FEE, "paid");
        } else {
            vm.expectRevert(abi.encodeWithSelector(ICoordinator.NothingPending.selector, id, node));
            vm.prank(node);
            coordinator.finalizeDelivery(id, node, OUTPUT);
            assertEq(consumer.calls(), 0, "never handed over");
            assertEq(coordinator.getRequest(id).delivered, 0, "the slot is open again");
        }
    }

    function testCannotJudgeAfterTheWindow() public {
        uint256 id = _verified(address(optimistic), 1);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        uint64 verdictBy = uint64(block.timestamp) + WINDOW;
        vm.warp(verdictBy + 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.VerdictTooLate.selector, id, verdictBy));
        optimistic.judge(id, node, false);
    }

    function testFuzzOnlyTheVerifierJudges(address caller) public {
        if (caller == address(optimistic)) caller = stranger;
        uint256 id = _verified(address(optimistic), 1);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NotTheVerifier.selector, id, caller));
        vm.prank(caller);
        coordinator.resolveVerification(id, node, false);
    }

    function testCannotFinalizeADifferentOutput() public {
        uint256 id = _verified(address(optimistic), 1);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        optimistic.judge(id, node, true);
        vm.expectRevert(
            abi.encodeWithSelector(
                ICoordinator.OutputMismatch.selector, id, keccak256(OUTPUT), keccak256(hex"bad0")
            )
        );
        vm.prank(node);
        coordinator.finalizeDelivery(id, node, hex"bad0");
    }

    function testPendingSlotsAreNotReclaimedAndSettleAfterTheDeadline() public {
        uint256 id = _verified(address(optimistic), 2);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        vm.warp(block.timestamp + 3 hours); // past both the window and the deadline
        assertEq(coordinator.reclaim(id), FEE, "only the untouched slot comes back");
        vm.prank(node);
        coordinator.finalizeDelivery(id, node, OUTPUT);
        assertEq(coordinator.balanceOf(address(0), node), FEE, "the pending slot still pays its node");
        assertTrue(_status(id) == ICoordinator.Status.Reclaimed, "stays reclaimed");
        assertEq(address(coordinator).balance, 2 * FEE, "all escrow accounted for, nothing paid twice");
    }

    function testTheConsumerCanFinalizeWhenTheNodeDoesNot() public {
        uint256 id = _verified(address(optimistic), 1);
        vm.prank(node);
        coordinator.deliverWithProof(id, OUTPUT, "");
        vm.warp(block.timestamp + WINDOW + 1);
        vm.prank(address(consumer)); // the output is public in the delivery's calldata
        coordinator.finalizeDelivery(id, node, OUTPUT);
        assertEq(consumer.lastOutput(), OUTPUT, "handed over");
        assertEq(coordinator.balanceOf(address(0), node), FEE, "the node is paid all the same");
    }

    function testCannotFinalizeWithoutDelivering() public {
        uint256 id = _verified(address(optimistic), 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NothingPending.selector, id, node));
        vm.prank(node);
        coordinator.finalizeDelivery(id, node, OUTPUT);
    }
}

contract CoordinatorLateVerdictTest is CoordinatorTest {
    function testARejectionAfterTheRequestClosedIsRefunded() public {
        OptimisticVerifier slow = new OptimisticVerifier(coordinator, 3 hours); // window outlives the deadline
        vm.prank(owner);
        registry.setVerifier(address(slow), true);
        ICoordinator.RequestParams memory p = _params(1, FEE, address(0));
        uint256 id = consumer.requestVerified{value: FEE}(p, hex"01", address(slow));
        vm.prank(node);
        coordinator.deliverWithProof(id, hex"c0ffee", "");
        vm.warp(block.timestamp + 2 hours); // past the deadline, within the verdict window
        assertEq(coordinator.reclaim(id), 0, "the pending slot is not reclaimed");
        slow.judge(id, node, false);
        assertEq(
            coordinator.balanceOf(address(0), address(consumer)),
            FEE,
            "refunded once nobody can take the slot"
        );
        assertEq(address(coordinator).balance, FEE, "and nothing is stranded");
        assertEq(consumer.failures(), 1, "the reclaim owed its error callback to the rejection");
    }
}
