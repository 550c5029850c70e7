// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title INodeRegistry
/// @notice What a node operator, a verifier and the coordinator need to know about node staking.
interface INodeRegistry {
    /// @notice Thrown by owner-only functions when called by anyone else.
    error Unauthorized(address caller);
    /// @notice Thrown by `slash` if the caller is not a verifier the owner approved.
    error VerifierNotApproved(address caller);
    /// @notice Thrown by `register` if the stake sent is below the minimum stake.
    error StakeTooLow(uint256 stake, uint256 minStake);
    /// @notice Thrown by `register` if the caller is already registered, unbonding included.
    error AlreadyRegistered(address node);
    /// @notice Thrown by `addStake`, `beginUnbonding` and `slash` if the address is not a registered node.
    error NotRegistered(address node);
    /// @notice Thrown by `addStake` and `beginUnbonding` if the node has already started unbonding.
    error IsUnbonding(address node);
    /// @notice Thrown by `withdrawStake` if the caller has not started unbonding.
    error NotUnbonding(address node);
    /// @notice Thrown by `withdrawStake` if the unbonding delay has not passed yet.
    error UnbondingNotOver(address node, uint64 unlockAt);
    /// @notice Thrown by `addStake` and `slash` if the amount is zero, and by `register` and `addStake` if the
    /// stake would not fit in 128 bits.
    error InvalidAmount();
    /// @notice Thrown by `slash` if the amount is larger than the node's stake.
    error SlashExceedsStake(uint256 amount, uint256 stake);
    /// @notice Thrown by `claimSlashed` if the caller has no slashed ETH to claim.
    error NothingToClaim(address account);
    /// @notice Thrown by `withdrawStake` and `claimSlashed` if the ETH transfer to the recipient failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice Thrown by the constructor, `setParameters`, `transferOwnership`, `slash` and `commitModel` if a
    /// parameter is out of range: a zero owner or slash recipient, an unbonding delay of zero or above 365 days, or a
    /// zero model digest.
    error InvalidParameter();

    /// @notice Ownership moved to a new address.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    /// @notice The owner changed the minimum stake or the unbonding delay.
    event ParametersChanged(uint256 minStake, uint64 unbondingDelay);
    /// @notice The owner approved or revoked a verifier.
    event VerifierApprovalChanged(address indexed verifier, bool approved);
    /// @notice A node registered with an initial stake.
    event NodeRegistered(address indexed node, uint256 stake);
    /// @notice A node added `amount` to its stake, which is now `total`.
    event StakeAdded(address indexed node, uint256 amount, uint256 total);
    /// @notice A node stopped being active; its stake can be withdrawn from `unlockAt` on.
    event UnbondingStarted(address indexed node, uint64 unlockAt);
    /// @notice An unbonded node withdrew its remaining stake and left the registry.
    event StakeWithdrawn(address indexed node, address indexed to, uint256 amount);
    /// @notice A verifier slashed `amount` of a node's stake and credited it to `recipient`.
    event NodeSlashed(
        address indexed node, address indexed verifier, address indexed recipient, uint256 amount
    );
    /// @notice `node` declared that it serves `modelId` with the model whose digest is `digest` (e.g. the sha256 of
    /// its weights, as the node's model server reports it); consensus requests may require a digest.
    event ModelCommitted(address indexed node, bytes32 indexed modelId, bytes32 digest);
    /// @notice An account claimed the slashed ETH credited to it.
    event SlashedClaimed(address indexed account, address indexed to, uint256 amount);

    /// @notice Registers the caller as a node with `msg.value` as its stake.
    function register() external payable;

    /// @notice Adds `msg.value` to the caller's stake; only while registered and not unbonding.
    function addStake() external payable;

    /// @notice Makes the caller inactive and starts its unbonding delay; its stake stays slashable meanwhile.
    function beginUnbonding() external;

    /// @notice Once the unbonding delay is over, sends the caller's remaining stake to `to` and deletes the node.
    function withdrawStake(address to) external returns (uint256 amount);

    /// @notice Records that the calling node serves `modelId` with the model of digest `digest` (non-zero), replacing
    /// its earlier digest for that model. Any registered node may call it, active or not (an operator can declare
    /// its models before it stakes enough); reverts with `NotRegistered` or `InvalidParameter` (zero digest).
    function commitModel(bytes32 modelId, bytes32 digest) external;

    /// @notice The digest `node` committed for `modelId` (zero if none). Digests outlive a withdrawal: a node that
    /// registers again keeps them until it commits new ones.
    function modelDigestOf(address node, bytes32 modelId) external view returns (bytes32);

    /// @notice `isActive(node)` and `modelDigestOf(node, modelId)` in one call (the Coordinator's consensus reveal
    /// needs both).
    function activeDigestFor(address node, bytes32 modelId)
        external
        view
        returns (bool active, bytes32 digest);

    /// @notice Takes `amount` from `node`'s stake and credits it to `recipient`; approved verifiers only.
    function slash(address node, uint256 amount, address recipient) external;

    /// @notice Sends the slashed ETH credited to the caller to `to`.
    function claimSlashed(address to) external returns (uint256 amount);

    /// @notice Approves or revokes `verifier`; owner only.
    function setVerifier(address verifier, bool approved) external;

    /// @notice Sets the minimum stake and the unbonding delay; owner only.
    function setParameters(uint256 minStake_, uint64 unbondingDelay_) external;

    /// @notice Hands the owner role to `newOwner`; owner only.
    function transferOwnership(address newOwner) external;

    /// @notice Whether `node` is registered, not unbonding, and holds at least the minimum stake.
    function isActive(address node) external view returns (bool);

    /// @notice The stake `node` holds now (zero if not registered).
    function stakeOf(address node) external view returns (uint256);

    /// @notice When `node` may withdraw; zero if it is not unbonding.
    function unlockAt(address node) external view returns (uint64);

    /// @notice Whether `verifier` may slash.
    function isApprovedVerifier(address verifier) external view returns (bool);

    /// @notice The account that approves verifiers and sets parameters.
    function owner() external view returns (address);

    /// @notice Smallest stake an active node holds, in wei.
    function minStake() external view returns (uint256);

    /// @notice Seconds between `beginUnbonding` and the earliest `withdrawStake`.
    function unbondingDelay() external view returns (uint64);

    /// @notice Slashed ETH credited to `account` and not yet claimed.
    function slashedBalanceOf(address account) external view returns (uint256);

    /// @notice The sum of every node's stake.
    function totalStaked() external view returns (uint256);
}
