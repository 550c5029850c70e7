// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";

/// @title TallyConsumer
/// @notice The gas benchmark's (bench/gas_consensus.py) other baseline: a plain redundant request whose consumer buys
/// agreement itself, the least a contract must do without consensus requests: it counts equal outputs per request
/// and takes the first one `quorum` deliveries agree on (and it still pays every node, whatever each answered).
contract TallyConsumer is InferenceConsumer {
    /// @notice The model id every request of this consumer asks for.
    bytes32 public constant MODEL = keccak256("bench/echo@1");
    /// @notice Deliveries that must agree.
    uint256 public immutable quorum;

    /// @notice How many deliveries carried each output hash, by request.
    mapping(uint256 requestId => mapping(bytes32 outputHash => uint256)) public votes;
    /// @notice The output hash `quorum` deliveries agreed on (0 until then), by request.
    mapping(uint256 requestId => bytes32 outputHash) public results;

    constructor(address coordinator_, uint256 quorum_) InferenceConsumer(coordinator_) {
        quorum = quorum_;
    }

    /// @notice Asks `redundancy` nodes (each paid `msg.value / redundancy`) by `deadline`.
    function requestRedundant(
        bytes calldata input,
        uint32 callbackGasLimit,
        uint16 redundancy,
        uint64 deadline
    ) external payable returns (uint256) {
        return _requestInference(
            ICoordinator.RequestParams({
                modelId: MODEL,
                callbackGasLimit: callbackGasLimit,
                redundancy: redundancy,
                deadline: deadline,
                token: address(0),
                feePerNode: msg.value / redundancy
            }),
            input
        );
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        bytes32 outputHash = keccak256(output);
        uint256 count = votes[requestId][outputHash] + 1;
        votes[requestId][outputHash] = count;
        if (count == quorum && results[requestId] == 0) results[requestId] = outputHash;
    }
}
