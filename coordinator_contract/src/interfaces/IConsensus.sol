// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./ICoordinator.sol";

/// @title IConsensus
/// @notice k-of-n consensus requests with commit-reveal, served at the Coordinator's address (its `fallback` runs the
/// `ConsensusModule` by DELEGATECALL). Call these functions on the Coordinator, never on the module.
/// @dev A consumer asks `redundancy` (n) nodes and a `quorum` (k). Commit phase: each active node commits once to
/// `commitmentFor(requestId, node, keccak256(output), salt)` while fewer than n committed and until `commitDeadline`.
/// Reveal phase (all n committed, or the commit deadline passed; until the request's deadline): each committed node
/// reveals `output` and `salt`. When k reveals carry the same output hash, the request is `Fulfilled`: those k nodes
/// are paid `feePerNode` each (less the protocol cut), `(n - k) * feePerNode` is refunded to the consumer's balance,
/// and the consumer's `rawFulfill` runs once with that output. No quorum by the deadline: `reclaim` refunds all n
/// slots and makes the one error callback. The Coordinator's own errors (`ICoordinator`) apply too: `UnknownRequest`,
/// `RequestClosed`, `DeadlinePassed`, `NodeNotActive`, `OutputTooLarge`, `InvalidRedundancy`, `WrongPayment`...
interface IConsensus {
    /// @notice What a consensus request asks on top of `ICoordinator.RequestParams`: `quorum` (k) agreeing nodes out
    /// of `redundancy` (n); `commitWindow` seconds (≥ 1) for commits from now, ending before the deadline;
    /// `modelDigest` the digest every voting node must have committed in the NodeRegistry for the model (0: any).
    struct ConsensusParams {
        uint16 quorum;
        uint32 commitWindow;
        bytes32 modelDigest;
    }

    /// @notice One item of `consensusBatch`. A commit: `reveal` false, `commitmentOrSalt` the commitment, `output`
    /// empty. A reveal: `reveal` true, `commitmentOrSalt` the salt, `output` the output.
    struct ConsensusItem {
        uint256 requestId;
        bool reveal;
        bytes32 commitmentOrSalt;
        bytes output;
    }

    /// @notice Thrown by every function when the ConsensusModule is called directly, not through its Coordinator.
    error NotDelegated();
    /// @notice Thrown by `requestConsensusInference` if `quorum` is 0 or above `redundancy`.
    error InvalidQuorum(uint16 quorum, uint16 redundancy);
    /// @notice Thrown by `requestConsensusInference` if `commitWindow` is 0 or does not end before `deadline`.
    error InvalidCommitWindow(uint32 commitWindow, uint64 deadline);
    /// @notice Thrown by `commit`, `reveal` and the views on a request that is not a consensus request.
    error NotConsensusRequest(uint256 requestId);
    /// @notice Thrown by `commit` with a zero commitment, or with 1 (reserved: it marks the vote that reached a quorum;
    /// a real commitment is a keccak256 hash).
    error ZeroCommitment(uint256 requestId);
    /// @notice Thrown by `commit` once the commit phase closed: all `redundancy` nodes committed, or `commitDeadline`
    /// (seconds since the epoch) passed.
    error CommitClosed(uint256 requestId, uint64 commitDeadline, uint16 commits);
    /// @notice Thrown by `commit` if the node already committed to this request.
    error AlreadyCommitted(uint256 requestId, address node);
    /// @notice Thrown by `commit` and `reveal` if the request requires a model digest and the node's digest for the
    /// request's model in the NodeRegistry (`committed`, zero if none) is another.
    error ModelDigestMismatch(uint256 requestId, bytes32 required, bytes32 committed);
    /// @notice Thrown by `reveal` before the reveal phase: fewer than `redundancy` commits and `commitDeadline` not
    /// passed.
    error RevealNotOpen(uint256 requestId, uint64 commitDeadline, uint16 commits);
    /// @notice Thrown by `reveal` if the node never committed to this request.
    error NotCommitted(uint256 requestId, address node);
    /// @notice Thrown by `reveal` if the node already revealed.
    error AlreadyRevealed(uint256 requestId, address node);
    /// @notice Thrown by `reveal` if output and salt do not open the node's commitment (`given` is what they make).
    error CommitmentMismatch(uint256 requestId, bytes32 committed, bytes32 given);

