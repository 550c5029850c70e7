// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IEscrow} from "./interfaces/IEscrow.sol";

/// @title Escrow
/// @notice What the Coordinator and the SubscriptionManager share: withdrawable balances per token, deposits, safe
/// ERC-20 transfers (tokens that return no bool work; fee-on-transfer tokens are refused), and callbacks with exact gas.
abstract contract Escrow is IEscrow {
    /// @dev Gas kept back for the work between the gas check and the CALL opcode.
    uint256 private constant GAS_FOR_CALL_EXACT_CHECK = 5_000;

    /// @notice Withdrawable balances: node earnings, consumer refunds, protocol fees; by token, then account.
    mapping(address token => mapping(address account => uint256)) public balanceOf;

    /// @notice Adds `amount` of `token` (zero for ETH, then `msg.value`) to `account`'s balance, which pays for its
    /// delegated requests and can be withdrawn by `account`.
    function deposit(address token, address account, uint256 amount) external payable {
        if (token == address(0)) {
            if (msg.value != amount) revert WrongPayment(msg.value, amount);
        } else {
            if (msg.value != 0) revert WrongPayment(msg.value, 0);
            _transferIn(token, msg.sender, amount);
        }
        balanceOf[token][account] += amount;
        emit Deposited(account, token, amount);
    }

    /// @notice Sends the caller's balance in `token` (zero for ETH) to `to`.
    function withdraw(address token, address to) external returns (uint256 amount) {
        amount = balanceOf[token][msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender, token);
        balanceOf[token][msg.sender] = 0;
        _transferOut(token, to, amount);
        emit Withdrawn(msg.sender, token, to, amount);
    }

    /// @dev Calls `target` with exactly `gasAmount` gas, or reverts if the transaction cannot supply that much
    /// after the 63/64 rule, so a node cannot starve a callback to make it fail. Return data is not copied.
    function _callWithExactGas(uint32 gasAmount, address target, bytes memory data)
        internal
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

    /// @dev Pulls `amount` of `token` from `from`; works with tokens that return no bool; refuses tokens that
    /// deliver less than asked (fee-on-transfer), which would leave escrow short.
    function _transferIn(address token, address from, uint256 amount) internal {
        uint256 before = _tokenBalance(token);
        bytes memory call =
            abi.encodeWithSignature("transferFrom(address,address,uint256)", from, address(this), amount);
        if (!_tokenCall(token, call)) revert TransferFailed(token, from, amount);
        if (_tokenBalance(token) - before != amount) revert UnsupportedToken(token);
    }

    function _transferOut(address token, address to, uint256 amount) internal {
        bool ok;
        if (token == address(0)) (ok,) = to.call{value: amount}("");
        else ok = _tokenCall(token, abi.encodeWithSignature("transfer(address,uint256)", to, amount));
        if (!ok) revert TransferFailed(token, to, amount);
    }

    /// @dev True if the token call succeeded and returned nothing or `true`.
    function _tokenCall(address token, bytes memory data) internal returns (bool) {
        if (token.code.length == 0) revert UnsupportedToken(token);
        (bool ok, bytes memory ret) = token.call(data);
        return ok && (ret.length == 0 || (ret.length >= 32 && abi.decode(ret, (bool))));
    }

    function _tokenBalance(address token) internal view returns (uint256) {
        (bool ok, bytes memory ret) =
            token.staticcall(abi.encodeWithSignature("balanceOf(address)", address(this)));
        if (!ok || ret.length < 32) revert UnsupportedToken(token);
        return abi.decode(ret, (uint256));
    }

    /// @dev Takes `amount` as ETH (`msg.value` must match) or pulls it in `token` from the caller.
    function _collect(address token, uint256 amount) internal {
        if (token == address(0)) {
            if (msg.value != amount) revert WrongPayment(msg.value, amount);
        } else {
            if (msg.value != 0) revert WrongPayment(msg.value, 0);
            _transferIn(token, msg.sender, amount);
        }
    }
}
