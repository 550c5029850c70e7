// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorCore} from "./CoordinatorCore.sol";
import {ICoordinator} from "./interfaces/ICoordinator.sol";
import {IConsensus} from "./interfaces/IConsensus.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title ConsensusModule
/// @notice k-of-n consensus requests with commit-reveal (`IConsensus`), run by the Coordinator's `fallback` through
/// DELEGATECALL: in the Coordinator's storage, escrow, request ids and events. The Coordinator deploys it.
/// @dev Guarantees:
/// - Called directly (not by DELEGATECALL from the Coordinator that deployed it) every `IConsensus` function reverts
///   with `NotDelegated`. The Coordinator functions it inherits for the shared layout act, when called directly, only
///   on this contract's own storage, which holds no request and no escrow.
/// - Copy-proof: a commitment binds chain, Coordinator, request, node and a secret salt; commits close before any
///   reveal is accepted (all n committed, or the commit deadline passed), so a node can neither reuse another's
///   commitment, nor guess a low-entropy output from it, nor commit after seeing a reveal.
/// - The consumer's `rawFulfill` runs exactly once, when `quorum` reveals carry the same output hash, with exactly
///   `callbackGasLimit` gas, after every state change; exactly those `quorum` nodes are paid, each once; the other
///   `redundancy - quorum` slots are refunded at that moment. Without a quorum, `reclaim` (Coordinator) refunds all n.
/// - Bounded work: at most `MAX_CONSENSUS_NODES` voters, so a reveal walks at most 15 earlier reveals.
/// Storage: the consensus record shares the request's `Verification` slot 0 (one slot for verifier, quorum, counters,
/// commit deadline); a vote is one slot: the commitment, overwritten at the reveal by the output hash (the commitment
/// stays in the `Committed` event; `voteOf` reads 0 for it afterwards). Revealers are kept in a fixed array of 16 (one
/// new slot per reveal) rather than a linked list, which would need a pointer slot per reveal plus a head; the walk over
/// it counts agreement (≤ 15 reads, instead of a per-hash counter: a new slot per distinct output) and tells a second
/// reveal by the node's address (`AlreadyRevealed`). A reveal makes one registry call, `activeDigestFor`, for both the
/// active check and the digest it reports.
/// The reveal that reaches a quorum of 2 or more is not added to the revealers (no new slot): its vote becomes
/// `QUORUM_VOTE` (a commitment may not be that value, so it marks exactly that node as revealed), and the record's
/// `pending` field (unused by consensus requests, in the slot that reveal writes anyway) holds 1 + the index of an
/// earlier revealer that agreed, whose vote is the agreed output hash. After quorum every reveal fails with
/// `RequestClosed`, so the unlisted node needs no `AlreadyRevealed` check. A quorum of 1 lists its one revealer.
contract ConsensusModule is CoordinatorCore, IConsensus {
    /// @notice Most nodes a consensus request may ask for (bounds the walk at quorum).
    uint16 public constant MAX_CONSENSUS_NODES = 16;
    /// @dev The vote of the node whose reveal reached a quorum of 2 or more (its output hash is the agreed one);
    /// `commit` refuses it as a commitment (`ZeroCommitment`).
    bytes32 internal constant QUORUM_VOTE = bytes32(uint256(1));

    /// @dev The Coordinator that deployed this module: the only context these functions run in.
    address private immutable _coordinator;
    /// @dev This module's own address: the `verifier` of every consensus request (the Coordinator's
    /// `consensusModule`); under DELEGATECALL `address(this)` is the Coordinator's.
    address private immutable _module = address(this);

    /// @notice Deployed by the Coordinator's constructor with its registry; owns nothing itself.
    constructor(INodeRegistry registry_) CoordinatorCore(address(0), registry_) {
        _coordinator = msg.sender;
    }

    modifier onlyDelegated() {
        if (address(this) != _coordinator) revert NotDelegated();
        _;
    }

    // -------------------------------------------------------------------------------------------- requests

    /// @inheritdoc IConsensus
    function requestConsensusInference(
        ICoordinator.RequestParams calldata params,
        bytes calldata input,
        ConsensusParams calldata consensus
    ) external payable onlyDelegated returns (uint256 requestId) {
        uint16 n = params.redundancy;
        if (n > MAX_CONSENSUS_NODES) revert ICoordinator.InvalidRedundancy(n, MAX_CONSENSUS_NODES);
        requestId = _request(params, input, _module);
        uint16 quorum = consensus.quorum;
        if (quorum == 0 || quorum > n) revert InvalidQuorum(quorum, n);
        uint64 commitDeadline = uint64(block.timestamp) + consensus.commitWindow;
        if (consensus.commitWindow == 0 || commitDeadline >= params.deadline) {
            revert InvalidCommitWindow(consensus.commitWindow, params.deadline);
        }
        bytes32 digest = consensus.modelDigest;
        Verification storage v = _verifications[requestId];
        v.verifier = _module;
        // casting to 'uint8' is safe because quorum ≤ redundancy ≤ MAX_CONSENSUS_NODES; to 'uint40' because the
        // commit deadline is before the request's deadline, itself at most MAX_DEADLINE_WINDOW ahead
        // forge-lint: disable-next-line(unsafe-typecast)
        v.quorum = uint8(quorum);
        // forge-lint: disable-next-line(unsafe-typecast)
        v.commitDeadline = uint40(commitDeadline);
        v.digestRequired = digest != 0;
        v.modelId = params.modelId;
        if (digest != 0) _requiredDigest[requestId] = digest;
        emit ConsensusRequested(requestId, quorum, commitDeadline, digest);
    }

    // -------------------------------------------------------------------------------------------- voting

    /// @inheritdoc IConsensus
    function commit(uint256 requestId, bytes32 commitment) external onlyDelegated {
        if (!registry.isActive(msg.sender)) revert ICoordinator.NodeNotActive(msg.sender);
        _commit(requestId, msg.sender, commitment);
    }

    /// @inheritdoc IConsensus
    function reveal(uint256 requestId, bytes calldata output, bytes32 salt)
        external
        onlyDelegated
        returns (bool quorumReached)
    {
        return _reveal(requestId, msg.sender, output, salt);
    }

    /// @inheritdoc IConsensus
    function consensusBatch(ConsensusItem[] calldata items) external onlyDelegated returns (uint256 settled) {
        if (!registry.isActive(msg.sender)) revert ICoordinator.NodeNotActive(msg.sender);
        for (uint256 i; i < items.length; ++i) {
            // Each item runs in its own call frame (this Coordinator calling itself, back into this module): a bad
            // item reverts alone and is reported, the rest go on.
            try ConsensusModule(address(this)).settleConsensusItem(msg.sender, items[i]) {
                ++settled;
            } catch (bytes memory reason) {
                // casting to 'bytes4' is safe because it keeps the error selector, the first 4 bytes
                // forge-lint: disable-next-line(unsafe-typecast)
                emit ICoordinator.DeliverySkipped(items[i].requestId, msg.sender, bytes4(reason));
            }
        }
    }

    /// @notice One item of `consensusBatch`, for `node`; only the Coordinator itself may call it (reverts with
    /// `Unauthorized` otherwise).
    function settleConsensusItem(address node, ConsensusItem calldata item) external onlyDelegated {
        if (msg.sender != address(this)) revert ICoordinator.Unauthorized(msg.sender);
        if (item.reveal) _reveal(item.requestId, node, item.output, item.commitmentOrSalt);
        else _commit(item.requestId, node, item.commitmentOrSalt);
    }

    // --------------------------------------------------------------------------------------------- views

    /// @inheritdoc IConsensus
    function commitmentFor(uint256 requestId, address node, bytes32 outputHash, bytes32 salt)
        public
        view
        onlyDelegated
        returns (bytes32)
    {
        return keccak256(abi.encode(block.chainid, address(this), requestId, node, outputHash, salt));
    }

    /// @inheritdoc IConsensus
    function consensusOf(uint256 requestId)
        external
        view
        onlyDelegated
        returns (
            uint16 quorum,
            uint16 commits,
            uint16 reveals,
            uint64 commitDeadline,
            bool revealOpen,
            bytes32 modelDigest,
            bytes32 agreedHash
        )
    {
        Verification storage v = _consensusRecord(requestId);
        Request storage r = _requests[requestId];
        (quorum, commits, reveals, commitDeadline) = (v.quorum, v.commits, v.reveals, v.commitDeadline);
        revealOpen = r.status == ICoordinator.Status.Open && block.timestamp <= r.deadline
            && (commits == r.redundancy || block.timestamp > commitDeadline);
        modelDigest = _requiredDigest[requestId];
        if (r.status == ICoordinator.Status.Fulfilled) agreedHash = _agreedHash(requestId, v);
    }

    /// @inheritdoc IConsensus
    function voteOf(uint256 requestId, address node)
        external
        view
        onlyDelegated
        returns (bytes32 commitment, bytes32 outputHash, bool revealed)
    {
        bytes32 vote = _votes[requestId][node];
        if (vote == QUORUM_VOTE) {
            // The node whose reveal reached the quorum (not listed among the revealers).
            (revealed, outputHash) = (true, _agreedHash(requestId, _verifications[requestId]));
        } else if (vote != 0 && _listed(requestId, node)) {
            (revealed, outputHash) = (true, vote);
        } else {
            commitment = vote;
        }
    }

    // ------------------------------------------------------------------------------------------ internal

    /// @dev The open request `requestId` (before its deadline) and its consensus record.
    function _openConsensus(uint256 requestId)
        private
        view
        returns (Request storage r, Verification storage v)
    {
        r = _requests[requestId];
        ICoordinator.Status status = r.status;
        if (status == ICoordinator.Status.None) revert ICoordinator.UnknownRequest(requestId);
        v = _consensusRecord(requestId);
        if (status != ICoordinator.Status.Open) revert ICoordinator.RequestClosed(requestId, status);
        if (block.timestamp > r.deadline) revert ICoordinator.DeadlinePassed(requestId, r.deadline);
    }

    function _consensusRecord(uint256 requestId) private view returns (Verification storage v) {
        v = _verifications[requestId];
        if (v.verifier != _module) revert NotConsensusRequest(requestId);
    }

    function _commit(uint256 requestId, address node, bytes32 commitment) private {
        // 0 is no vote, 1 (`QUORUM_VOTE`) the vote that reached quorum; a real commitment is a keccak256 hash.
        if (uint256(commitment) <= uint256(QUORUM_VOTE)) revert ZeroCommitment(requestId);
        (Request storage r, Verification storage v) = _openConsensus(requestId);
        uint8 commits = v.commits;
        if (commits >= r.redundancy || block.timestamp > v.commitDeadline) {
            revert CommitClosed(requestId, v.commitDeadline, commits);
        }
        if (v.digestRequired) {
            bytes32 required = _requiredDigest[requestId];
            bytes32 d = registry.modelDigestOf(node, v.modelId);
            if (d != required) revert ModelDigestMismatch(requestId, required, d);
        }
        mapping(address => bytes32) storage votes = _votes[requestId];
        if (votes[node] != 0) revert AlreadyCommitted(requestId, node);
        votes[node] = commitment;
        v.commits = commits + 1;
        emit Committed(requestId, node, commitment);
    }

    function _reveal(uint256 requestId, address node, bytes calldata output, bytes32 salt)
        private
        returns (bool quorumReached)
    {
        bytes32 digest = _activeDigest(requestId, node);
        if (output.length > maxOutputBytes) {
            revert ICoordinator.OutputTooLarge(output.length, maxOutputBytes);
        }
        (Request storage r, Verification storage v) = _openConsensus(requestId);
        if (v.commits < r.redundancy && block.timestamp <= v.commitDeadline) {
            revert RevealNotOpen(requestId, v.commitDeadline, v.commits);
        }
        bytes32 outputHash = keccak256(output);
        uint256 earlier = v.reveals;
        (uint256 agreeing, uint256 agreeingAt) = _open(requestId, node, outputHash, salt, earlier);
        if (v.digestRequired) {
            bytes32 required = _requiredDigest[requestId];
            if (digest != required) revert ModelDigestMismatch(requestId, required, digest);
        }
        quorumReached = agreeing >= v.quorum;
        // The vote's one slot: the commitment is opened (it stays in its `Committed` event), the output hash replaces
        // it; the reveal that reaches a quorum of 2 or more is not listed: its vote is `QUORUM_VOTE` and the record
        // points at an earlier agreeing revealer (see the contract's notes).
        if (quorumReached && agreeing > 1) {
            _votes[requestId][node] = QUORUM_VOTE;
            // casting to 'uint16' is safe because agreeingAt < earlier < MAX_CONSENSUS_NODES
            // forge-lint: disable-next-line(unsafe-typecast)
            v.pending = uint16(agreeingAt + 1);
        } else {
            _votes[requestId][node] = outputHash;
            _revealers[requestId][earlier] = node;
        }
        // casting to 'uint8' is safe because at most MAX_CONSENSUS_NODES nodes commit, so reveal
        // forge-lint: disable-next-line(unsafe-typecast)
        v.reveals = uint8(earlier + 1);
        emit Revealed(requestId, node, outputHash, digest);

        if (quorumReached) _settle(requestId, r, node, output, outputHash, earlier);
    }

    /// @dev One registry call: `node` must be active (`NodeNotActive`); returns its digest for the request's model
    /// (reported in `Revealed`).
    function _activeDigest(uint256 requestId, address node) private view returns (bytes32 digest) {
        bool active;
        (active, digest) = registry.activeDigestFor(node, _verifications[requestId].modelId);
        if (!active) revert ICoordinator.NodeNotActive(node);
    }

    /// @dev Checks that `outputHash` and `salt` open `node`'s commitment, which it has not opened yet (`NotCommitted`,
    /// `AlreadyRevealed`, `CommitmentMismatch`, in that order); returns how many of the first `earlier` revealers
    /// revealed `outputHash`, plus one (`node`), and the index of the last of them that did (0 if none).
    function _open(uint256 requestId, address node, bytes32 outputHash, bytes32 salt, uint256 earlier)
        private
        view
        returns (uint256 agreeing, uint256 agreeingAt)
    {
        mapping(address => bytes32) storage votes = _votes[requestId];
        bytes32 committed = votes[node];
        if (committed == 0) revert NotCommitted(requestId, node);
        // After its reveal a node's vote holds its output hash: it is known as a revealer by its address.
        agreeing = 1;
        address[16] storage revealers = _revealers[requestId];
        for (uint256 i; i < earlier; ++i) {
            address voter = revealers[i];
            if (voter == node) revert AlreadyRevealed(requestId, node);
            if (votes[voter] == outputHash) (agreeing, agreeingAt) = (agreeing + 1, i);
        }
        bytes32 given = commitmentFor(requestId, node, outputHash, salt);
        if (given != committed) revert CommitmentMismatch(requestId, committed, given);
    }

    /// @dev Whether `node` is one of the listed revealers of `requestId` (every revealer but the one that reached a
    /// quorum of 2 or more).
    function _listed(uint256 requestId, address node) private view returns (bool) {
        address[16] storage revealers = _revealers[requestId];
        Verification storage v = _verifications[requestId];
        uint256 listed = v.pending == 0 ? v.reveals : v.reveals - 1;
        for (uint256 i; i < listed; ++i) {
            if (revealers[i] == node) return true;
        }
        return false;
    }

    /// @dev The output hash a fulfilled request agreed on: the vote of the earlier agreeing revealer the record points
    /// at, or (quorum 1) of the one listed revealer.
    function _agreedHash(uint256 requestId, Verification storage v) private view returns (bytes32) {
        uint256 pointer = v.pending;
        return _votes[requestId][_revealers[requestId][pointer == 0 ? v.reveals - 1 : pointer - 1]];
    }

    /// @dev Quorum reached by `node`'s reveal (the `earlier + 1`-th): pays the agreeing revealers, refunds the other
    /// slots, makes the one callback, then emits what happened.
    function _settle(
        uint256 requestId,
        Request storage r,
        address node,
        bytes calldata output,
        bytes32 outputHash,
        uint256 earlier
    ) private {
        (uint256 dissent, uint256 earned, uint256 refund, uint8 quorum) =
            _close(requestId, r, node, outputHash, earlier);
        bool callbackOk = _callWithExactGas(
            r.callbackGasLimit,
            r.consumer,
            abi.encodeWithSignature("rawFulfill(uint256,address,bytes)", requestId, node, output)
        );
        _announce(requestId, node, outputHash, earlier, dissent, callbackOk, earned);
        emit ConsensusReached(requestId, outputHash, quorum, refund, callbackOk);
    }

    /// @dev Every state change of a quorum: status `Fulfilled`, `delivered` = quorum, the agreeing revealers and the
    /// protocol paid, the other slots refunded to the consumer.
    function _close(uint256 requestId, Request storage r, address node, bytes32 outputHash, uint256 earlier)
        private
        returns (uint256 dissent, uint256 earned, uint256 refund, uint8 quorum)
    {
        quorum = _verifications[requestId].quorum;
        r.status = ICoordinator.Status.Fulfilled;
        r.delivered = quorum;
        uint256 fee = r.feePerNode;
        uint256 protocolCut = fee * r.protocolFeeBps / 10_000;
        earned = fee - protocolCut;
        address token = r.token;
        dissent = _pay(requestId, token, earned, outputHash, earlier);
        if (earned != 0) balanceOf[token][node] += earned;
        if (protocolCut != 0) balanceOf[token][protocolFeeRecipient] += protocolCut * quorum;
        refund = uint256(r.redundancy - quorum) * fee;
        if (refund != 0) balanceOf[token][r.consumer] += refund;
    }

    /// @dev Credits `earned` to each of the first `earlier` revealers that revealed `outputHash` (the node that reached
    /// the quorum is paid by `_close`); returns the others as a bitmap of reveal indexes (at most 15).
    function _pay(uint256 requestId, address token, uint256 earned, bytes32 outputHash, uint256 earlier)
        private
        returns (uint256 dissent)
    {
        address[16] storage revealers = _revealers[requestId];
        uint256 bit = 1;
        for (uint256 i; i < earlier; ++i) {
            address voter = revealers[i];
            if (_votes[requestId][voter] != outputHash) dissent |= bit;
            else if (earned != 0) balanceOf[token][voter] += earned;
            bit <<= 1;
        }
    }

    /// @dev `RequestFulfilled` for each paid revealer, `Dissented` for each other one, in reveal order (`node`, which
    /// reached the quorum, last).
    function _announce(
        uint256 requestId,
        address node,
        bytes32 outputHash,
        uint256 earlier,
        uint256 dissent,
        bool callbackOk,
        uint256 earned
    ) private {
        address[16] storage revealers = _revealers[requestId];
        for (uint256 i; i < earlier; ++i) {
            address voter = revealers[i];
            if (dissent & 1 == 0) {
                emit ICoordinator.RequestFulfilled(requestId, voter, outputHash, callbackOk, earned);
            } else {
                emit Dissented(requestId, voter, _votes[requestId][voter]);
            }
            dissent >>= 1;
        }
        emit ICoordinator.RequestFulfilled(requestId, node, outputHash, callbackOk, earned);
    }
}
