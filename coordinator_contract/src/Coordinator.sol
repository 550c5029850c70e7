// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./interfaces/ICoordinator.sol";

/// @title Coordinator
/// @notice Takes inference requests from consumer contracts, escrows their fees, and settles deliveries from
/// registered nodes.
/// @dev Guarantees: a request is fulfilled at most once; the fee is escrowed at request time, so a delivered
/// result is always paid; the consumer's callback runs with exactly its `callbackGasLimit` inside an isolated call
/// whose return data is never copied, so a reverting or hostile consumer cannot revert the node's delivery or make
/// it cost more than the limit the consumer chose.
contract Coordinator is ICoordinator {
    /// @dev Gas kept back for the work between the gas check and the CALL opcode (warm call, memory).
    uint256 private constant GAS_FOR_CALL_EXACT_CHECK = 5_000;

    struct Request {
        address consumer;
        uint32 callbackGasLimit;
        bool fulfilled;
        uint256 fee;
    }

    /// @notice The account that registers nodes and sets limits.
    address public owner;
    /// @notice Smallest fee a request may carry, in wei.
    uint256 public minFee;
    /// @notice Largest callback gas limit a request may ask for.
    uint32 public maxCallbackGasLimit;
    /// @notice Largest request input, in bytes.
    uint32 public maxInputBytes;
    /// @notice Largest delivered output, in bytes.
    uint32 public maxOutputBytes;
    /// @notice Id the next request will get; ids start at 1.
    uint256 public nextRequestId = 1;
    /// @notice Whether an address may deliver results.
    mapping(address => bool) public isNode;
    /// @notice Fees earned and not yet withdrawn, by node.
    mapping(address => uint256) public balanceOf;
    mapping(uint256 => Request) internal _requests;

    modifier onlyOwner() {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        _;
    }

    constructor(address owner_) {
        owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
        _setLimits(0, 2_000_000, 16 * 1024, 16 * 1024);
    }

    // ----------------------------------------------------------------------------------------------- owner

    /// @notice Allows `node` to deliver results.
    function registerNode(address node) external onlyOwner {
        if (isNode[node]) revert NodeAlreadyRegistered(node);
        isNode[node] = true;
        emit NodeRegistered(node);
    }

    /// @notice Stops `node` from delivering; fees it already earned stay withdrawable.
    function removeNode(address node) external onlyOwner {
        if (!isNode[node]) revert NodeNotRegistered(node);
        isNode[node] = false;
        emit NodeRemoved(node);
    }

    /// @notice Sets the protocol limits; requests already made keep the fee and gas limit they were made with.
    function setLimits(
        uint256 minFee_,
        uint32 maxCallbackGasLimit_,
        uint32 maxInputBytes_,
        uint32 maxOutputBytes_
    ) external onlyOwner {
        _setLimits(minFee_, maxCallbackGasLimit_, maxInputBytes_, maxOutputBytes_);
    }

    /// @notice Hands the owner role to `newOwner`.
    function transferOwnership(address newOwner) external onlyOwner {
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // -------------------------------------------------------------------------------------------- requests

    /// @inheritdoc ICoordinator
    function requestInference(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256 requestId)
    {
        if (callbackGasLimit == 0 || callbackGasLimit > maxCallbackGasLimit) {
            revert InvalidCallbackGasLimit(callbackGasLimit, maxCallbackGasLimit);
        }
        if (input.length == 0 || input.length > maxInputBytes) {
            revert InvalidInputLength(input.length, maxInputBytes);
        }
        if (msg.value < minFee) revert FeeTooLow(msg.value, minFee);

        requestId = nextRequestId++;
        _requests[requestId] = Request({
            consumer: msg.sender, callbackGasLimit: callbackGasLimit, fulfilled: false, fee: msg.value
        });
        emit RequestCreated(requestId, modelId, msg.sender, input, msg.value, callbackGasLimit);
    }

    /// @inheritdoc ICoordinator
    function deliver(uint256 requestId, bytes calldata output) external returns (bool callbackOk) {
        if (!isNode[msg.sender]) revert NodeNotRegistered(msg.sender);
        Request storage r = _requests[requestId];
        address consumer = r.consumer;
        if (consumer == address(0)) revert UnknownRequest(requestId);
        if (r.fulfilled) revert AlreadyFulfilled(requestId);
        if (output.length > maxOutputBytes) revert OutputTooLarge(output.length, maxOutputBytes);

        // Effects before the callback: the request is settled and the node paid whatever the consumer does.
        r.fulfilled = true;
        uint256 fee = r.fee;
        if (fee != 0) balanceOf[msg.sender] += fee;

        callbackOk = _callWithExactGas(
            r.callbackGasLimit,
            consumer,
            abi.encodeWithSignature("rawFulfill(uint256,bytes)", requestId, output)
        );
        emit RequestFulfilled(requestId, msg.sender, keccak256(output), callbackOk);
    }

    /// @notice Sends the caller's earned fees to `to`.
    function withdraw(address to) external returns (uint256 amount) {
        amount = balanceOf[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        balanceOf[msg.sender] = 0;
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
        emit Withdrawn(msg.sender, to, amount);
    }

    // --------------------------------------------------------------------------------------------- views

    /// @notice The stored state of a request: its consumer, callback gas limit, escrowed fee and whether it was
    /// fulfilled. The consumer is the zero address for an unknown id.
    function getRequest(uint256 requestId)
        external
        view
        returns (address consumer, uint32 callbackGasLimit, uint256 fee, bool fulfilled)
    {
        Request storage r = _requests[requestId];
        return (r.consumer, r.callbackGasLimit, r.fee, r.fulfilled);
    }

    // ------------------------------------------------------------------------------------------ internal

    function _setLimits(
        uint256 minFee_,
        uint32 maxCallbackGasLimit_,
        uint32 maxInputBytes_,
        uint32 maxOutputBytes_
    ) internal {
        if (maxCallbackGasLimit_ == 0 || maxInputBytes_ == 0 || maxOutputBytes_ == 0) {
            revert InvalidLimit();
        }
        minFee = minFee_;
        maxCallbackGasLimit = maxCallbackGasLimit_;
        maxInputBytes = maxInputBytes_;
        maxOutputBytes = maxOutputBytes_;
        emit LimitsChanged(minFee_, maxCallbackGasLimit_, maxInputBytes_, maxOutputBytes_);
    }

    /// @dev Calls `target` with exactly `gasAmount` gas, or reverts if the transaction cannot supply that much
    /// after the 63/64 rule, so a node cannot starve a callback to make it fail. Return data is not copied.
    function _callWithExactGas(uint32 gasAmount, address target, bytes memory data)
        private
        returns (bool success)
    {
        if (target.code.length == 0) return false;
        uint256 g = gasleft();
        if (
            g < GAS_FOR_CALL_EXACT_CHECK
                || (g - GAS_FOR_CALL_EXACT_CHECK) - (g - GAS_FOR_CALL_EXACT_CHECK) / 64 <= gasAmount
        ) {
            revert InsufficientGasForCallback(g, gasAmount);
        }
        assembly ("memory-safe") {
            success := call(gasAmount, target, 0, add(data, 0x20), mload(data), 0, 0)
        }
    }
}
