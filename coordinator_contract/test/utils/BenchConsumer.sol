// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../../src/interfaces/IConsensus.sol";

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

    /// @notice Asks `redundancy` nodes (each paid `msg.value / redundancy`) by `deadline`: a plain redundant request.
    function requestRedundant(
        bytes calldata input,
        uint32 callbackGasLimit,
        uint16 redundancy,
        uint64 deadline
    ) external payable returns (uint256) {
        return _requestInference(_params(callbackGasLimit, redundancy, deadline), input);
    }

    /// @notice The same as a consensus request: one callback once `quorum` nodes revealed the same output.
    function requestConsensus(
        bytes calldata input,
        uint32 callbackGasLimit,
        uint16 redundancy,
        uint16 quorum,
        uint32 commitWindow,
        uint64 deadline
    ) external payable returns (uint256) {
        return _requestConsensusInference(
            _params(callbackGasLimit, redundancy, deadline),
            input,
            IConsensus.ConsensusParams({quorum: quorum, commitWindow: commitWindow, modelDigest: bytes32(0)})
        );
    }

    function _params(uint32 callbackGasLimit, uint16 redundancy, uint64 deadline)
        internal
        view
        returns (ICoordinator.RequestParams memory)
    {
        return ICoordinator.RequestParams({
            modelId: MODEL,
            callbackGasLimit: callbackGasLimit,
            redundancy: redundancy,
            deadline: deadline,
            token: address(0),
            feePerNode: msg.value / redundancy
        });
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        results[requestId] = keccak256(output);
    }
}
