// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../consumer/InferenceConsumer.sol";
import {ICoordinator} from "../interfaces/ICoordinator.sol";
import {IConsensus} from "../interfaces/IConsensus.sol";

/// @title ConsensusSentiment
/// @notice Example dApp: asks three classifier nodes for the sentiment of a sentence and accepts the label two of
/// them agree on (a consensus request: one callback, only the two agreeing nodes paid, the third slot refunded).
/// The model's input ABI is `(string)`, its output ABI `(string label, uint256 scoreE6)`; nodes agree only on
/// byte-identical outputs, so ask deterministic models (same weights: pin them with `MODEL_DIGEST`).
contract ConsensusSentiment is InferenceConsumer {
    /// @notice Thrown by `withdrawRefunds` when called by anyone but the deployer.
    error NotOwner(address caller);

    /// @notice Nodes asked, and how many must agree.
    uint16 public constant NODES = 3;
    uint16 public constant QUORUM = 2;
    /// @notice Seconds the nodes have to commit; they reveal afterwards, until the deadline (one hour).
    uint32 public constant COMMIT_WINDOW = 10 minutes;
    /// @notice Gas the callback needs: decode and store a short label and a score.
    uint32 public constant CALLBACK_GAS_LIMIT = 200_000;

    /// @notice The agreed label of a request arrived.
    event SentimentAgreed(uint256 indexed requestId, string label, uint256 scoreE6);
    /// @notice No two nodes agreed by the deadline (or none answered): every slot was refunded to this contract.
    event SentimentFailed(uint256 indexed requestId, string reason);

    /// @notice keccak256 of the model name the node operators serve (the classify model; its reference name is in
    /// the README, "Model ids and their ABIs").
    bytes32 public immutable modelId;
    /// @notice The model digest voting nodes must have committed in the NodeRegistry (zero: any).
    bytes32 public immutable modelDigest;
    /// @notice Who may withdraw refunds.
    address public immutable owner;
    /// @notice The agreed label per request (empty until agreed).
    mapping(uint256 requestId => string) public labels;

    constructor(address coordinator_, bytes32 modelId_, bytes32 modelDigest_)
        InferenceConsumer(coordinator_)
    {
        modelId = modelId_;
        modelDigest = modelDigest_;
        owner = msg.sender;
    }

    /// @notice Asks for the sentiment of `text`; `msg.value` is the whole escrow, `NODES` times the fee per node.
    function askSentiment(string calldata text) external payable returns (uint256) {
        return _requestConsensusInference(
            ICoordinator.RequestParams({
                modelId: modelId,
                callbackGasLimit: CALLBACK_GAS_LIMIT,
                redundancy: NODES,
                deadline: uint64(block.timestamp + 1 hours),
                token: address(0),
                feePerNode: msg.value / NODES
            }),
            abi.encode(text),
            IConsensus.ConsensusParams({
                quorum: QUORUM, commitWindow: COMMIT_WINDOW, modelDigest: modelDigest
            })
        );
    }

    /// @notice Sends refunds (the unused slot of each agreed request, every slot of a failed one) to `to`.
    function withdrawRefunds(address to) external returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        return _withdrawRefunds(address(0), to);
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        (string memory label, uint256 scoreE6) = abi.decode(output, (string, uint256));
        labels[requestId] = label;
        emit SentimentAgreed(requestId, label, scoreE6);
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        emit SentimentFailed(requestId, reason);
    }
}
