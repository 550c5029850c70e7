// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConsensusTest} from "./utils/ConsensusBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../src/interfaces/IConsensus.sol";
import {IEscrow} from "../src/interfaces/IEscrow.sol";

/// @notice Consensus requests: making them, quorum, payment, refunds, dissent, no quorum.
contract ConsensusRequestTest is ConsensusTest {
    bytes internal constant ANSWER = hex"c0ffee";
    bytes internal constant OTHER = hex"baddad";

    function testCanRequestConsensus() public {
        ICoordinator.RequestParams memory p = _params(3, FEE, address(0));
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestCreated(
            1,
            MODEL,
            address(asker),
            hex"01",
            address(0),
            FEE,
            GAS_LIMIT,
            3,
            p.deadline,
            coordinator.consensusModule()
        );
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.ConsensusRequested(1, 2, uint64(block.timestamp) + WINDOW, bytes32(0));
        uint256 id = asker.ask{value: 3 * FEE}(p, hex"01", _consensus(2));
        (
            uint16 quorum,
            uint16 commits,
            uint16 reveals,
            uint64 commitDeadline,
            bool revealOpen,,
            bytes32 agreed
        ) = cons.consensusOf(id);
        assertEq(quorum, 2, "quorum");
        assertEq(commits + reveals, 0, "no votes");
        assertEq(commitDeadline, block.timestamp + WINDOW, "commit deadline");
        assertFalse(revealOpen, "commit phase first");
        assertEq(agreed, bytes32(0), "nothing agreed");
        (address verifier, bytes32 modelId,,) = coordinator.verificationOf(id);
        assertEq(verifier, coordinator.consensusModule(), "the module is the verifier");
        assertEq(modelId, MODEL, "model id stored");
        assertEq(address(coordinator).balance, 3 * FEE, "escrowed at the coordinator");
    }

    function testCanReachQuorumTwoOfThree() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        _commit(id, node3, ANSWER);
        assertFalse(_reveal(id, node, ANSWER), "one reveal is no quorum");
        assertEq(asker.results(id), 0, "no callback before quorum");

        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestFulfilled(id, node, keccak256(ANSWER), true, FEE);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.RequestFulfilled(id, node2, keccak256(ANSWER), true, FEE);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.ConsensusReached(id, keccak256(ANSWER), 2, FEE, true);
        assertTrue(_reveal(id, node2, ANSWER), "the second agreeing reveal reaches quorum");

        assertEq(asker.results(id), 1, "one callback");
        assertEq(asker.lastOutput(), ANSWER, "the agreed output");
        assertEq(asker.lastNode(), node2, "from the node that reached quorum");
        assertEq(_balance(node), FEE, "first agreeing node paid");
        assertEq(_balance(node2), FEE, "second agreeing node paid");
        assertEq(_balance(address(asker)), FEE, "one slot refunded");
        ICoordinator.RequestView memory r = coordinator.getRequest(id);
        assertEq(uint8(r.status), uint8(ICoordinator.Status.Fulfilled), "fulfilled");
        assertEq(r.delivered, 2, "delivered = quorum");
        (,,,,,, bytes32 agreed) = cons.consensusOf(id);
        assertEq(agreed, keccak256(ANSWER), "agreed hash");

        // The third node answers after quorum: it earns nothing.
        vm.expectRevert(_closed(id, ICoordinator.Status.Fulfilled));
        _reveal(id, node3, ANSWER);
        assertEq(_balance(node3), 0, "late node unpaid");
        assertEq(address(coordinator).balance, 3 * FEE, "escrow = credited balances");
    }

    function testFuzzQuorumPaysExactlyTheAgreeingNodes(
        uint16 n,
        uint16 k,
        uint256 dissentBits,
        bytes memory answer,
        uint16 bps
    ) public {
        n = uint16(bound(n, 1, 16));
        k = uint16(bound(k, 1, n));
        bps = uint16(bound(bps, 0, 1_000));
        if (answer.length > 256) answer = abi.encode(keccak256(answer));
        bytes memory other = abi.encodePacked(answer, hex"01");
        vm.prank(owner);
        coordinator.setProtocolFee(bps, owner);
        uint256 id = _ask(n, k);
        for (uint256 i; i < n; ++i) {
            _commit(id, voters[i], (dissentBits >> i) & 1 == 1 ? other : answer);
        }
        (bool reached, bool honestWon) = _revealAll(id, n, k, dissentBits, answer, other);
        if (reached) {
            assertEq(asker.results(id), 1, "one callback");
            assertEq(asker.outputHashOf(id), keccak256(honestWon ? answer : other), "winning output");
            _checkPaid(n, k, dissentBits, honestWon, FEE - FEE * bps / 10_000);
            assertEq(_balance(address(asker)), (n - k) * FEE, "the other slots refunded");
        } else {
            vm.warp(block.timestamp + 1 hours + 1);
            assertEq(coordinator.reclaim(id), n * FEE, "every slot refunded");
            assertEq(asker.errors(id), 1, "one error callback");
        }
        uint256 held = _balance(address(asker)) + _balance(owner);
        for (uint256 i; i < n; ++i) {
            held += _balance(voters[i]);
        }
        assertEq(held, n * FEE, "escrow conserved");
    }

    /// @dev Reveals in order, checking each against a reference model: the first output to gather k reveals wins.
    function _revealAll(
        uint256 id,
        uint16 n,
        uint16 k,
        uint256 dissentBits,
        bytes memory answer,
        bytes memory other
    ) internal returns (bool reached, bool honestWon) {
        uint256 honest;
        uint256 dissent;
        for (uint256 i; i < n && !reached; ++i) {
            bool dissents = (dissentBits >> i) & 1 == 1;
            dissents ? ++dissent : ++honest;
            reached = honest == k || dissent == k;
            assertEq(_reveal(id, voters[i], dissents ? other : answer), reached, "quorum as modelled");
        }
        honestWon = honest == k;
    }

    function _checkPaid(uint16 n, uint16 k, uint256 dissentBits, bool honestWon, uint256 earned)
        internal
        view
    {
        uint256 paid;
        for (uint256 i; i < n; ++i) {
            if (_balance(voters[i]) == 0) continue;
            ++paid;
            assertEq(_balance(voters[i]), earned, "fee less the cut");
            assertTrue(((dissentBits >> i) & 1 == 1) != honestWon, "only agreeing nodes paid");
        }
        if (earned != 0) assertEq(paid, k, "exactly the quorum paid");
    }

    function testDissenterIsUnpaidAndNamed() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, OTHER);
        _commit(id, node3, ANSWER);
        _reveal(id, node, ANSWER);
        _reveal(id, node2, OTHER);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.Dissented(id, node2, keccak256(OTHER));
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.ConsensusReached(id, keccak256(ANSWER), 2, FEE, true);
        assertTrue(_reveal(id, node3, ANSWER), "honest answer reaches quorum");
        assertEq(asker.lastOutput(), ANSWER, "the honest answer wins");
        assertEq(_balance(node2), 0, "dissenter unpaid");
        assertEq(_balance(node) + _balance(node3), 2 * FEE, "agreeing nodes paid");
        (, bytes32 outputHash, bool revealed) = cons.voteOf(id, node2);
        assertTrue(revealed, "dissenter revealed");
        assertEq(outputHash, keccak256(OTHER), "its hash on record");
    }

    function testProtocolCutIsTakenFromEachPaidNode() public {
        vm.prank(owner);
        coordinator.setProtocolFee(500, owner);
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        _commit(id, node3, ANSWER);
        _reveal(id, node, ANSWER);
        _reveal(id, node2, ANSWER);
        assertEq(_balance(node), FEE * 95 / 100, "node's share");
        assertEq(_balance(owner), 2 * (FEE * 5 / 100), "protocol cut of two payments");
        assertEq(_balance(address(asker)), FEE, "refund is the whole fee");
    }

    function testARevertingCallbackStillPaysTheQuorum() public {
        asker.setRevertCallbacks(true);
        uint256 id = _ask(2, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        _reveal(id, node, ANSWER);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit IConsensus.ConsensusReached(id, keccak256(ANSWER), 2, 0, false);
        _reveal(id, node2, ANSWER);
        assertEq(_balance(node) + _balance(node2), 2 * FEE, "paid");
    }

    function testNoQuorumFromThreeAnswersIsReclaimedInFull() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, hex"01");
        _commit(id, node2, hex"02");
        _commit(id, node3, hex"03");
        assertFalse(_reveal(id, node, hex"01"), "no quorum");
        assertFalse(_reveal(id, node2, hex"02"), "no quorum");
        assertFalse(_reveal(id, node3, hex"03"), "no quorum");
        vm.warp(block.timestamp + 1 hours + 1);
        vm.expectEmit(true, true, true, true, address(coordinator));
        emit ICoordinator.Reclaimed(id, address(asker), 3, 3 * FEE, true);
        coordinator.reclaim(id);
        assertEq(asker.errors(id), 1, "one error callback");
        assertEq(asker.lastReason(), "deadline: no quorum (3 of 3 revealed, 2 needed)", "the reason says why");
        assertEq(asker.results(id), 0, "no result");
        assertEq(_balance(address(asker)), 3 * FEE, "all slots refunded");
        assertEq(_balance(node) + _balance(node2) + _balance(node3), 0, "nobody paid");
        vm.expectRevert(_closed(id, ICoordinator.Status.Reclaimed));
        coordinator.reclaim(id);
    }

    function testTooFewCommitsIsReclaimedInFull() public {
        uint256 id = _ask(3, 2);
        _commit(id, node, ANSWER);
        vm.warp(block.timestamp + WINDOW + 1);
        assertFalse(_reveal(id, node, ANSWER), "one vote");
        vm.expectRevert(
            abi.encodeWithSelector(
                ICoordinator.DeadlineNotPassed.selector, id, block.timestamp - WINDOW - 1 + 1 hours
            )
        );
        coordinator.reclaim(id);
        vm.warp(block.timestamp + 1 hours);
        assertEq(coordinator.reclaim(id), 3 * FEE, "every slot refunded");
        assertEq(asker.errors(id), 1, "one error callback");
        assertEq(asker.lastReason(), "deadline: no quorum (1 of 3 revealed, 2 needed)", "the reason says why");
        assertEq(_balance(node), 0, "a lone vote earns nothing");
    }

    function testCannotRevealAfterTheDeadline() public {
        uint256 id = _ask(2, 2);
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        vm.warp(block.timestamp + 1 hours + 1);
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.DeadlinePassed.selector, id, block.timestamp - 1));
        _reveal(id, node, ANSWER);
    }

    function testCannotRequestWithABadQuorumOrWindow() public {
        ICoordinator.RequestParams memory p = _params(3, FEE, address(0));
        vm.expectRevert(abi.encodeWithSelector(IConsensus.InvalidQuorum.selector, 0, 3));
        asker.ask{value: 3 * FEE}(p, hex"01", _consensus(0));
        vm.expectRevert(abi.encodeWithSelector(IConsensus.InvalidQuorum.selector, 4, 3));
        asker.ask{value: 3 * FEE}(p, hex"01", _consensus(4));
        IConsensus.ConsensusParams memory c = _consensus(2);
        c.commitWindow = 0;
        vm.expectRevert(abi.encodeWithSelector(IConsensus.InvalidCommitWindow.selector, 0, p.deadline));
        asker.ask{value: 3 * FEE}(p, hex"01", c);
        c.commitWindow = 1 hours;
        vm.expectRevert(abi.encodeWithSelector(IConsensus.InvalidCommitWindow.selector, 1 hours, p.deadline));
        asker.ask{value: 3 * FEE}(p, hex"01", c);
        vm.prank(owner);
        coordinator.setLimits(0, 2_000_000, 16 * 1024, 16 * 1024, 32, 2, 30 days);
        p.redundancy = 17;
        vm.expectRevert(abi.encodeWithSelector(ICoordinator.InvalidRedundancy.selector, 17, 16));
        asker.ask{value: 17 * FEE}(p, hex"01", _consensus(2));
        p.redundancy = 2;
        vm.expectRevert(abi.encodeWithSelector(IEscrow.WrongPayment.selector, FEE, 2 * FEE));
        cons.requestConsensusInference{value: FEE}(p, hex"01", _consensus(2));
    }

    function testFuzzRevealOpensWhenAllCommittedOrTheWindowEnds(uint16 n, uint16 committed) public {
        n = uint16(bound(n, 1, 16));
        committed = uint16(bound(committed, 1, n));
        uint256 id = _ask(n, n);
        for (uint256 i; i < committed; ++i) {
            _commit(id, voters[i], ANSWER);
        }
        (,,,, bool open,,) = cons.consensusOf(id);
        assertEq(open, committed == n, "open once everyone committed");
        if (committed < n) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    IConsensus.RevealNotOpen.selector, id, block.timestamp + WINDOW, committed
                )
            );
            _reveal(id, voters[0], ANSWER);
            vm.warp(block.timestamp + WINDOW + 1);
            (,,,, open,,) = cons.consensusOf(id);
            assertTrue(open, "open after the commit window");
        }
        assertEq(_reveal(id, voters[0], ANSWER), n == 1, "a lone quorum of one settles at once");
    }
}
