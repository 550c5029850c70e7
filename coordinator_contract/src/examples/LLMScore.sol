// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../consumer/InferenceConsumer.sol";
import {InferaLLM} from "../consumer/InferaLLM.sol";

/// @title LLMScore
/// @notice Example dApp: asks the instruct LLM to score a text from 1 to 10, as an Integer answer, and stores the
/// score per request. Input and output ABIs are those of `InferaLLM`.
contract LLMScore is InferenceConsumer {
    /// @notice Thrown by `withdrawRefunds` when called by anyone but the deployer.
    error NotOwner(address caller);

    /// @notice Gas the callback needs: decode a short answer, write one slot, emit (measured: see the README).
    uint32 public constant CALLBACK_GAS_LIMIT = 100_000;
    /// @notice The lowest score.
    int256 public constant MIN_SCORE = 1;
    /// @notice The highest score.
    int256 public constant MAX_SCORE = 10;
    /// @notice The system prompt of every request.
    string public constant SYSTEM = "You are a strict reviewer. You rate how clear and useful a text is.";

    /// @notice A text was sent to the LLM for a score.
    event ScoreRequested(uint256 indexed requestId, string text);
    /// @notice A score in [MIN_SCORE, MAX_SCORE] arrived and was stored.
    event ScoreReceived(uint256 indexed requestId, address indexed node, uint256 score);
    /// @notice A node delivered a value outside [MIN_SCORE, MAX_SCORE]; nothing was stored.
    event ScoreRejected(uint256 indexed requestId, address indexed node, int256 value);
    /// @notice No node could score the text; the fee was refunded to this contract.
    event ScoreFailed(uint256 indexed requestId, string reason);

    /// @notice keccak256 of the model name the node operators serve, e.g. `InferaLLM.MODEL_ID`.
    bytes32 public immutable modelId;
    /// @notice Who may withdraw refunds.
    address public immutable owner;
    /// @notice The score of every request this contract made, by request id: 0 until a valid score arrived.
    mapping(uint256 requestId => uint256) public scores;
    /// @notice Requests that failed (their fee was refunded), by request id.
    mapping(uint256 requestId => bool) public failed;

    constructor(address coordinator_, bytes32 modelId_) InferenceConsumer(coordinator_) {
        modelId = modelId_;
        owner = msg.sender;
    }

    /// @notice Asks for a score of `text`; `msg.value` is the fee.
    function score(string calldata text) external payable returns (uint256 requestId) {
        requestId = _requestInference(modelId, input(text), CALLBACK_GAS_LIMIT, msg.value);
        emit ScoreRequested(requestId, text);
    }

    /// @notice Sends refunds of failed or expired requests to `to`.
    function withdrawRefunds(address to) external returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        return _withdrawRefunds(address(0), to);
    }

    /// @notice The input `score(text)` sends: an Integer from MIN_SCORE to MAX_SCORE.
    function input(string calldata text) public pure returns (bytes memory) {
        return InferaLLM.integer(
            SYSTEM,
            string.concat("Score the following text from 1 (useless) to 10 (excellent).\n\nText: ", text),
            MIN_SCORE,
            MAX_SCORE
        );
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        (, int256 value) = InferaLLM.decode(output);
        // Constrained decoding keeps an honest node in range; a value outside it is not a score, so it is not used.
        if (value < MIN_SCORE || value > MAX_SCORE) {
            emit ScoreRejected(requestId, node, value);
            return;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 s = uint256(value); // in [1, 10] after the check above
        scores[requestId] = s;
        emit ScoreReceived(requestId, node, s);
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        failed[requestId] = true;
        emit ScoreFailed(requestId, reason);
    }
}
