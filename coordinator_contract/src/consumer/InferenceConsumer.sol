// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "../interfaces/ICoordinator.sol";

/// @title InferenceConsumer
/// @notice Inherit this to ask the Infera coordinator for inference and receive the answer.
/// @dev Implement `_onInferenceResult`; call `_requestInference` to ask. Only the coordinator can call
/// `rawFulfill`, so a result always comes from a delivery the coordinator accepted.
abstract contract InferenceConsumer {
    /// @notice Thrown by `rawFulfill` when called by anyone but the coordinator.
    error OnlyCoordinator(address caller);

    /// @notice The coordinator this consumer trusts for results.
    ICoordinator public immutable coordinator;

    constructor(address coordinator_) {
        coordinator = ICoordinator(coordinator_);
    }

    /// @notice Entry point for results; the coordinator calls it with the callback gas limit of the request.
    function rawFulfill(uint256 requestId, bytes calldata output) external {
        if (msg.sender != address(coordinator)) revert OnlyCoordinator(msg.sender);
        _onInferenceResult(requestId, output);
    }

    /// @dev Sends a request paying `fee` wei from this contract's balance (or the `msg.value` it was given).
    function _requestInference(bytes32 modelId, bytes memory input, uint32 callbackGasLimit, uint256 fee)
        internal
        returns (uint256 requestId)
    {
        return coordinator.requestInference{value: fee}(modelId, input, callbackGasLimit);
    }

    /// @dev Receives the ABI-encoded output of the model for `requestId`. Keep it within the callback gas limit.
    function _onInferenceResult(uint256 requestId, bytes calldata output) internal virtual;
}