    /// @notice A consensus request was made (after its `RequestCreated`, whose `verifier` is the ConsensusModule):
    /// `quorum` agreeing nodes needed; commits until `commitDeadline` (seconds since the epoch); `modelDigest`
    /// required of voting nodes (0: any).
    event ConsensusRequested(
        uint256 indexed requestId, uint16 quorum, uint64 commitDeadline, bytes32 modelDigest
    );
    /// @notice `node` committed to an output of `requestId`.
    event Committed(uint256 indexed requestId, address indexed node, bytes32 commitment);
    /// @notice `node` revealed an output (`outputHash` = keccak256 of it); `modelDigest` is the digest the node had
    /// committed in the NodeRegistry for the request's model at reveal time (zero if none).
    event Revealed(uint256 indexed requestId, address indexed node, bytes32 outputHash, bytes32 modelDigest);
    /// @notice `agreeing` (= quorum) nodes revealed `outputHash`: each was paid (see their `RequestFulfilled`),
    /// `refund` (wei or token units) credited to the consumer, and its callback ran once (`callbackOk`).
    event ConsensusReached(
        uint256 indexed requestId, bytes32 outputHash, uint16 agreeing, uint256 refund, bool callbackOk
    );
    /// @notice At quorum, one per node that had revealed another output (`outputHash`): it is not paid.
    event Dissented(uint256 indexed requestId, address indexed node, bytes32 outputHash);

    /// @notice Asks `params.redundancy` nodes (at most `MAX_CONSENSUS_NODES`) for inference and calls the consumer
    /// back once, with the output `consensus.quorum` of them revealed. Escrow as `requestInference`:
    /// `feePerNode * redundancy` in ETH (`msg.value`) or pulled in `token`. Emits `RequestCreated` (verifier = the
    /// ConsensusModule) and `ConsensusRequested`. Reverts with the request errors of `ICoordinator`, `InvalidQuorum`,
    /// `InvalidCommitWindow`, or `InvalidRedundancy` above `MAX_CONSENSUS_NODES`.
    function requestConsensusInference(
        ICoordinator.RequestParams calldata params,
        bytes calldata input,
        ConsensusParams calldata consensus
    ) external payable returns (uint256 requestId);

    /// @notice Commits the calling active node to an output of `requestId`: `commitment` =
    /// `commitmentFor(requestId, msg.sender, keccak256(output), salt)` with a secret random `salt`. Reverts with
    /// `NodeNotActive`, `CommitClosed`, `AlreadyCommitted`, `ModelDigestMismatch`, `ZeroCommitment`, or the request's
    /// `UnknownRequest` / `RequestClosed` / `DeadlinePassed` / `NotConsensusRequest`.
    function commit(uint256 requestId, bytes32 commitment) external;

    /// @notice Reveals the calling node's committed `output` and `salt`. Counts the nodes that revealed the same
    /// output; the reveal that makes `quorum` of them settles the request (returns true): pays them, refunds the
    /// rest, calls the consumer back. Reverts with `NodeNotActive`, `RevealNotOpen`, `NotCommitted`, `AlreadyRevealed`,
    /// `CommitmentMismatch`, `ModelDigestMismatch`, `OutputTooLarge`, `InsufficientGasForCallback`, or `RequestClosed`
    /// (after quorum: a late reveal earns nothing) / `DeadlinePassed`.
    function reveal(uint256 requestId, bytes calldata output, bytes32 salt)
        external
        returns (bool quorumReached);

    /// @notice Commits and reveals of the calling active node in one transaction; each item runs in its own call
    /// frame: a bad item is skipped with `DeliverySkipped(requestId, node, errorSelector)` and the rest go on.
    /// Returns how many items settled (committed or revealed).
    function consensusBatch(ConsensusItem[] calldata items) external returns (uint256 settled);

    /// @notice The commitment `node` makes for `outputHash` (keccak256 of the output) with `salt`:
    /// `keccak256(abi.encode(block.chainid, coordinator, requestId, node, outputHash, salt))`, bound to this chain,
    /// this Coordinator, the request and the node, so it cannot be replayed by another node.
    function commitmentFor(uint256 requestId, address node, bytes32 outputHash, bytes32 salt)
        external
        view
        returns (bytes32);

    /// @notice A consensus request's state: `quorum`, how many nodes committed and revealed, `commitDeadline`
    /// (seconds since the epoch), whether reveals are accepted now (`revealOpen`), the required `modelDigest` (0: any)
    /// and, once fulfilled, the agreed output hash (`agreedHash`, else 0). Reverts with `NotConsensusRequest`.
    function consensusOf(uint256 requestId)
        external
        view
        returns (
            uint16 quorum,
            uint16 commits,
            uint16 reveals,
            uint64 commitDeadline,
            bool revealOpen,
            bytes32 modelDigest,
            bytes32 agreedHash
        );

    /// @notice `node`'s vote on `requestId`: its `commitment` (0: none, and 0 again once it revealed: a vote is one
    /// slot, its commitment overwritten by its output hash; read the commitment from its `Committed` event), the
    /// `outputHash` it revealed (0 until it reveals) and whether it revealed.
    function voteOf(uint256 requestId, address node)
        external
        view
        returns (bytes32 commitment, bytes32 outputHash, bool revealed);
}
