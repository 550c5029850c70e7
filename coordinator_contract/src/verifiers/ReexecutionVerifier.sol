// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {VerifierBase} from "./VerifierBase.sol";
import {ICoordinator} from "../interfaces/ICoordinator.sol";
import {INodeRegistry} from "../interfaces/INodeRegistry.sol";

/// @title ReexecutionVerifier
/// @notice An optimistic verifier: a delivered output stands unless other staked nodes, re-running the model on the
/// request's input, outvote it. `window()` is `challengeWindow + voteWindow` seconds.
/// @dev Rules, per delivery (request id, node):
/// - `verify` (the Coordinator, in `deliverWithProof`; the proof is ignored) records the claim: output hash and
///   delivery time, and answers `Pending`.
/// - `dispute(requestId, node, outputHash)`: an active staked node other than `node`, within `challengeWindow`
///   seconds of the delivery, with a hash different from the claim's, opens the one dispute of that delivery; this
///   counts as its vote against.
/// - `vote(requestId, node, outputHash)`: each active staked node other than `node` once, while the dispute is open and
///   within `challengeWindow + voteWindow` seconds of the delivery; the claim's hash is a vote for, any other against.
/// - `against >= quorum`: the Coordinator rejects the output (`resolveVerification(.., false)`: never handed over or
///   paid, its slot reopens or is refunded) and the node loses `min(slashAmount, stake)` to the challenger.
///   `for >= quorum`: the output is confirmed (`resolveVerification(.., true)`) and may be settled at once.
/// - No dispute, or no quorum by the end of the window: the output stands; anyone settles it with
///   `Coordinator.finalizeDelivery` after the window.
/// Limits: votes are plain, so a lazy voter can copy the claim's hash instead of re-running the model (commit-reveal
/// voting is a follow-up); voters are not paid and a failed challenger loses nothing but gas; `quorum` colluding
/// staked nodes can reject an honest output, so set it above what one operator controls; the model must be
/// deterministic (greedy decoding, fixed weights) for honest nodes to agree byte for byte.
contract ReexecutionVerifier is VerifierBase {
    /// @notice Thrown by `dispute` and `vote` for a delivery this verifier has no claim of.
    error NoClaim(uint256 requestId, address node);
    /// @notice Thrown by `dispute` and `vote` when the caller is not an active staked node.
    error NotActiveNode(address caller);
    /// @notice Thrown by `dispute` and `vote` when the delivering node judges its own output.
    error OwnOutput(uint256 requestId, address node);
    /// @notice Thrown by `dispute` after `challengeWindow` (`closedAt`, seconds since the epoch).
    error ChallengeWindowClosed(uint256 requestId, address node, uint256 closedAt);
    /// @notice Thrown by `dispute` with the claim's own output hash: that is agreement, not a dispute.
    error SameOutput(uint256 requestId, address node, bytes32 outputHash);
    /// @notice Thrown by `dispute` once the delivery was disputed (open or resolved).
    error AlreadyDisputed(uint256 requestId, address node);
    /// @notice Thrown by `vote` when no dispute of the delivery is open.
    error NoOpenDispute(uint256 requestId, address node);
    /// @notice Thrown by `vote` after the window (`closedAt`, seconds since the epoch).
    error VotingClosed(uint256 requestId, address node, uint256 closedAt);
    /// @notice Thrown by `vote` for a second vote of the same node.
    error AlreadyVoted(uint256 requestId, address node, address voter);

    /// @notice `challenger` disputed `node`'s output for `requestId`, claiming it should hash to `outputHash`.
    event DisputeOpened(
        uint256 indexed requestId, address indexed node, address indexed challenger, bytes32 outputHash
    );
    /// @notice `voter` agreed (`agrees`) or disagreed with `node`'s output for `requestId`.
    event Voted(uint256 indexed requestId, address indexed node, address indexed voter, bool agrees);
    /// @notice A quorum decided: `valid` false rejected and slashed the output, true confirmed it.
    event DisputeResolved(uint256 indexed requestId, address indexed node, bool valid);

    enum DisputeState {
        None,
        Open,
        Resolved
    }

    /// @notice A delivered output awaiting its window, with its dispute if any.
    struct Claim {
        bytes32 outputHash;
        uint64 deliveredAt;
        uint16 votesFor;
        uint16 votesAgainst;
        DisputeState state;
        address challenger;
    }

    /// @notice Seconds after a delivery during which a dispute may be opened.
    uint64 public immutable challengeWindow;
    /// @notice Seconds after the challenge window during which votes are still taken.
    uint64 public immutable voteWindow;
    /// @notice Votes on one side that decide a dispute.
    uint16 public immutable quorum;
    /// @notice Claims by request and delivering node.
    mapping(uint256 requestId => mapping(address node => Claim)) public claims;
    /// @notice Whether a voter (challenger included) has voted on a delivery.
    mapping(uint256 requestId => mapping(address node => mapping(address voter => bool))) public hasVoted;

    constructor(
        address owner_,
        ICoordinator coordinator_,
        INodeRegistry registry_,
        uint64 challengeWindowSeconds,
        uint64 voteWindowSeconds,
        uint16 quorum_,
        uint256 slashAmountWei
    ) VerifierBase(owner_, coordinator_, registry_, slashAmountWei) {
        if (challengeWindowSeconds == 0 || quorum_ == 0) revert InvalidParameter();
        challengeWindow = challengeWindowSeconds;
        voteWindow = voteWindowSeconds;
        quorum = quorum_;
    }

    /// @notice Records `node`'s claim (the output's hash, now) and answers `Pending`; the proof is ignored. Only the
    /// Coordinator calls it, inside `deliverWithProof`.
    function verify(uint256 requestId, address node, bytes calldata output, bytes calldata)
        external
        onlyCoordinator
        returns (Verdict)
    {
        claims[requestId][node] = Claim({
            outputHash: keccak256(output),
            deliveredAt: uint64(block.timestamp),
            votesFor: 0,
            votesAgainst: 0,
            state: DisputeState.None,
            challenger: address(0)
        });
        return Verdict.Pending;
    }

    /// @notice Seconds a verdict may take after a delivery: `challengeWindow + voteWindow`.
    function window() public view returns (uint64) {
        return challengeWindow + voteWindow;
    }

    /// @notice Disputes `node`'s output for `requestId`: the caller re-ran the model and got `outputHash`. Opens the
    /// delivery's dispute and counts as one vote against (which decides it if `quorum` is 1).
    function dispute(uint256 requestId, address node, bytes32 outputHash) external {
        Claim storage c = _judgeable(requestId, node);
        if (c.state != DisputeState.None) revert AlreadyDisputed(requestId, node);
        uint256 closedAt = uint256(c.deliveredAt) + challengeWindow;
        if (block.timestamp > closedAt) revert ChallengeWindowClosed(requestId, node, closedAt);
        if (outputHash == c.outputHash) revert SameOutput(requestId, node, outputHash);
        c.state = DisputeState.Open;
        c.challenger = msg.sender;
        c.votesAgainst = 1;
        hasVoted[requestId][node][msg.sender] = true;
        emit DisputeOpened(requestId, node, msg.sender, outputHash);
        _tally(requestId, node, c);
    }

    /// @notice Votes on `node`'s disputed output for `requestId`: `outputHash` is what the caller got re-running the
    /// model; equal to the claim's it is a vote for, else against. Once per node, while the dispute is open.
    function vote(uint256 requestId, address node, bytes32 outputHash) external {
        Claim storage c = _judgeable(requestId, node);
        if (c.state != DisputeState.Open) revert NoOpenDispute(requestId, node);
        uint256 closedAt = uint256(c.deliveredAt) + window();
        if (block.timestamp > closedAt) revert VotingClosed(requestId, node, closedAt);
        if (hasVoted[requestId][node][msg.sender]) revert AlreadyVoted(requestId, node, msg.sender);
        hasVoted[requestId][node][msg.sender] = true;
        bool agrees = outputHash == c.outputHash;
        if (agrees) c.votesFor += 1;
        else c.votesAgainst += 1;
        emit Voted(requestId, node, msg.sender, agrees);
        _tally(requestId, node, c);
    }

    /// @dev The claim of (`requestId`, `node`), if the caller may judge it: an active staked node other than `node`.
    function _judgeable(uint256 requestId, address node) internal view returns (Claim storage c) {
        c = claims[requestId][node];
        if (c.deliveredAt == 0) revert NoClaim(requestId, node);
        if (msg.sender == node) revert OwnOutput(requestId, node);
        if (!registry.isActive(msg.sender)) revert NotActiveNode(msg.sender);
    }

    /// @dev Resolves the dispute once one side reached `quorum`.
    function _tally(uint256 requestId, address node, Claim storage c) internal {
        bool valid;
        if (c.votesAgainst >= quorum) valid = false;
        else if (c.votesFor >= quorum) valid = true;
        else return;
        c.state = DisputeState.Resolved;
        emit DisputeResolved(requestId, node, valid);
        coordinator.resolveVerification(requestId, node, valid);
        if (!valid) _slash(node, c.challenger);
    }
}
