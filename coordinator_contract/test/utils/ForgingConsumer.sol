// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../../src/consumer/InferenceConsumer.sol";

/// @notice A consumer whose result callback emits a log shaped like the coordinator's `DeliverySkipped`, naming the
/// delivering node (`tx.origin`) and carrying no data: a node that read outcomes from every log of its receipt would
/// record a forged outcome, or fail to decode it (the node's fault tests deploy it).
contract ForgingConsumer is InferenceConsumer {
    event DeliverySkipped(uint256 indexed requestId, address indexed node, bytes4 indexed reason);

    constructor(address coordinator_) InferenceConsumer(coordinator_) {}

    function request(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256)
    {
        return _requestInference(modelId, input, callbackGasLimit, msg.value);
    }

    function _onInferenceResult(uint256 requestId, address, bytes calldata) internal override {
        // forge-lint: disable-next-line(tx-origin)
        emit DeliverySkipped(requestId, tx.origin, bytes4(0xdeadbeef));
    }
}
