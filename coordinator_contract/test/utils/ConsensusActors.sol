// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../../src/interfaces/IConsensus.sol";
import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";

/// @notice A consumer of consensus requests that counts its callbacks per request and keeps the last result.
contract ConsensusConsumer is InferenceConsumer {
    mapping(uint256 requestId => uint256) public results;
    /// @notice The reason of the last error callback.
    string public lastReason;
    mapping(uint256 requestId => uint256) public errors;
    mapping(uint256 requestId => bytes32) public outputHashOf;
    address public lastNode;
    bytes public lastOutput;
    bool public revertCallbacks;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function ask(
        ICoordinator.RequestParams calldata params,
        bytes calldata input,
        IConsensus.ConsensusParams calldata consensus
    ) external payable returns (uint256) {
        return _requestConsensusInference(params, input, consensus);
    }

    function askPlain(ICoordinator.RequestParams calldata params, bytes calldata input)
        external
        payable
        returns (uint256)
    {
        return _requestInference(params, input);
    }

    function cancel(uint256 requestId) external returns (uint256) {
        return _cancelRequest(requestId);
    }

    function setRevertCallbacks(bool on) external {
        revertCallbacks = on;
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        require(!revertCallbacks, "no");
        results[requestId] += 1;
        outputHashOf[requestId] = keccak256(output);
        lastNode = node;
        lastOutput = output;
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        require(!revertCallbacks, "no");
        errors[requestId] += 1;
        lastReason = reason;
    }
}
