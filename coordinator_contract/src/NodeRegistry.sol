// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {INodeRegistry} from "./interfaces/INodeRegistry.sol";

/// @title NodeRegistry
/// @notice Nodes lock ETH as stake to become active; verifiers the owner approved slash misbehaving nodes.
/// @dev Guarantees: a node's stake stays slashable until it is withdrawn, unbonding included; the registry's
/// balance always covers `totalStaked` plus every unclaimed slashed balance; slashed ETH is credited, never
/// pushed, so a recipient that rejects ETH cannot block a slash; withdrawals clear state before sending ETH.
contract NodeRegistry is INodeRegistry {
    /// @dev Longest unbonding delay the owner may set.
    uint64 private constant MAX_UNBONDING_DELAY = 365 days;

    struct Node {
        uint128 stake;
        // Zero while bonded; set when unbonding starts, never zero then since the delay is at least 1 second.
        uint64 unlockAt;
        bool registered;
    }

    /// @notice What this contract is and its version, as "InferaNodeRegistry <semver>" (see the Coordinator's).
    string public constant typeAndVersion = "InferaNodeRegistry 0.1.0";
    /// @notice The account that approves verifiers and sets parameters.
    address public owner;
    /// @notice Smallest stake an active node holds, in wei.
    uint256 public minStake;
    /// @notice Seconds between `beginUnbonding` and the earliest `withdrawStake`.
    uint64 public unbondingDelay;
    /// @notice The sum of every node's stake.
    uint256 public totalStaked;
    /// @notice Slashed ETH credited to an account and not yet claimed.
    mapping(address => uint256) public slashedBalanceOf;
    /// @notice Whether an address may slash.
    mapping(address => bool) public isApprovedVerifier;
    mapping(address => Node) internal _nodes;
    /// @inheritdoc INodeRegistry
    mapping(address node => mapping(bytes32 modelId => bytes32)) public modelDigestOf;

    modifier onlyOwner() {
        if (msg.sender != owner) revert Unauthorized(msg.sender);
        _;
    }

    constructor(address owner_, uint256 minStake_, uint64 unbondingDelay_) {
        if (owner_ == address(0)) revert InvalidParameter();
        owner = owner_;
        emit OwnershipTransferred(address(0), owner_);
        _setParameters(minStake_, unbondingDelay_);
    }

    // ----------------------------------------------------------------------------------------------- nodes

    /// @inheritdoc INodeRegistry
    function register() external payable {
        Node storage n = _nodes[msg.sender];
        if (n.registered) revert AlreadyRegistered(msg.sender);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);
        if (msg.value > type(uint128).max) revert InvalidAmount();
        n.registered = true;
        // casting to 'uint128' is safe because msg.value was checked against type(uint128).max above
        // forge-lint: disable-next-line(unsafe-typecast)
        n.stake = uint128(msg.value);
        totalStaked += msg.value;
        emit NodeRegistered(msg.sender, msg.value);
    }

    /// @inheritdoc INodeRegistry
    function addStake() external payable {
        Node storage n = _bondedNode(msg.sender);
        if (msg.value == 0) revert InvalidAmount();
        uint256 total = uint256(n.stake) + msg.value;
        if (total > type(uint128).max) revert InvalidAmount();
        // casting to 'uint128' is safe because total was checked against type(uint128).max above
        // forge-lint: disable-next-line(unsafe-typecast)
        n.stake = uint128(total);
        totalStaked += msg.value;
        emit StakeAdded(msg.sender, msg.value, total);
    }

    /// @inheritdoc INodeRegistry
    function beginUnbonding() external {
        Node storage n = _bondedNode(msg.sender);
        // casting to 'uint64' is safe because block.timestamp stays below 2**64 for billions of years
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 unlock = uint64(block.timestamp) + unbondingDelay;
        n.unlockAt = unlock;
        emit UnbondingStarted(msg.sender, unlock);
    }

    /// @inheritdoc INodeRegistry
    function withdrawStake(address to) external returns (uint256 amount) {
        Node memory n = _nodes[msg.sender];
        if (n.unlockAt == 0) revert NotUnbonding(msg.sender);
        if (block.timestamp < n.unlockAt) revert UnbondingNotOver(msg.sender, n.unlockAt);
        amount = n.stake;
        delete _nodes[msg.sender];
        totalStaked -= amount;
        // A node slashed to zero still leaves the registry; there is just nothing to send.
        if (amount != 0) _send(to, amount);
        emit StakeWithdrawn(msg.sender, to, amount);
    }

    /// @inheritdoc INodeRegistry
    function commitModel(bytes32 modelId, bytes32 digest) external {
        if (!_nodes[msg.sender].registered) revert NotRegistered(msg.sender);
        if (digest == 0) revert InvalidParameter();
        modelDigestOf[msg.sender][modelId] = digest;
        emit ModelCommitted(msg.sender, modelId, digest);
    }

    // ------------------------------------------------------------------------------------------- slashing

    /// @inheritdoc INodeRegistry
    function slash(address node, uint256 amount, address recipient) external {
        if (!isApprovedVerifier[msg.sender]) revert VerifierNotApproved(msg.sender);
        if (amount == 0) revert InvalidAmount();
        if (recipient == address(0)) revert InvalidParameter();
        Node storage n = _nodes[node];
        if (!n.registered) revert NotRegistered(node);
        uint256 stake = n.stake;
        if (amount > stake) revert SlashExceedsStake(amount, stake);
        // casting to 'uint128' is safe because the result is below the stake, itself a uint128
        // forge-lint: disable-next-line(unsafe-typecast)
        n.stake = uint128(stake - amount);
        totalStaked -= amount;
        slashedBalanceOf[recipient] += amount;
        emit NodeSlashed(node, msg.sender, recipient, amount);
    }

    /// @inheritdoc INodeRegistry
    function claimSlashed(address to) external returns (uint256 amount) {
        amount = slashedBalanceOf[msg.sender];
        if (amount == 0) revert NothingToClaim(msg.sender);
        slashedBalanceOf[msg.sender] = 0;
        _send(to, amount);
        emit SlashedClaimed(msg.sender, to, amount);
    }

    // ----------------------------------------------------------------------------------------------- owner

    /// @inheritdoc INodeRegistry
    function setVerifier(address verifier, bool approved) external onlyOwner {
        isApprovedVerifier[verifier] = approved;
        emit VerifierApprovalChanged(verifier, approved);
    }

    /// @inheritdoc INodeRegistry
    function setParameters(uint256 minStake_, uint64 unbondingDelay_) external onlyOwner {
        _setParameters(minStake_, unbondingDelay_);
    }

    /// @inheritdoc INodeRegistry
    function transferOwnership(address newOwner) external onlyOwner {
        if (newOwner == address(0)) revert InvalidParameter();
        emit OwnershipTransferred(owner, newOwner);
        owner = newOwner;
    }

    // --------------------------------------------------------------------------------------------- views

    /// @inheritdoc INodeRegistry
    function isActive(address node) external view returns (bool) {
        Node storage n = _nodes[node];
        return n.registered && n.unlockAt == 0 && n.stake >= minStake;
    }

    /// @inheritdoc INodeRegistry
    function activeDigestFor(address node, bytes32 modelId)
        external
        view
        returns (bool active, bytes32 digest)
    {
        Node storage n = _nodes[node];
        return (n.registered && n.unlockAt == 0 && n.stake >= minStake, modelDigestOf[node][modelId]);
    }

    /// @notice Whether `node` is registered: bonded or unbonding, whatever its stake (a node slashed to zero stays
    /// registered until it withdraws). A node tells "never registered" from "stake too low" by it.
    function isRegistered(address node) external view returns (bool) {
        return _nodes[node].registered;
    }

    /// @inheritdoc INodeRegistry
    function stakeOf(address node) external view returns (uint256) {
        return _nodes[node].stake;
    }

    /// @inheritdoc INodeRegistry
    function unlockAt(address node) external view returns (uint64) {
        return _nodes[node].unlockAt;
    }

    // ------------------------------------------------------------------------------------------ internal

    /// @dev `node`'s record, if it is registered and not unbonding.
    function _bondedNode(address node) internal view returns (Node storage n) {
        n = _nodes[node];
        if (!n.registered) revert NotRegistered(node);
        if (n.unlockAt != 0) revert IsUnbonding(node);
    }

    function _setParameters(uint256 minStake_, uint64 unbondingDelay_) internal {
        if (unbondingDelay_ == 0 || unbondingDelay_ > MAX_UNBONDING_DELAY) revert InvalidParameter();
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        emit ParametersChanged(minStake_, unbondingDelay_);
    }

    /// @dev Sends `amount` wei to `to`, reverting (and so undoing the caller's effects) if it is refused.
    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
