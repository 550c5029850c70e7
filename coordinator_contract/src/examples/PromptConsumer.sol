// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../consumer/InferenceConsumer.sol";

/// @title PromptConsumer
/// @notice Example dApp: asks a text generator to continue a prompt and stores the reply. Input ABI
/// `(string prompt, uint32 maxNewTokens)`, output ABI `(string text)`.
contract PromptConsumer is InferenceConsumer {
    /// @notice Thrown by `ask` for a token budget the example does not allow.
    error TooManyTokens(uint32 maxNewTokens, uint32 limit);

    /// @notice Longer replies need a larger callback gas limit to store them.
    uint32 public constant MAX_NEW_TOKENS = 64;
    uint32 public constant CALLBACK_GAS_LIMIT = 400_000;

    /// @notice A node's reply arrived.
    event ReplyReceived(uint256 indexed requestId, address indexed node, string text);

    bytes32 public immutable modelId;
    mapping(uint256 requestId => string) public prompts;
    mapping(uint256 requestId => string) public replies;

    constructor(address coordinator_, bytes32 modelId_) InferenceConsumer(coordinator_) {
        modelId = modelId_;
    }

    /// @notice Asks for up to `maxNewTokens` tokens continuing `prompt`; `msg.value` is the fee.
    function ask(string calldata prompt, uint32 maxNewTokens) external payable returns (uint256 requestId) {
        if (maxNewTokens == 0 || maxNewTokens > MAX_NEW_TOKENS) {
            revert TooManyTokens(maxNewTokens, MAX_NEW_TOKENS);
        }
        requestId =
            _requestInference(modelId, abi.encode(prompt, maxNewTokens), CALLBACK_GAS_LIMIT, msg.value);
        prompts[requestId] = prompt;
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        string memory text = abi.decode(output, (string));
        replies[requestId] = text;
        emit ReplyReceived(requestId, node, text);
    }
}
