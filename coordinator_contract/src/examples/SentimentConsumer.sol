// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../consumer/InferenceConsumer.sol";

/// @title SentimentConsumer
/// @notice Example dApp: asks a text classifier for the sentiment of a sentence and stores the answer.
/// The model's input ABI is `(string)` and its output ABI is `(string label, uint256 scoreE6)`.
contract SentimentConsumer is InferenceConsumer {
    /// @notice Thrown by `withdrawRefunds` when called by anyone but the deployer.
    error NotOwner(address caller);

    /// @notice Gas the callback needs: decode and store a short label and a score.
    uint32 public constant CALLBACK_GAS_LIMIT = 200_000;

    struct Sentiment {
        string text;
        string label;
        uint256 scoreE6;
        bool answered;
        bool failed;
    }

    /// @notice A sentence was sent for classification.
    event SentimentRequested(uint256 indexed requestId, string text);
    /// @notice The classifier's answer arrived on-chain.
    event SentimentReceived(uint256 indexed requestId, address indexed node, string label, uint256 scoreE6);
    /// @notice No node could classify the sentence; the fee was refunded to this contract.
    event SentimentFailed(uint256 indexed requestId, string reason);

    /// @notice keccak256 of the model name the node operators serve (the classify model; its reference name is in
    /// the README, "Model ids and their ABIs").
    bytes32 public immutable modelId;
    /// @notice Who may withdraw refunds.
    address public immutable owner;
    /// @notice Every request this contract made, by request id.
    mapping(uint256 => Sentiment) public sentiments;

    constructor(address coordinator_, bytes32 modelId_) InferenceConsumer(coordinator_) {
        modelId = modelId_;
        owner = msg.sender;
    }

    /// @notice Asks for the sentiment of `text`; `msg.value` is the fee.
    function askSentiment(string calldata text) external payable returns (uint256 requestId) {
        requestId = _requestInference(modelId, abi.encode(text), CALLBACK_GAS_LIMIT, msg.value);
        sentiments[requestId].text = text;
        emit SentimentRequested(requestId, text);
    }

    /// @notice Sends refunds of failed or expired requests to `to`.
    function withdrawRefunds(address to) external returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        return _withdrawRefunds(address(0), to);
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        (string memory label, uint256 scoreE6) = abi.decode(output, (string, uint256));
        Sentiment storage s = sentiments[requestId];
        s.label = label;
        s.scoreE6 = scoreE6;
        s.answered = true;
        emit SentimentReceived(requestId, node, label, scoreE6);
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        sentiments[requestId].failed = true;
        emit SentimentFailed(requestId, reason);
    }
}
