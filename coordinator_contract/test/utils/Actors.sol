// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";

/// @notice A consumer that records what it received, the gas it was given, and failures.
contract RecordingConsumer is InferenceConsumer {
    uint256 public lastRequestId;
    address public lastNode;
    bytes public lastOutput;
    uint256 public gasAtEntry;
    uint256 public calls;
    uint256 public failures;
    string public lastReason;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256)
    {
        return _requestInference(modelId, input, callbackGasLimit, msg.value);
    }

    function requestWith(ICoordinator.RequestParams calldata params, bytes calldata input)
        external
        payable
        returns (uint256)
    {
        return _requestInference(params, input);
    }

    function requestVerified(
        ICoordinator.RequestParams calldata params,
        bytes calldata input,
        address verifier
    ) external payable returns (uint256) {
        return _requestVerifiedInference(params, input, verifier);
    }

    function cancel(uint256 requestId) external returns (uint256) {
        return _cancelRequest(requestId);
    }

    function setSigner(address signer) external {
        _setDelegatedSigner(signer);
    }

    function fund(uint256 amount) external {
        _depositForDelegatedRequests(amount);
    }

    function approve(address token, uint256 amount) external {
        (bool ok,) =
            token.call(abi.encodeWithSignature("approve(address,uint256)", address(coordinator), amount));
        require(ok);
    }

    function withdrawRefunds(address token, address to) external returns (uint256) {
        return _withdrawRefunds(token, to);
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        gasAtEntry = gasleft();
        lastRequestId = requestId;
        lastNode = node;
        lastOutput = output;
        calls += 1;
    }

    function _onInferenceError(uint256 requestId, string calldata reason) internal override {
        lastRequestId = requestId;
        lastReason = reason;
        failures += 1;
    }
}

/// @notice A consumer whose callbacks always revert.
contract RevertingConsumer is InferenceConsumer {
    error Nope();

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256, address, bytes calldata) internal pure override {
        revert Nope();
    }

    function _onInferenceError(uint256, string calldata) internal pure override {
        revert Nope();
    }
}

/// @notice A consumer whose callbacks burn every unit of gas they are given.
contract GasBombConsumer is InferenceConsumer {
    uint256 public sink;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256, address, bytes calldata) internal override {
        _burn();
    }

    function _onInferenceError(uint256, string calldata) internal override {
        _burn();
    }

    function _burn() internal {
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

    function _onInferenceResult(uint256, address, bytes calldata) internal pure override {
        assembly {
            revert(0, 500000)
        }
    }
}

/// @notice A consumer that tries to re-enter the coordinator from its callbacks: deliver again, reclaim early,
/// withdraw someone's balance.
contract ReentrantConsumer is InferenceConsumer {
    uint256 public reentryFailures;

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, uint32 callbackGasLimit) external payable returns (uint256) {
        return _requestInference(modelId, hex"01", callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata output) internal override {
        try coordinator.deliver(requestId, output) {}
        catch {
            reentryFailures += 1;
        }
        try coordinator.reclaim(requestId) {}
        catch {
            reentryFailures += 1;
        }
        try coordinator.withdraw(address(0), address(this)) {}
        catch {
            reentryFailures += 1;
        }
    }
}

/// @notice An account that refuses ETH, to test failed withdrawals.
contract RejectingRecipient {
    receive() external payable {
        revert("no thanks");
    }
}

/// @notice A node operated by a contract, so tests can call the coordinator with a chosen amount of gas.
contract MockNode {
    ICoordinator public immutable coordinator;

    constructor(ICoordinator coordinator_) {
        coordinator = coordinator_;
    }

    function deliver(uint256 requestId, bytes calldata output, uint256 gasToForward) external returns (bool) {
        return coordinator.deliver{gas: gasToForward}(requestId, output);
    }
}
