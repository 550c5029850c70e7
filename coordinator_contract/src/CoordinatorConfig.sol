// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "./interfaces/ICoordinator.sol";

/// @title CoordinatorConfig
/// @notice The Coordinator's owner, protocol fee and limits.
/// @dev Each limit is capped so that a request's record fits in two storage slots (see `Coordinator.Request`):
/// `minFee` below 2^80 wei, `maxCallbackGasLimit` below 2^24 gas, `maxRedundancy` and `minFailureReports` at most
/// 255, `maxDeadlineWindow` at most `MAX_DEADLINE_WINDOW`. The fields a request reads share two slots.
abstract contract CoordinatorConfig {
    /// @notice Highest protocol fee rate, in basis points of each node's fee (10%).
    uint16 public constant MAX_PROTOCOL_FEE_BPS = 1_000;
    /// @notice Longest `maxDeadlineWindow` the owner may set, in seconds.
    uint64 public constant MAX_DEADLINE_WINDOW = 365 days;

    /// @notice The account that sets the protocol fee and the limits.
    address public owner;
    /// @notice Protocol fee rate of requests made from now on, in basis points of each node's fee.
    uint16 public protocolFeeBps;
    uint80 internal _minFee;
    /// @notice Who receives protocol fees, read at delivery time.
    address public protocolFeeRecipient;
    /// @notice Highest callback gas limit a request may ask for, in gas.
    uint32 public maxCallbackGasLimit;
    /// @notice Longest input a request may carry, in bytes.
    uint32 public maxInputBytes;
    /// @notice Longest output a node may deliver, in bytes (read at delivery).
    uint32 public maxOutputBytes;
    /// @notice Highest redundancy (nodes per request) a request may ask for.
    uint16 public maxRedundancy;
    /// @notice Fewest failure reports that close a request (the quorum is `max(redundancy, minFailureReports)`).
    uint16 public minFailureReports;
    /// @notice Latest deadline a request may set, in seconds after `block.timestamp`.
    uint64 public maxDeadlineWindow;
    /// @notice Deadline of requests made with the short `requestInference` form, in seconds after `block.timestamp`.
    uint64 public defaultDeadlineWindow = 1 hours;

    modifier onlyOwner() {
        if (msg.sender != owner) revert ICoordinator.Unauthorized(msg.sender);
        _;
    }

    constructor(address owner_) {
        owner = owner_;
        protocolFeeRecipient = owner_;
        emit ICoordinator.OwnershipTransferred(address(0), owner_);
        _setLimits(0, 2_000_000, 16 * 1024, 16 * 1024, 16, 2, 30 days);
    }

    /// @notice Sets the protocol fee rate for requests made from now on (each request keeps its rate) and who receives
    /// protocol fees from now on (read at delivery time, also for older requests).
    function setProtocolFee(uint16 bps, address recipient) external onlyOwner {
        if (bps > MAX_PROTOCOL_FEE_BPS) revert ICoordinator.ProtocolFeeTooHigh(bps, MAX_PROTOCOL_FEE_BPS);
        if (recipient == address(0)) revert ICoordinator.InvalidLimit();
        protocolFeeBps = bps;
        protocolFeeRecipient = recipient;
        emit ICoordinator.ProtocolFeeChanged(bps, recipient);
    }

    /// @notice Sets the protocol limits. `minFee`, `maxCallbackGasLimit`, `maxInputBytes`, `maxRedundancy` and
    /// `maxDeadlineWindow` apply to requests made from now on; `maxOutputBytes` and `minFailureReports` are read when a
    /// node delivers or reports, so they apply to open requests too. Reverts with `InvalidLimit` for a zero limit and
    /// `LimitOutOfRange` above a cap (see the contract's notes).
    function setLimits(
        uint256 minFee_,
        uint32 maxCallbackGasLimit_,
        uint32 maxInputBytes_,
        uint32 maxOutputBytes_,
        uint16 maxRedundancy_,
        uint16 minFailureReports_,
        uint64 maxDeadlineWindow_
    ) external onlyOwner {
        _setLimits(
            minFee_,
            maxCallbackGasLimit_,
            maxInputBytes_,
            maxOutputBytes_,
            maxRedundancy_,
            minFailureReports_,
            maxDeadlineWindow_
        );
    }

    /// @notice Hands the owner role to `newOwner`.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert ICoordinator.InvalidLimit();
        emit ICoordinator.OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @notice Lowest fee per node a request may pay, in wei (or the token's smallest unit).
    function minFee() external view returns (uint256) {
        return _minFee;
    }

    function _setLimits(
        uint256 minFee_,
        uint32 maxCallbackGasLimit_,
        uint32 maxInputBytes_,
        uint32 maxOutputBytes_,
        uint16 maxRedundancy_,
        uint16 minFailureReports_,
        uint64 maxDeadlineWindow_
    ) internal {
        if (
            maxCallbackGasLimit_ == 0 || maxInputBytes_ == 0 || maxOutputBytes_ == 0 || maxRedundancy_ == 0
                || minFailureReports_ == 0 || maxDeadlineWindow_ == 0
                || maxDeadlineWindow_ < defaultDeadlineWindow
        ) revert ICoordinator.InvalidLimit();
        _checkRange(minFee_, type(uint80).max);
        _checkRange(maxCallbackGasLimit_, type(uint24).max);
        _checkRange(maxRedundancy_, type(uint8).max);
        _checkRange(minFailureReports_, type(uint8).max);
        _checkRange(maxDeadlineWindow_, MAX_DEADLINE_WINDOW);
        // casting to 'uint80' is safe because minFee_ was checked against type(uint80).max above
        // forge-lint: disable-next-line(unsafe-typecast)
        _minFee = uint80(minFee_);
        maxCallbackGasLimit = maxCallbackGasLimit_;
        maxInputBytes = maxInputBytes_;
        maxOutputBytes = maxOutputBytes_;
        maxRedundancy = maxRedundancy_;
        minFailureReports = minFailureReports_;
        maxDeadlineWindow = maxDeadlineWindow_;
        emit ICoordinator.LimitsChanged(
            minFee_,
            maxCallbackGasLimit_,
            maxInputBytes_,
            maxOutputBytes_,
            maxRedundancy_,
            minFailureReports_,
            maxDeadlineWindow_
        );
    }

    function _checkRange(uint256 value, uint256 max) private pure {
        if (value > max) revert ICoordinator.LimitOutOfRange(value, max);
    }
}
