// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConsensusTest} from "./utils/ConsensusBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../src/interfaces/IConsensus.sol";

/// @notice `voteOf` and `consensusOf` stay exact although the reveal that reaches a quorum of 2 or more is not listed
/// among the revealers: for the quorum revealer, an earlier agreeing one, a dissenter, a committed node that never
/// revealed, a node that never committed, and a node whose commitment is the agreed output hash.
contract ConsensusViewsTest is ConsensusTest {
    bytes internal constant ANSWER = hex"c0ffee";
    bytes internal constant OTHER = hex"0bad";

    function _assertVote(uint256 id, address who, bytes32 commitment, bytes32 outputHash, bool revealed)
        internal
        view
    {
        (bytes32 c, bytes32 h, bool r) = cons.voteOf(id, who);
        assertEq(c, commitment, "commitment");
        assertEq(h, outputHash, "outputHash");
        assertEq(r, revealed, "revealed");
    }

    function _agreed(uint256 id) internal view returns (uint16 reveals, bytes32 agreedHash) {
        (,, reveals,,,, agreedHash) = cons.consensusOf(id);
    }

    function testVoteOfEveryKindOfNodeAfterQuorum() public {
        uint256 id = _ask(4, 2);
        address idle = voters[3];
        _commit(id, node, ANSWER);
        _commit(id, node2, OTHER);
        _commit(id, node3, ANSWER);
        _commit(id, idle, ANSWER);
        assertFalse(_reveal(id, node, ANSWER), "below quorum");
        assertFalse(_reveal(id, node2, OTHER), "dissent");
        assertTrue(_reveal(id, node3, ANSWER), "node3 reaches the quorum");

        _assertVote(id, node, 0, keccak256(ANSWER), true);
        _assertVote(id, node2, 0, keccak256(OTHER), true); // the dissenter
        _assertVote(id, node3, 0, keccak256(ANSWER), true); // the quorum revealer, not listed
        _assertVote(id, idle, _commitment(id, idle, ANSWER, _salt(idle, ANSWER)), 0, false);
        _assertVote(id, stranger, 0, 0, false);
        _assertVote(id, address(0), 0, 0, false);
        (uint16 reveals, bytes32 agreedHash) = _agreed(id);
        assertEq(reveals, 3, "the quorum revealer counts");
        assertEq(agreedHash, keccak256(ANSWER), "agreed hash");
        (,,, uint16 pending) = coordinator.verificationOf(id);
        assertEq(pending, 0, "a consensus request awaits no verdict");
        assertEq(_balance(node), FEE, "earlier agreeing revealer paid");
        assertEq(_balance(node3), FEE, "quorum revealer paid");
        assertEq(_balance(node2), 0, "dissenter unpaid");

        // Every reveal after quorum is refused as closed, the quorum revealer's second one too.
        vm.expectRevert(
            abi.encodeWithSelector(ICoordinator.RequestClosed.selector, id, ICoordinator.Status.Fulfilled)
        );
        _reveal(id, node3, ANSWER);
        vm.expectRevert(
            abi.encodeWithSelector(ICoordinator.RequestClosed.selector, id, ICoordinator.Status.Fulfilled)
        );
        _reveal(id, idle, ANSWER);
    }

    function testAgreedHashForQuorumOneTwoAndThree() public {
        for (uint16 k = 1; k <= 3; ++k) {
            uint256 id = _ask(k + 1, k);
            // With a quorum above 1, a dissenter reveals first.
            bool dissent = k > 1;
            for (uint256 i; i <= k; ++i) {
                _commit(id, voters[i], dissent && i == 0 ? OTHER : ANSWER);
            }
            uint256 first = dissent ? 0 : 1;
            if (dissent) assertFalse(_reveal(id, voters[0], OTHER), "dissent");
            for (uint256 i = 1; i <= k; ++i) {
                (, bytes32 before) = _agreed(id);
                assertEq(before, bytes32(0), "no agreed hash before quorum");
                assertEq(_reveal(id, voters[i], ANSWER), i == k, "the k-th agreeing reveal settles");
            }
            (uint16 reveals, bytes32 agreedHash) = _agreed(id);
            assertEq(reveals, k + 1 - first, "every reveal counted");
            assertEq(agreedHash, keccak256(ANSWER), "agreed hash");
            for (uint256 i = 1; i <= k; ++i) {
                _assertVote(id, voters[i], 0, keccak256(ANSWER), true);
            }
            if (dissent) {
                _assertVote(id, voters[0], 0, keccak256(OTHER), true);
            } else {
                _assertVote(
                    id, voters[0], _commitment(id, voters[0], ANSWER, _salt(voters[0], ANSWER)), 0, false
                );
            }
        }
    }

    function testCommitmentEqualToTheAgreedHashDoesNotReadAsRevealed() public {
        uint256 id = _ask(3, 2);
        vm.prank(node3);
        cons.commit(id, keccak256(ANSWER));
        _commit(id, node, ANSWER);
        _commit(id, node2, ANSWER);
        _reveal(id, node, ANSWER);
        assertTrue(_reveal(id, node2, ANSWER), "quorum");
        _assertVote(id, node3, keccak256(ANSWER), 0, false);
        (, bytes32 agreedHash) = _agreed(id);
        assertEq(agreedHash, keccak256(ANSWER), "agreed hash");
    }

    function testTheQuorumMarkIsNoCommitment() public {
        uint256 id = _ask(2, 2);
        vm.expectRevert(abi.encodeWithSelector(IConsensus.ZeroCommitment.selector, id));
        vm.prank(node);
        cons.commit(id, bytes32(uint256(1)));
    }

    /// @dev Random answers (ANSWER or OTHER per voter), revealed in order until the quorum: every vote reads what
    /// happened.
    function testFuzzVoteOfIsExact(uint8 nSeed, uint8 kSeed, uint16 otherBits, uint16 revealBits) public {
        uint16 n = uint16(bound(nSeed, 1, 16));
        uint16 k = uint16(bound(kSeed, 1, n));
        uint256 id = _ask(n, k);
        for (uint256 i; i < n; ++i) {
            _commit(id, voters[i], (otherBits >> i) & 1 == 1 ? OTHER : ANSWER);
        }
        bool[16] memory revealed;
        bytes32 settled;
        uint16 reveals;
        for (uint256 i; i < n && settled == 0; ++i) {
            if ((revealBits >> i) & 1 == 1) continue;
            bytes memory out = (otherBits >> i) & 1 == 1 ? OTHER : ANSWER;
            revealed[i] = true;
            ++reveals;
            if (_reveal(id, voters[i], out)) settled = keccak256(out);
        }
        (uint16 r, bytes32 agreedHash) = _agreed(id);
        assertEq(r, reveals, "reveals");
        assertEq(agreedHash, settled, "agreed hash");
        for (uint256 i; i < n; ++i) {
            bytes memory out = (otherBits >> i) & 1 == 1 ? OTHER : ANSWER;
            if (revealed[i]) {
                _assertVote(id, voters[i], 0, keccak256(out), true);
            } else {
                _assertVote(id, voters[i], _commitment(id, voters[i], out, _salt(voters[i], out)), 0, false);
            }
        }
    }
}
