// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IEscrow
/// @notice Balances, payments and callbacks shared by the Coordinator and the SubscriptionManager.
interface IEscrow {
    /// @notice Thrown by requests if the ETH sent is not exactly `feePerNode * redundancy` (or not zero for a token).
    error WrongPayment(uint256 sent, uint256 expected);
    /// @notice Thrown by requests in a token that delivered less than the amount asked for (fee-on-transfer).
    error UnsupportedToken(address token);
    /// @notice Thrown by `deliver` if the transaction left too little gas to give the callback its full limit.
    error InsufficientGasForCallback(uint256 gasLeft, uint32 callbackGasLimit);
    /// @notice Thrown by `withdraw` if the caller has nothing to withdraw in that token.
    error NothingToWithdraw(address account, address token);
    /// @notice Thrown if an ETH or token transfer out of the coordinator failed.
    error TransferFailed(address token, address to, uint256 amount);
    /// @notice Someone withdrew their balance (node earnings, refunds, protocol fees).
    event Withdrawn(address indexed account, address indexed token, address to, uint256 amount);
    /// @notice Someone added to `account`'s balance (to fund delegated requests).
    event Deposited(address indexed account, address indexed token, uint256 amount);

    /// @notice Sends the caller's balance in `token` (zero for ETH) to `to`.
    function withdraw(address token, address to) external returns (uint256 amount);
    /// @notice Adds `amount` of `token` (ETH: `msg.value`) to `account`'s balance, e.g. to fund delegated requests.
    function deposit(address token, address account, uint256 amount) external payable;
}
