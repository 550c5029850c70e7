// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConsensusTest} from "./utils/ConsensusBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../src/interfaces/IConsensus.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";
import {ConsensusModule} from "../src/ConsensusModule.sol";

/// @notice What a consensus request refuses: copied votes, double votes, wrong digests, plain deliveries, cancels after
/// a commit, direct calls of the module; and batches that skip their bad items.
contract ConsensusGuardTest is ConsensusTest {
    bytes internal constant ANSWER = hex"c0ffee";
    bytes32 internal constant DIGEST = keccak256("weights-v1");
    bytes32 internal constant OTHER_DIGEST = keccak256("weights-v2");

    function testFuzzCommitmentBindsChainCoordinatorRequestAndNode(bytes memory output, bytes32 salt) public {
        uint256 id = _ask(3, 2);
        bytes32 h = keccak256(output);
        bytes32 c = cons.commitmentFor(id, node, h, salt);
        assertEq(c, _commitment(id, node, output, salt), "the documented formula");
        assertTrue(c != cons.commitmentFor(id, node2, h, salt), "bound to the node");
        assertTrue(c != cons.commitmentFor(id + 1, node, h, salt), "bound to the request");
        vm.chainId(block.chainid + 1);
        assertTrue(c != cons.commitmentFor(id, node, h, salt), "bound to the chain");
    }

    function testCopiedCommitmentCannotBeRevealedByTheCopier() public {
        uint256 id = _ask(3, 2);
        bytes32 salt = _salt(node, ANSWER);
        bytes32 c = _commitment(id, node, ANSWER, salt);
        vm.prank(node);
        cons.commit(id, c);
        vm.prank(node2); // replays node's commitment
        cons.commit(id, c);
        _commit(id, node3, hex"0bad");
        _reveal(id, node, ANSWER);
        // node2 now knows output and salt, but the commitment names node.
        vm.expectRevert(
            abi.encodeWithSelector(
                IConsensus.CommitmentMismatch.selector, id, c, _commitment(id, node2, ANSWER, salt)
            )
        );
        vm.prank(node2);
        cons.reveal(id, ANSWER, salt);
        assertEq(_balance(node2), 0, "the copier earns nothing");
    }

    function testCannotCommitOnceRevealsBegan() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        uint64 commitDeadline = uint64(block.timestamp) + WINDOW;
        vm.warp(commitDeadline + 1);
        _reveal(id, node, ANSWER);
        // node3 read the revealed output and wants to vote for it now.
        vm.expectRevert(abi.encodeWithSelector(IConsensus.CommitClosed.selector, id, commitDeadline, 2));
        _commit(id, node3, ANSWER);
        assertTrue(_reveal(id, node2, ANSWER), "the two committed nodes settle it");
        assertEq(_balance(node3), 0, "the latecomer earns nothing");
    }

    function testCannotCommitOnceEveryoneCommitted() public {
        uint256 id = _ask(2, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        vm.expectRevert(
            abi.encodeWithSelector(IConsensus.CommitClosed.selector, id, block.timestamp + WINDOW, 2)
        );
        _commit(id, node3, ANSWER);
    }

    function testCannotCommitTwice() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        _expectRevert(IConsensus.AlreadyCommitted.selector, id, node);
        _commit(id, node, hex"02");
    }

    function testCannotRevealWithoutACommitOrTwice() public {
        uint256 id = _ask(2, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, hex"02");
        _expectRevert(IConsensus.NotCommitted.selector, id, node3);
        _reveal(id, node3, ANSWER);
        _reveal(id, node, ANSWER);
        _expectRevert(IConsensus.AlreadyRevealed.selector, id, node);
        _reveal(id, node, ANSWER);
        // The vote's slot now holds the output hash: a second reveal is still refused as such, whatever it opens.
        _expectRevert(IConsensus.AlreadyRevealed.selector, id, node);
        _reveal(id, node, hex"02");
        (bytes32 commitment, bytes32 outputHash, bool revealed) = cons.voteOf(id, node);
        assertEq(commitment, bytes32(0), "the commitment is read from its event once revealed");
        assertEq(outputHash, keccak256(ANSWER), "output hash");
        assertTrue(revealed, "revealed");
        (commitment, outputHash, revealed) = cons.voteOf(id, node2);
        assertEq(commitment, _commitment(id, node2, hex"02", _salt(node2, hex"02")), "still committed");
        assertEq(outputHash, bytes32(0), "not revealed");
        assertFalse(revealed, "not revealed");
    }

    function testCannotRevealOnceInactive() public {
        uint256 id = _ask(2, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        vm.prank(node);
        registry.beginUnbonding();
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, node));
        vm.prank(node);
        cons.reveal(id, ANSWER, _salt(node, ANSWER));
    }

    function testFuzzWrongSaltIsACommitmentMismatch(bytes32 wrongSalt) public {
        uint256 id = _ask(1, 1);
        _commit(id, node, ANSWER);
        bytes32 salt = _salt(node, ANSWER);
        if (wrongSalt == salt) wrongSalt = ~salt;
        vm.expectRevert(
            abi.encodeWithSelector(
                IConsensus.CommitmentMismatch.selector,
                id,
                _commitment(id, node, ANSWER, salt),
                _commitment(id, node, ANSWER, wrongSalt)
            )
        );
        vm.prank(node);
        cons.reveal(id, ANSWER, wrongSalt);
    }

    function testCannotCommitZeroOrAsAnInactiveNode() public {
        uint256 id = _ask(2, 2);
        vm.expectRevert(abi.encodeWithSelector(IConsensus.ZeroCommitment.selector, id));
        vm.prank(node);
        cons.commit(id, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, stranger));
        vm.prank(stranger);
        cons.commit(id, bytes32(uint256(1)));
    }

    function testCannotVoteOnAPlainOrUnknownRequest() public {
        uint256 plain = _requestRedundant(2, FEE);
        vm.expectRevert(abi.encodeWithSelector(IConsensus.NotConsensusRequest.selector, plain));
        _commit(plain, node, ANSWER);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.UnknownRequest.selector, 99));
        _commit(99, node, ANSWER);
        vm.expectRevert(abi.encodeWithSelector(IConsensus.NotConsensusRequest.selector, plain));
        cons.consensusOf(plain);
    }

    function testRequiredDigestAdmitsOnlyMatchingNodes() public {
        vm.prank(node);
        registry.commitModel(MODEL, DIGEST);
        vm.prank(node2);
        registry.commitModel(MODEL, OTHER_DIGEST);
        uint256 id = _askWithDigest(3, 2, DIGEST);
        (,,,,, bytes32 required,) = cons.consensusOf(id);
        assertEq(required, DIGEST, "required digest on record");
        vm.expectRevert(
            abi.encodeWithSelector(IConsensus.ModelDigestMismatch.selector, id, DIGEST, OTHER_DIGEST)
        );
        _commit(id, node2, ANSWER);
        vm.expectRevert(
            abi.encodeWithSelector(IConsensus.ModelDigestMismatch.selector, id, DIGEST, bytes32(0))
        );
        _commit(id, node3, ANSWER);
        _commit(id, node, ANSWER);
        vm.prank(node3);
        registry.commitModel(MODEL, DIGEST);
        _commit(id, node3, ANSWER);
        vm.warp(block.timestamp + WINDOW + 1);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.Revealed(id, node, keccak256(ANSWER), DIGEST);
        _reveal(id, node, ANSWER);
        // node3 switched models after committing: its reveal is refused.
        vm.prank(node3);
        registry.commitModel(MODEL, OTHER_DIGEST);
        vm.expectRevert(
            abi.encodeWithSelector(IConsensus.ModelDigestMismatch.selector, id, DIGEST, OTHER_DIGEST)
        );
        _reveal(id, node3, ANSWER);
    }

    function testRevealedCarriesTheNodesDigestWhenNoneIsRequired() public {
        vm.prank(node);
        registry.commitModel(MODEL, OTHER_DIGEST);
        uint256 id = _ask(1, 1);
        _commit(id, node, ANSWER);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.Revealed(id, node, keccak256(ANSWER), OTHER_DIGEST);
        _reveal(id, node, ANSWER);
        _commit(_ask(1, 1), node2, ANSWER); // a node without a digest may vote too
    }

    function testCancelIsRefusedOnceANodeCommitted() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodesAlreadyActed.selector, id, 0, 0, 1));
        asker.cancel(id);
        uint256 untouched = _ask(3, 2);
        assertEq(asker.cancel(untouched), 3 * FEE, "cancel before any commit refunds all");
        vm.expectRevert(_closed(untouched, ICoordinator.Status.Cancelled));
        _commit(untouched, node, ANSWER);
    }

    function testPlainDeliveriesAreRefused() public {
        uint256 id = _ask(3, 2);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.ConsensusRequired.selector, id));
        vm.prank(node);
        coordinator.deliver(id, ANSWER);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.ConsensusRequired.selector, id));
        vm.prank(node);
        coordinator.deliverWithProof(id, ANSWER, "");
        ICoordinator.BatchItem[] memory items = new ICoordinator.BatchItem[](1);
        items[0] = ICoordinator.BatchItem({requestId: id, failed: false, data: ANSWER});
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliverySkipped(id, node, ICoordinator.ConsensusRequired.selector);
        vm.prank(node);
        assertEq(coordinator.deliverBatch(items), 0, "skipped");
    }

    function testTheModuleRefusesDirectCalls() public {
        IConsensus module = IConsensus(coordinator.consensusModule());
        vm.expectRevert(IConsensus.NotDelegated.selector);
        vm.prank(node);
        module.commit(1, bytes32(uint256(1)));
        vm.expectRevert(IConsensus.NotDelegated.selector);
        module.requestConsensusInference{value: FEE}(_params(1, FEE, address(0)), hex"01", _consensus(1));
        vm.expectRevert(IConsensus.NotDelegated.selector);
        module.consensusOf(1);
        vm.expectRevert(IConsensus.NotDelegated.selector);
        ConsensusModule(address(module))
            .settleConsensusItem(node, IConsensus.ConsensusItem(1, false, bytes32(0), ""));
        assertEq(address(ConsensusModule(address(module)).registry()), address(registry), "same registry");
    }

    function testCannotCallTheItemHookOrSendPlainEth() public {
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.Unauthorized.selector, address(this)));
        ConsensusModule(payable(address(coordinator)))
            .settleConsensusItem(node, IConsensus.ConsensusItem(1, false, bytes32(0), ""));
        (bool ok,) = address(coordinator).call{value: 1}("");
        assertFalse(ok, "plain ETH refused");
        (ok,) = address(coordinator).call(hex"deadbeef");
        assertFalse(ok, "unknown selector refused");
    }

    function testBatchSkipsBadItemsAndSettlesTheRest() public {
        uint256 id = _ask(2, 2);
        uint256 plain = _requestRedundant(1, FEE);
        IConsensus.ConsensusItem[] memory items = new IConsensus.ConsensusItem[](4);
        bytes32 salt = _salt(node, ANSWER);
        items[0] = IConsensus.ConsensusItem(id, false, _commitment(id, node, ANSWER, salt), "");
        items[1] = IConsensus.ConsensusItem(id, false, bytes32(0), "");
        items[2] = IConsensus.ConsensusItem(plain, false, bytes32(uint256(2)), "");
        items[3] = IConsensus.ConsensusItem(id, true, salt, ANSWER); // reveal not open yet
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliverySkipped(id, node, IConsensus.ZeroCommitment.selector);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliverySkipped(plain, node, IConsensus.NotConsensusRequest.selector);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.DeliverySkipped(id, node, IConsensus.RevealNotOpen.selector);
        vm.prank(node);
        assertEq(cons.consensusBatch(items), 1, "only the commit settled");
        (bytes32 commitment,,) = cons.voteOf(id, node);
        assertEq(commitment, items[0].commitmentOrSalt, "commit recorded");

        _commit(id, node2, ANSWER);
        _reveal(id, node2, ANSWER);
        IConsensus.ConsensusItem[] memory reveal = new IConsensus.ConsensusItem[](1);
        reveal[0] = items[3];
        vm.prank(node);
        assertEq(cons.consensusBatch(reveal), 1, "the batched reveal reaches quorum");
        assertEq(asker.results(id), 1, "called back once");
        assertEq(_balance(node), FEE, "paid through the batch");
    }

    function testFuzzBatchSettlesExactlyTheValidItems(uint8 count, uint256 badBits) public {
        count = uint8(bound(count, 1, 8));
        uint256 id = _ask(count, count);
        IConsensus.ConsensusItem[] memory items = new IConsensus.ConsensusItem[](count);
        uint256 valid;
        for (uint256 i; i < count; ++i) {
            bool bad = (badBits >> i) & 1 == 1;
            // The same node commits once: only the first good item can settle.
            items[i] = IConsensus.ConsensusItem(id, false, bad ? bytes32(0) : bytes32(i + 2), "");
            if (!bad && valid == 0) valid = 1;
        }
        vm.prank(node);
        assertEq(cons.consensusBatch(items), valid, "settled = valid");
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.NodeNotActive.selector, stranger));
        vm.prank(stranger);
        cons.consensusBatch(items);
    }

    function testRegistryOfTheModuleIsTheCoordinators() public view {
        assertEq(
            address(INodeRegistry(address(ConsensusModule(coordinator.consensusModule()).registry()))),
            address(coordinator.registry()),
            "one registry"
        );
    }
}
