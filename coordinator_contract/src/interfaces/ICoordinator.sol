// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title ICoordinator
/// @notice What a consumer contract and an Infera node need to know about the coordinator.
interface ICoordinator {
    /// @notice Thrown by owner-only functions when called by anyone else.
    error Unauthorized(address caller);
    /// @notice Thrown by `registerNode` if the node is already registered.
    error NodeAlreadyRegistered(address node);
    /// @notice Thrown by `deliver` and `removeNode` if the address is not a registered node.
    error NodeNotRegistered(address node);
    /// @notice Thrown by `requestInference` if the callback gas limit is zero or above the protocol maximum.
    error InvalidCallbackGasLimit(uint32 callbackGasLimit, uint32 maxCallbackGasLimit);
    /// @notice Thrown by `requestInference` if the input is empty or longer than the protocol maximum.
    error InvalidInputLength(uint256 length, uint256 maxInputBytes);
    /// @notice Thrown by `requestInference` if the fee sent is below the minimum fee.
    error FeeTooLow(uint256 fee, uint256 minFee);
    /// @notice Thrown by `deliver` if no request has this id.
    error UnknownRequest(uint256 requestId);
    /// @notice Thrown by `deliver` if the request was already fulfilled.
    error AlreadyFulfilled(uint256 requestId);
    /// @notice Thrown by `deliver` if the output is longer than the protocol maximum.
    error OutputTooLarge(uint256 length, uint256 maxOutputBytes);
    /// @notice Thrown by `deliver` if the transaction left too little gas to give the callback its full limit.
    error InsufficientGasForCallback(uint256 gasLeft, uint32 callbackGasLimit);
    /// @notice Thrown by `withdraw` if the caller has nothing to withdraw.
    error NothingToWithdraw(address account);
    /// @notice Thrown by `withdraw` if the ETH transfer to the recipient failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice Thrown by `setLimits` if a limit is zero.
    error InvalidLimit();

    /// @notice A node was allowed to deliver results.
    event NodeRegistered(address indexed node);
    /// @notice A node was removed; it can no longer deliver.
    event NodeRemoved(address indexed node);
    /// @notice A consumer asked for inference. Carries everything a node needs to serve it without a read.
    event RequestCreated(
        uint256 indexed requestId,
        bytes32 indexed modelId,
        address indexed consumer,
        bytes input,
        uint256 fee,
        uint32 callbackGasLimit
    );
    /// @notice A node delivered a result. `callbackOk` is false if the consumer's callback reverted or ran out
    /// of its gas; the node is paid either way.
    event RequestFulfilled(
        uint256 indexed requestId, address indexed node, bytes32 outputHash, bool callbackOk
    );
    /// @notice A node or the owner withdrew earned fees.
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice The owner changed the protocol limits.
    event LimitsChanged(
        uint256 minFee, uint32 maxCallbackGasLimit, uint32 maxInputBytes, uint32 maxOutputBytes
    );
    /// @notice Ownership moved to a new address.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);

    /// @notice Asks the registered nodes to run `modelId` on `input`; `msg.value` is the fee, held in escrow until
    /// a node delivers. The consumer (`msg.sender`) is called back with at most `callbackGasLimit` gas.
    function requestInference(bytes32 modelId, bytes calldata input, uint32 callbackGasLimit)
        external
        payable
        returns (uint256 requestId);

    /// @notice Delivers `output` for `requestId`; called by a registered node.
    function deliver(uint256 requestId, bytes calldata output) external returns (bool callbackOk);
}
