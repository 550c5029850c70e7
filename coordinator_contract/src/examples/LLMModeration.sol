// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../consumer/InferenceConsumer.sol";
import {InferaLLM} from "../consumer/InferaLLM.sol";

/// @title LLMModeration
/// @notice Example dApp: asks the instruct LLM whether a post is spam, as a Choice of "yes" or "no", and stores a
/// `flagged` verdict per request. Input and output ABIs are those of `InferaLLM`.
contract LLMModeration is InferenceConsumer {
    /// @notice Thrown by `withdrawRefunds` when called by anyone but the deployer.
    error NotOwner(address caller);

    /// @notice Gas the callback needs: decode a short answer, write one slot, emit (measured: see the README).
    uint32 public constant CALLBACK_GAS_LIMIT = 100_000;
    /// @notice Index of "yes" (spam) in the allowed values.
    int256 public constant YES = 0;
    /// @notice Index of "no" (not spam) in the allowed values.
    int256 public constant NO = 1;
    /// @notice The system prompt of every request.
    string public constant SYSTEM =
        "You are a content moderator. Spam is unsolicited advertising, scams, phishing or repeated junk.";

    /// @notice Where a post's check stands; one storage slot.
    struct Verdict {
        bool answered;
        bool flagged;
        bool failed;
    }

    /// @notice A post was sent to the LLM.
    event ModerationRequested(uint256 indexed requestId, string text);
    /// @notice The LLM's verdict arrived: `flagged` is true for spam.
    event Moderated(uint256 indexed requestId, address indexed node, bool flagged);
    /// @notice A node delivered a value that is not an index of "yes" or "no"; nothing was stored.
    event ModerationRejected(uint256 indexed requestId, address indexed node, int256 value);
    /// @notice No node could check the post; the fee was refunded to this contract.
    event ModerationFailed(uint256 indexed requestId, string reason);

    /// @notice keccak256 of the model name the node operators serve, e.g. `InferaLLM.MODEL_ID`.
    bytes32 public immutable modelId;
    /// @notice Who may withdraw refunds.
    address public immutable owner;
    /// @notice The verdict of every request this contract made, by request id.
    mapping(uint256 requestId => Verdict) public verdicts;

    constructor(address coordinator_, bytes32 modelId_) InferenceConsumer(coordinator_) {
        modelId = modelId_;
        owner = msg.sender;
    }

    /// @notice Asks whether `text` is spam; `msg.value` is the fee.
    function check(string calldata text) external payable returns (uint256 requestId) {
        requestId = _requestInference(modelId, input(text), CALLBACK_GAS_LIMIT, msg.value);
        emit ModerationRequested(requestId, text);
    }

    /// @notice Sends refunds of failed or expired requests to `to`.
    function withdrawRefunds(address to) external returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        return _withdrawRefunds(address(0), to);
    }

    /// @notice The input `check(text)` sends: a Choice between "yes" and "no".
    function input(string calldata text) public pure returns (bytes memory) {
        string[] memory allowed = new string[](2);
        allowed[0] = "yes"; // index YES
        allowed[1] = "no"; // index NO
        return InferaLLM.choice(
            SYSTEM, string.concat("Is the following post spam? Answer yes or no.\n\nPost: ", text), allowed
        );
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        (, int256 value) = InferaLLM.decode(output);
        // Constrained decoding makes an honest node answer 0 or 1; anything else is not an answer to this question.
        if (value != YES && value != NO) {
            emit ModerationRejected(requestId, node, value);
            return;
        }
        bool flagged = value == YES;
        Verdict storage v = verdicts[requestId];
        v.answered = true;
        v.flagged = flagged;
        emit Moderated(requestId, node, flagged);
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        verdicts[requestId].failed = true;
        emit ModerationFailed(requestId, reason);
    }
}
