// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../../src/interfaces/IConsensus.sol";

/// @title CallbackCounter
/// @notice A consumer for the node's end-to-end tests: sends any bytes to any model with any redundancy and deadline,
/// and records every callback it gets (results and errors, in order), so a test can check that each request ends in
/// exactly the callbacks the protocol promises.
contract CallbackCounter is InferenceConsumer {
    /// @notice Result callbacks per request (one per delivering node).
    mapping(uint256 requestId => uint256) public results;
    /// @notice Error callbacks per request (at most one).
    mapping(uint256 requestId => uint256) public errors;
    /// @notice keccak256 of the last output handed to the result callback, per request.
    mapping(uint256 requestId => bytes32) public outputHashes;
    /// @notice An error callback's reason (an event: storing a long string would not fit the error callback's gas).
    event ErrorReceived(uint256 indexed requestId, string reason);

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    /// @notice Asks `redundancy` nodes for `model` on `input`, each paid `msg.value / redundancy` wei, by `deadline`.
    function ask(bytes32 model, bytes calldata input, uint16 redundancy, uint64 deadline)
        external
        payable
        returns (uint256)
    {
        return _requestInference(
            ICoordinator.RequestParams({
                modelId: model,
                callbackGasLimit: 200_000,
                redundancy: redundancy,
                deadline: deadline,
                token: address(0),
                feePerNode: msg.value / redundancy
            }),
            input
        );
    }

    /// @notice Asks `redundancy` nodes for `model` on `input` as a consensus request: one callback once `quorum` of
    /// them revealed the same output; commits for `commitWindow` seconds; `modelDigest` required of them (0: any).
    /// Each node is offered `msg.value / redundancy` wei.
    function askConsensus(
        bytes32 model,
        bytes calldata input,
        uint16 redundancy,
        uint16 quorum,
        uint32 commitWindow,
        bytes32 modelDigest,
        uint64 deadline
    ) external payable returns (uint256) {
        return _requestConsensusInference(
            ICoordinator.RequestParams({
                modelId: model,
                callbackGasLimit: 200_000,
                redundancy: redundancy,
                deadline: deadline,
                token: address(0),
                feePerNode: msg.value / redundancy
            }),
            input,
            IConsensus.ConsensusParams({quorum: quorum, commitWindow: commitWindow, modelDigest: modelDigest})
        );
    }

    /// @notice Cancels a request nobody acted on yet; its escrow is credited to this contract.
    function cancel(uint256 requestId) external returns (uint256) {
        return _cancelRequest(requestId);
    }

    /// @notice Moves this contract's refunds on the coordinator to `to`.
    function withdrawRefunds(address to) external returns (uint256) {
        return _withdrawRefunds(address(0), to);
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        results[requestId] += 1;
        outputHashes[requestId] = keccak256(output);
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        errors[requestId] += 1;
        emit ErrorReceived(requestId, reason);
    }
}
