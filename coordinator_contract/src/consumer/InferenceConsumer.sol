// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ICoordinator} from "../interfaces/ICoordinator.sol";
import {IConsensus} from "../interfaces/IConsensus.sol";
import {IDelegatingConsumer} from "../interfaces/IDelegatingConsumer.sol";

/// @title InferenceConsumer
/// @notice Inherit this to ask the Infera coordinator for inference and receive the answer.
/// @dev Implement `_onInferenceResult` (and, if you care, `_onInferenceError`); call `_requestInference` to ask.
/// Only the coordinator can call `rawFulfill` / `rawFail`, so a result always comes from a delivery the coordinator
/// accepted. With redundancy N you get up to N results for one request id, one per node; a consensus request
/// (`_requestConsensusInference`) gets exactly one, the output its quorum of nodes agreed on.
abstract contract InferenceConsumer is IDelegatingConsumer {
    /// @notice Thrown by `rawFulfill` and `rawFail` when called by anyone but the coordinator.
    error OnlyCoordinator(address caller);

    /// @notice The coordinator this consumer trusts for results.
    ICoordinator public immutable coordinator;
    /// @inheritdoc IDelegatingConsumer
    address public delegatedSigner;

    constructor(address coordinator_) {
        coordinator = ICoordinator(coordinator_);
    }

    /// @notice Accepts ETH, so refunds withdrawn with `_withdrawRefunds(address(0), address(this))` can land here.
    receive() external payable virtual {}

    modifier onlyCoordinator() {
        if (msg.sender != address(coordinator)) revert OnlyCoordinator(msg.sender);
        _;
    }

    /// @notice Entry point for results; the coordinator calls it with the request's callback gas limit.
    function rawFulfill(uint256 requestId, address node, bytes calldata output) external onlyCoordinator {
        _onInferenceResult(requestId, node, output);
    }

    /// @notice Entry point for failures: enough nodes reported they cannot serve the request, or its deadline passed
    /// with slots unserved (`reclaim`); its unused escrow was credited to this contract's balance on the coordinator
    /// (see `_withdrawRefunds`). Called at most once per request.
    function rawFail(uint256 requestId, string calldata reason) external onlyCoordinator {
        _onInferenceError(requestId, reason);
    }

    /// @dev One node, paid `fee` wei in ETH, default deadline.
    function _requestInference(bytes32 modelId, bytes memory input, uint32 callbackGasLimit, uint256 fee)
        internal
        returns (uint256 requestId)
    {
        return coordinator.requestInference{value: fee}(modelId, input, callbackGasLimit);
    }

    /// @dev Full control: redundancy, deadline, ERC-20 payment. For ETH send `feePerNode * redundancy`; for a token
    /// approve the coordinator for that amount first and send no ETH.
    function _requestInference(ICoordinator.RequestParams memory params, bytes memory input)
        internal
        returns (uint256 requestId)
    {
        uint256 value = params.token == address(0) ? params.feePerNode * params.redundancy : 0;
        return coordinator.requestInference{value: value}(params, input);
    }

    /// @dev Like the full form, but each node's output reaches `_onInferenceResult` only after `verifier` (one the
    /// NodeRegistry's owner approved) found it valid, or its optimistic window passed without a verdict.
    function _requestVerifiedInference(
        ICoordinator.RequestParams memory params,
        bytes memory input,
        address verifier
    ) internal returns (uint256 requestId) {
        uint256 value = params.token == address(0) ? params.feePerNode * params.redundancy : 0;
        return coordinator.requestVerifiedInference{value: value}(params, input, verifier);
    }

    /// @dev Consensus: `params.redundancy` nodes (at most 16) commit, then reveal; `_onInferenceResult` runs once,
    /// with the output `consensus.quorum` of them revealed, and only those are paid; the other slots are refunded to
    /// this contract's balance then. No quorum by the deadline: `reclaim` refunds every slot and `_onInferenceError`
    /// runs once. For ETH send `feePerNode * redundancy` (this sends it); for a token approve that amount first.
    function _requestConsensusInference(
        ICoordinator.RequestParams memory params,
        bytes memory input,
        IConsensus.ConsensusParams memory consensus
    ) internal returns (uint256 requestId) {
        uint256 value = params.token == address(0) ? params.feePerNode * params.redundancy : 0;
        return
            IConsensus(address(coordinator)).requestConsensusInference{value: value}(params, input, consensus);
    }

    /// @dev Cancels `requestId` (one of this contract's) before any node acted on it; its whole escrow is credited to
    /// this contract's balance on the coordinator (see `_withdrawRefunds`). No callback follows. Reverts with the
    /// coordinator's `NodesAlreadyActed` once a node delivered, reported or awaits a verdict.
    function _cancelRequest(uint256 requestId) internal returns (uint256 refund) {
        return coordinator.cancelRequest(requestId);
    }

    /// @dev Lets `signer` create requests for this contract off-chain (EIP-712, see `ICoordinator.DelegatedRequest`);
    /// zero turns delegation off. A new signer voids every unused signature of the old one. Guard who may call this.
    function _setDelegatedSigner(address signer) internal {
        delegatedSigner = signer;
    }

    /// @dev Funds delegated requests: adds `amount` wei from this contract to its balance on the coordinator.
    function _depositForDelegatedRequests(uint256 amount) internal {
        coordinator.deposit{value: amount}(address(0), address(this), amount);
    }

    /// @dev Moves refunds (failed, reclaimed or cancelled requests) from the coordinator to `to`.
    function _withdrawRefunds(address token, address to) internal returns (uint256) {
        return coordinator.withdraw(token, to);
    }

    /// @dev Receives `node`'s ABI-encoded output for `requestId` (for a consensus request: the agreed output, once,
    /// with the node whose reveal reached the quorum). Keep it within the callback gas limit.
    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal virtual;

    /// @dev Called once if the request failed, or its deadline passed with a slot unserved (reason
    /// "deadline: <unserved> of <redundancy> unserved"); gets at most 100,000 gas. Default: nothing.
    function _onInferenceError(uint256 requestId, string calldata reason) internal virtual {}
}
