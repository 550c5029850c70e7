// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {InferenceConsumer} from "../consumer/InferenceConsumer.sol";

/// @title DelegatedSentiment
/// @notice Example of delegated requests: an off-chain service holding the signer key signs requests (EIP-712,
/// `ICoordinator.DelegatedRequest`), a node creates and delivers them in one transaction, and this contract pays from
/// the balance its owner deposited. No on-chain transaction per request from the dApp.
contract DelegatedSentiment is InferenceConsumer {
    /// @notice Thrown by owner-only functions.
    error NotOwner(address caller);

    /// @notice A classification created from a signed request arrived.
    event SentimentReceived(uint256 indexed requestId, address indexed node, string label, uint256 scoreE6);

    address public immutable owner;
    mapping(uint256 requestId => string) public labels;

    constructor(address coordinator_, address signer) InferenceConsumer(coordinator_) {
        owner = msg.sender;
        _setDelegatedSigner(signer);
    }

    modifier onlyOwner() {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        _;
    }

    /// @notice Rotates the signer; signatures of the old one that were not used yet stop working at once.
    function setSigner(address signer) external onlyOwner {
        _setDelegatedSigner(signer);
    }

    /// @notice Funds future delegated requests with `msg.value`.
    function fund() external payable onlyOwner {
        _depositForDelegatedRequests(msg.value);
    }

    /// @notice Takes back what is left on the coordinator (unspent deposits and refunds).
    function withdrawFunds(address to) external onlyOwner returns (uint256) {
        return _withdrawRefunds(address(0), to);
    }

    function _onInferenceResult(uint256 requestId, address node, bytes calldata output) internal override {
        (string memory label, uint256 scoreE6) = abi.decode(output, (string, uint256));
        labels[requestId] = label;
        emit SentimentReceived(requestId, node, label, scoreE6);
    }
}
