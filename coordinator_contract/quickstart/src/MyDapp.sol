// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {InferenceConsumer} from "@infera/contracts/src/consumer/InferenceConsumer.sol";
import {ICoordinator} from "@infera/contracts/src/interfaces/ICoordinator.sol";

contract MyDapp is InferenceConsumer {
    bytes32 constant MODEL = keccak256("classify/minilm-sentiment@1");
    uint256 constant FEE = 0.001 ether; // per node: ask the operators
    address immutable owner = msg.sender;
    mapping(uint256 => string) public labels;
    mapping(uint256 => bool) public failed;

    constructor(address coordinator) InferenceConsumer(coordinator) {}

    // Short form: one node, paid msg.value in ETH, deadline one hour from now.
    function ask(string calldata text) external payable returns (uint256) {
        return _requestInference(MODEL, abi.encode(text), 200_000, msg.value);
    }

    // Full form: three nodes, each paid FEE; the caller sends 3 * FEE.
    function askThree(string calldata text) external payable returns (uint256) {
        require(msg.value == 3 * FEE, "fee");
        return _requestInference(
            ICoordinator.RequestParams({
                modelId: MODEL,
                callbackGasLimit: 200_000,
                redundancy: 3,
                deadline: uint64(block.timestamp + 10 minutes),
                token: address(0), // ETH; an ERC-20 address to pay in that token
                feePerNode: FEE
            }),
            abi.encode(text)
        );
    }

    // The second argument is the node that answered.
    function _onInferenceResult(uint256 id, address, bytes calldata output) internal override {
        (string memory label,) = abi.decode(output, (string, uint256));
        labels[id] = label; // with redundancy 3 this runs up to three times, once per node
    }

    // Optional. Enough nodes said they cannot serve the request, or its deadline passed with a slot unserved; the
    // unused escrow is already refunded. Runs at most once per request.
    function _onInferenceError(uint256 id, string calldata) internal override {
        failed[id] = true;
    }

    // Refunds are credited to this contract on the Coordinator: expose a way to take them out.
    function withdrawRefunds(address to) external returns (uint256) {
        require(msg.sender == owner, "owner");
        return _withdrawRefunds(address(0), to);
    }
}
