// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title InferaLLM
/// @notice Builds the input of the instruct LLM server and decodes its output, so a consumer never hand-writes its
/// eight-field ABI. Every function is internal: the library is compiled into your contract, nothing to deploy or link.
/// @dev Input ABI `(string system, string[] messages, uint8 answer, string[] allowed, int256 min, int256 max,
/// string schema, uint32 maxNewTokens)`; output ABI `(string text, int256 value)`. `messages` alternate user and
/// assistant turns, starting and ending with a user turn. Fields the answer kind does not use are empty or zero. The
/// checks here are the ones a contract can make; the server still answers a request it cannot serve with a failure
/// (for instance `maxNewTokens` above its cap).
library InferaLLM {
    /// @notice Thrown by `chat` when `messages` has an even length (zero included): they must start and end with a
    /// user turn.
    error EvenMessageCount(uint256 count);
    /// @notice Thrown by `text`, `chat`, `choice`, `integer` and `json` when the message at `index` is empty.
    error EmptyMessage(uint256 index);
    /// @notice Thrown by `text`, `chat` and `json` for a `maxNewTokens` of zero.
    error ZeroMaxNewTokens();
    /// @notice Thrown by `choice` when `allowed` is empty.
    error NoAllowedValues();
    /// @notice Thrown by `choice` when `allowed[index]` is the empty string.
    error EmptyAllowedValue(uint256 index);
    /// @notice Thrown by `choice` when `allowed[index]` repeats an earlier value (the answer's index would be
    /// ambiguous).
    error DuplicateAllowedValue(uint256 index);
    /// @notice Thrown by `integer` when `min` is greater than `max`.
    error InvalidRange(int256 min, int256 max);
    /// @notice Thrown by `json` when `schema` is empty.
    error EmptySchema();

    /// @notice The answer kinds, ABI-encoded as `uint8` (0 to 3).
    /// @dev Text: free text, `value` 0. Choice: exactly one of `allowed` (constrained decoding), `value` its index.
    /// Integer: an integer in [min, max] (constrained decoding), `value` the integer. Json: text matching the JSON
    /// Schema in `schema`, `value` 0.
    enum Answer {
        Text,
        Choice,
        Integer,
        Json
    }

    /// @notice The reference name of the model; node operators may serve it under another name.
    string internal constant MODEL_NAME = "llm/smollm2-135m-instruct@1";
    /// @notice `keccak256(bytes(MODEL_NAME))`, the model id to request.
    bytes32 internal constant MODEL_ID = keccak256("llm/smollm2-135m-instruct@1");

    /// @notice Input for a free-text answer of at most `maxNewTokens` tokens to one user `prompt`.
    /// @param system The system prompt; empty for none.
    /// @param prompt The user's message; not empty.
    /// @param maxNewTokens The most tokens the answer may have; at least 1 (the server has a cap of its own).
    /// @return input The ABI-encoded input, for `_requestInference`.
    function text(string memory system, string memory prompt, uint32 maxNewTokens)
        internal
        pure
        returns (bytes memory input)
    {
        return chat(system, _one(prompt), maxNewTokens);
    }

    /// @notice Input for a free-text answer of at most `maxNewTokens` tokens to a conversation.
    /// @param system The system prompt; empty for none.
    /// @param messages The turns, user / assistant alternately, starting and ending with a user turn; none empty.
    /// @param maxNewTokens The most tokens the answer may have; at least 1 (the server has a cap of its own).
    /// @return input The ABI-encoded input, for `_requestInference`.
    function chat(string memory system, string[] memory messages, uint32 maxNewTokens)
        internal
        pure
        returns (bytes memory input)
    {
        if (messages.length % 2 == 0) revert EvenMessageCount(messages.length);
        _checkMessages(messages);
        if (maxNewTokens == 0) revert ZeroMaxNewTokens();
        return abi.encode(
            system, messages, uint8(Answer.Text), new string[](0), int256(0), int256(0), "", maxNewTokens
        );
    }

    /// @notice Input for an answer that is exactly one of `allowed`; the output's `value` is its index in `allowed`.
    /// @param system The system prompt; empty for none.
    /// @param prompt The user's message; not empty.
    /// @param allowed The values the answer may take; at least one, none empty, no two equal.
    /// @return input The ABI-encoded input, for `_requestInference`.
    function choice(string memory system, string memory prompt, string[] memory allowed)
        internal
        pure
        returns (bytes memory input)
    {
        string[] memory messages = _one(prompt);
        _checkMessages(messages);
        if (allowed.length == 0) revert NoAllowedValues();
        for (uint256 i; i < allowed.length; ++i) {
            if (bytes(allowed[i]).length == 0) revert EmptyAllowedValue(i);
            bytes32 h = keccak256(bytes(allowed[i]));
            for (uint256 j; j < i; ++j) {
                if (keccak256(bytes(allowed[j])) == h) revert DuplicateAllowedValue(i);
            }
        }
        return
            abi.encode(system, messages, uint8(Answer.Choice), allowed, int256(0), int256(0), "", uint32(0));
    }

    /// @notice Input for an answer that is an integer in [`min`, `max`]; the output's `value` is that integer.
    /// @param system The system prompt; empty for none.
    /// @param prompt The user's message; not empty.
    /// @param min The smallest allowed answer.
    /// @param max The largest allowed answer; not below `min`.
    /// @return input The ABI-encoded input, for `_requestInference`.
    function integer(string memory system, string memory prompt, int256 min, int256 max)
        internal
        pure
        returns (bytes memory input)
    {
        string[] memory messages = _one(prompt);
        _checkMessages(messages);
        if (min > max) revert InvalidRange(min, max);
        return abi.encode(system, messages, uint8(Answer.Integer), new string[](0), min, max, "", uint32(0));
    }

    /// @notice Input for a JSON answer matching the JSON Schema `schema`, of at most `maxNewTokens` tokens.
    /// @dev The contract cannot parse the schema; the server fails a request whose schema it cannot compile. Leave
    /// room in `maxNewTokens`: an answer cut short by the budget is not valid JSON.
    /// @param system The system prompt; empty for none.
    /// @param prompt The user's message; not empty.
    /// @param schema The JSON Schema, as JSON text; not empty.
    /// @param maxNewTokens The most tokens the answer may have; at least 1 (the server has a cap of its own).
    /// @return input The ABI-encoded input, for `_requestInference`.
    function json(string memory system, string memory prompt, string memory schema, uint32 maxNewTokens)
        internal
        pure
        returns (bytes memory input)
    {
        string[] memory messages = _one(prompt);
        _checkMessages(messages);
        if (bytes(schema).length == 0) revert EmptySchema();
        if (maxNewTokens == 0) revert ZeroMaxNewTokens();
        return abi.encode(
            system, messages, uint8(Answer.Json), new string[](0), int256(0), int256(0), schema, maxNewTokens
        );
    }

    /// @notice Decodes a node's output. Reverts (without data) if `output` is not `(string, int256)`.
    /// @dev A node's output is whatever it delivered: check `value` against what you asked for (an index below
    /// `allowed.length`, an integer in [min, max]) before you use it.
    /// @param output The output `_onInferenceResult` received.
    /// @return text The answer as generated; for Choice and Integer rely on `value`.
    /// @return value The index in `allowed` for Choice, the integer for Integer, 0 for Text and Json.
    function decode(bytes memory output) internal pure returns (string memory, int256) {
        return abi.decode(output, (string, int256));
    }

    function _one(string memory prompt) private pure returns (string[] memory messages) {
        messages = new string[](1);
        messages[0] = prompt;
    }

    function _checkMessages(string[] memory messages) private pure {
        for (uint256 i; i < messages.length; ++i) {
            if (bytes(messages[i]).length == 0) revert EmptyMessage(i);
        }
    }
}
