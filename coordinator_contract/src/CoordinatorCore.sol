// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./interfaces/ICoordinator.sol";
import {CoordinatorConfig} from "./CoordinatorConfig.sol";
import {Escrow} from "./Escrow.sol";
import {INodeRegistry} from "./interfaces/INodeRegistry.sol";
import {DelegatedRequests} from "./DelegatedRequests.sol";

/// @title CoordinatorCore
/// @notice The Coordinator's storage and the internal steps that the Coordinator and its `ConsensusModule` share.
/// @dev The module runs by DELEGATECALL in the Coordinator's storage, so both inherit this one base, with the same
/// bases in the same order: one storage layout. State variables are only ever appended here (the slots of those
/// before `_votes` are the ones the Coordinator had before the module existed). Immutables (`registry`) live in
/// each contract's code: both are built with the same registry.
abstract contract CoordinatorCore is CoordinatorConfig, DelegatedRequests, Escrow {
    /// @notice Most gas an error callback (`rawFail`) gets, whatever the request's callback gas limit: the consumer
    /// does not pay for error callbacks, the node or the reclaimer does.
    uint32 public constant MAX_ERROR_CALLBACK_GAS = 100_000;
    /// @notice Gas a verifier may use inside a delivery; the node pays for it.
    uint256 public constant MAX_VERIFIER_GAS = 1_000_000;

    /// @dev Two storage slots: a plain request writes two new slots. The narrow fields are in range by the caps of
    /// `CoordinatorConfig` (deadline within `MAX_DEADLINE_WINDOW`, gas limit below 2^24, counters at most 255) and by
    /// `FeeTooHigh` (fee below 2^80). The public `RequestParams`, `RequestView` and events keep their wide types.
    struct Request {
        // slot 0: what every action reads, and the counters and status it changes
        address consumer;
        uint40 deadline;
        uint24 callbackGasLimit;
        uint8 redundancy;
        uint8 delivered;
        uint8 failures;
        ICoordinator.Status status;
        // slot 1: payment, written once
        address token;
        uint16 protocolFeeBps;
        uint80 feePerNode;
    }

    /// @dev Only for requests that asked for verification or consensus: only they pay for these slots. A consensus
    /// request is one whose `verifier` is the ConsensusModule: its whole consensus record (quorum, counters, commit
    /// deadline, whether a model digest is required) shares slot 0 with the verifier, so a consensus request writes
    /// one slot for it and every commit and reveal updates that one slot; its `modelId` (slot 1) is kept for the
    /// registry's digest lookups and its `inputHash` is not stored (zero).
    struct Verification {
        // slot 0
        address verifier;
        // Deliveries awaiting a verdict; on a fulfilled consensus request whose quorum is 2 or more, 1 + the index in
        // `_revealers` of a revealer that agreed (the revealer that reached the quorum is not listed there).
        uint16 pending;
        // Set by a reclaim that found no unserved slot (every one delivered or awaiting a verdict): the first slot
        // rejected afterwards makes the error callback that reclaim could not make.
        bool errorCallbackOwed;
        uint8 quorum;
        uint8 commits;
        uint8 reveals;
        uint40 commitDeadline;
        bool digestRequired;
        // slot 1, 2
        bytes32 modelId;
        bytes32 inputHash;
    }

    /// @dev A node's output awaiting (or past) an optimistic verdict.
    struct PendingDelivery {
        bytes32 outputHash;
        uint64 verdictBy;
        bool verified;
    }

    /// @notice The NodeRegistry whose active nodes may act and whose approved verifiers may verify.
    INodeRegistry public immutable registry;
    /// @notice The id the next request gets.
    uint256 public nextRequestId = 1;
    /// @notice Whether a node already acted on a request (reported, delivered with a proof, or delivered to a
    /// redundant request); a one-node request's delivery closes the request instead.
    mapping(uint256 requestId => mapping(address node => bool)) public served;
    mapping(uint256 => Request) internal _requests;
    mapping(uint256 requestId => Verification) internal _verifications;
    /// @notice Outputs awaiting an optimistic verdict, by request and node.
    mapping(uint256 requestId => mapping(address node => PendingDelivery)) public pendingDeliveries;
    // ---- consensus requests (written only by the ConsensusModule, appended after the Coordinator's own state)
    /// @dev A node's vote on a consensus request, one slot: its commitment, replaced at its reveal by keccak256 of the
    /// output it revealed (whether it revealed: whether it is one of `_revealers`), or by `QUORUM_VOTE` (1) for the
    /// reveal that reached a quorum of 2 or more, which is not listed in `_revealers`.
    mapping(uint256 requestId => mapping(address node => bytes32 vote)) internal _votes;
    /// @dev The nodes that revealed, in reveal order (at most `MAX_CONSENSUS_NODES`), but for the one that reached a
    /// quorum of 2 or more.
    mapping(uint256 requestId => address[16]) internal _revealers;
    /// @dev The model digest a consensus request requires; written only when it requires one.
    mapping(uint256 requestId => bytes32) internal _requiredDigest;

    constructor(address owner_, INodeRegistry registry_) CoordinatorConfig(owner_) {
        registry = registry_;
    }

    /// @dev Takes the escrow from the caller and records the request.
    function _request(ICoordinator.RequestParams memory p, bytes calldata input, address verifier)
        internal
        returns (uint256 requestId)
    {
        _collect(p.token, p.feePerNode * p.redundancy);
        return _store(p, input, msg.sender, verifier);
    }

    /// @dev Checks the parameters and records an escrowed request for `consumer` (`verifier` zero for a plain one).
    function _store(
        ICoordinator.RequestParams memory p,
        bytes calldata input,
        address consumer,
        address verifier
    ) internal returns (uint256 requestId) {
        if (p.callbackGasLimit == 0 || p.callbackGasLimit > maxCallbackGasLimit) {
            revert ICoordinator.InvalidCallbackGasLimit(p.callbackGasLimit, maxCallbackGasLimit);
        }
        if (input.length == 0 || input.length > maxInputBytes) {
            revert ICoordinator.InvalidInputLength(input.length, maxInputBytes);
        }
        if (p.redundancy == 0 || p.redundancy > maxRedundancy) {
            revert ICoordinator.InvalidRedundancy(p.redundancy, maxRedundancy);
        }
        {
            uint64 latest = uint64(block.timestamp) + maxDeadlineWindow;
            if (p.deadline <= block.timestamp || p.deadline > latest) {
                revert ICoordinator.InvalidDeadline(p.deadline, latest);
            }
        }
        if (p.feePerNode < _minFee) revert ICoordinator.FeeTooLow(p.feePerNode, _minFee);
        if (p.feePerNode > type(uint80).max) revert ICoordinator.FeeTooHigh(p.feePerNode, type(uint80).max);

        requestId = nextRequestId++;
        // The casts below are safe: the deadline is at most MAX_DEADLINE_WINDOW ahead, the gas limit and redundancy
        // are within caps of CoordinatorConfig below 2^24 and 2^8, and the fee was checked against 2^80 above.
        _requests[requestId] = Request({
            consumer: consumer,
            // forge-lint: disable-next-line(unsafe-typecast)
            deadline: uint40(p.deadline),
            // forge-lint: disable-next-line(unsafe-typecast)
            callbackGasLimit: uint24(p.callbackGasLimit),
            // forge-lint: disable-next-line(unsafe-typecast)
            redundancy: uint8(p.redundancy),
            delivered: 0,
            failures: 0,
            status: ICoordinator.Status.Open,
            token: p.token,
            protocolFeeBps: protocolFeeBps,
            // forge-lint: disable-next-line(unsafe-typecast)
            feePerNode: uint80(p.feePerNode)
        });
        emit ICoordinator.RequestCreated(
            requestId,
            p.modelId,
            consumer,
            input,
            p.token,
            p.feePerNode,
            p.callbackGasLimit,
            p.redundancy,
            p.deadline,
            verifier
        );
    }

    /// @dev Calls the consumer's `rawFail` with `min(callbackGasLimit, MAX_ERROR_CALLBACK_GAS)` gas (exact, as for
    /// results); returns whether it succeeded.
    function _errorCallback(Request storage r, uint256 requestId, string memory reason)
        internal
        returns (bool)
    {
        uint32 limit = r.callbackGasLimit;
        return _callWithExactGas(
            limit < MAX_ERROR_CALLBACK_GAS ? limit : MAX_ERROR_CALLBACK_GAS,
            r.consumer,
            abi.encodeWithSignature("rawFail(uint256,string)", requestId, reason)
        );
    }
}
