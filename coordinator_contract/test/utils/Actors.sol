// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";

/// @notice A consumer that records what it received and the gas it was given.
contract RecordingConsumer is InferenceConsumer {
    uint256 public lastRequestId;
    bytes public lastOutput;
    uint256 public gasAtEntry;
    uint256 public calls;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256)
    {
        return _requestInference(modelId, input, callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256 requestId, bytes calldata output) internal override {
        gasAtEntry = gasleft();
        lastRequestId = requestId;
        lastOutput = output;
        calls += 1;
    }
}

/// @notice A consumer whose callback always reverts.
contract RevertingConsumer is InferenceConsumer {
    error Nope();

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256, bytes calldata) internal pure override {
        revert Nope();
    }
}

/// @notice A consumer whose callback burns every unit of gas it is given.
contract GasBombConsumer is InferenceConsumer {
    uint256 public sink;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256, bytes calldata) internal override {
        while (true) {
            sink += 1;
        }
    }
}

/// @notice A consumer that reverts with a huge reason, hoping the coordinator copies it into memory.
contract ReturnBombConsumer is InferenceConsumer {
    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256, bytes calldata) internal pure override {
        assembly {
            revert(0, 500000)
        }
    }
}

/// @notice A consumer that tries to re-enter `deliver` from its callback.
contract ReentrantConsumer is InferenceConsumer {
    bool public reentryFailed;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256 requestId, bytes calldata output) internal override {
        try coordinator.deliver(requestId, output) {}
        catch {
            reentryFailed = true;
        }
    }
}

/// @notice An account that refuses ETH, to test failed withdrawals.
contract RejectingRecipient {
    receive() external payable {
        revert("no thanks");
    }
}

/// @notice A node operated by a contract, so tests can call `deliver` with a chosen amount of gas.
contract MockNode {
    ICoordinator public immutable coordinator;

    constructor(ICoordinator coordinator_) {
        coordinator = coordinator_;
    }

    function deliver(uint256 requestId, bytes calldata output, uint256 gasToForward) external returns (bool) {
        return coordinator.deliver{gas: gasToForward}(requestId, output);
    }
}
