// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IVerifier} from "../interfaces/IVerifier.sol";
import {ICoordinator} from "../interfaces/ICoordinator.sol";
import {INodeRegistry} from "../interfaces/INodeRegistry.sol";

/// @title VerifierBase
/// @notice What Infera's verifiers share: the Coordinator they serve, the NodeRegistry they slash through, an owner
/// and the amount a node loses for an output found invalid.
/// @dev A verifier slashes only once the registry's owner approved it (`NodeRegistry.setVerifier`). The slash takes
/// `min(slashAmount, stake)`, so a node whose stake fell below `slashAmount` still loses what it has, and a node that
/// already left the registry (stake zero) is not slashed rather than making the verdict revert.
abstract contract VerifierBase is IVerifier {
    /// @notice Thrown by owner-only functions when called by anyone else.
    error Unauthorized(address caller);
    /// @notice Thrown by `verify` when called by anyone but the Coordinator.
    error NotTheCoordinator(address caller);
    /// @notice Thrown by the constructor and `transferOwnership` for a zero owner, coordinator or registry.
    error InvalidParameter();

    /// @notice Ownership moved to a new address.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    /// @notice The owner changed what a node loses for an invalid output, in wei of stake.
    event SlashAmountChanged(uint256 amountWei);

    /// @notice The Coordinator whose deliveries this verifier judges.
    ICoordinator public immutable coordinator;
    /// @notice The NodeRegistry through which it slashes.
    INodeRegistry public immutable registry;
    /// @notice The account that sets the slash amount (and, per verifier, its other settings).
    address public owner;
    /// @notice Stake a node loses for an output found invalid, in wei (capped by the node's stake).
    uint256 public slashAmount;

    modifier onlyOwner() {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        _;
    }

    modifier onlyCoordinator() {
        if (msg.sender != address(coordinator)) revert NotTheCoordinator(msg.sender);
        _;
    }

    constructor(address owner_, ICoordinator coordinator_, INodeRegistry registry_, uint256 slashAmountWei) {
        if (owner_ == address(0) || address(coordinator_) == address(0) || address(registry_) == address(0)) {
            revert InvalidParameter();
        }
        owner = owner_;
        coordinator = coordinator_;
        registry = registry_;
        slashAmount = slashAmountWei;
        emit OwnershipTransferred(address(0), owner_);
        emit SlashAmountChanged(slashAmountWei);
    }

    /// @notice Sets the stake a node loses for an invalid output, in wei; owner only.
    function setSlashAmount(uint256 amountWei) external onlyOwner {
        slashAmount = amountWei;
        emit SlashAmountChanged(amountWei);
    }

    /// @notice Hands the owner role to `newOwner`; owner only.
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert InvalidParameter();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    /// @dev Slashes `min(slashAmount, stake)` of `node`'s stake to `recipient`; returns the amount (zero: no slash).
    function _slash(address node, address recipient) internal returns (uint256 amount) {
        uint256 stake = registry.stakeOf(node);
        amount = slashAmount < stake ? slashAmount : stake;
        if (amount != 0) registry.slash(node, amount, recipient);
    }
}
