// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {InferenceConsumer} from "@infera/contracts/src/consumer/InferenceConsumer.sol";

/// @title EmbeddingStore
/// @notice Asks the Infera `embed` model for the sentence embedding of a text and stores it per request id.
/// Failures are kept with their reason; refunds can be withdrawn by the deployer.
contract EmbeddingStore is InferenceConsumer {
    /// @notice Gas the callback may use: it stores 384 bytes (12 slots) and the scale; `test/` measures it.
    uint32 public constant CALLBACK_GAS_LIMIT = 400_000;

    /// @notice keccak256 of the model name the node operators serve (they choose it; ask them).
    bytes32 public immutable modelId;
    /// @notice Who may withdraw this contract's refunds.
    address public immutable owner;

    struct Embedding {
        bytes int8s; // one two's-complement int8 per dimension
        uint256 scaleE12; // dimension i is int8(int8s[i]) * scaleE12 / 1e12
    }

    mapping(uint256 requestId => Embedding) internal _embeddings;
    /// @notice Why a request failed (empty while it has not), as the nodes or the deadline reported it.
    mapping(uint256 requestId => string) public failures;

    event Embedded(uint256 indexed requestId, uint256 dimensions);
    event EmbeddingFailed(uint256 indexed requestId, string reason);

    error NotOwner(address caller);
    error NoEmbedding(uint256 requestId);

    constructor(address coordinator_, bytes32 modelId_) InferenceConsumer(coordinator_) {
        modelId = modelId_;
        owner = msg.sender;
    }

    /// @notice Asks one node for the embedding of `text`, paying it `msg.value`. Returns the request id.
    function embed(string calldata text) external payable returns (uint256 requestId) {
        return _requestInference(modelId, abi.encode(text), CALLBACK_GAS_LIMIT, msg.value);
    }

    /// @notice The stored embedding of `requestId`; reverts `NoEmbedding` until it is delivered.
    function embeddingOf(uint256 requestId) external view returns (bytes memory int8s, uint256 scaleE12) {
        Embedding storage e = _embeddings[requestId];
        if (e.scaleE12 == 0) revert NoEmbedding(requestId);
        return (e.int8s, e.scaleE12);
    }

    /// @notice Dimension `i` of `requestId`'s embedding, scaled by 1e12.
    function valueE12(uint256 requestId, uint256 i) external view returns (int256) {
        Embedding storage e = _embeddings[requestId];
        if (e.scaleE12 == 0) revert NoEmbedding(requestId);
        return int256(int8(uint8(e.int8s[i]))) * int256(e.scaleE12);
    }

    /// @notice Sends this contract's refunds (failed or expired requests) to `to`.
    function withdrawRefunds(address to) external returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        return _withdrawRefunds(address(0), to);
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        (bytes memory int8s, uint256 scaleE12) = abi.decode(output, (bytes, uint256));
        _embeddings[requestId] = Embedding(int8s, scaleE12);
        emit Embedded(requestId, int8s.length);
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        failures[requestId] = reason;
        emit EmbeddingFailed(requestId, reason);
    }
}
