// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";

/// @title BenchConsumer
/// @notice A minimal consumer for the gas benchmark (bench/gas.py): its result callback makes one SSTORE.
contract BenchConsumer is InferenceConsumer {
    /// @notice The model id every request of this consumer asks for.
    bytes32 public constant MODEL = keccak256("bench/echo@1");

    /// @notice keccak256 of each delivered output, by request id.
    mapping(uint256 requestId => bytes32 outputHash) public results;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    /// @notice Asks one node for inference on `input`, paid with `msg.value`, default deadline.
    function request(bytes calldata input, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(MODEL, input, callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        results[requestId] = keccak256(output);
    }
}
