// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {SubscriptionConsumer} from "../consumer/SubscriptionConsumer.sol";
import {ISubscriptionManager} from "../interfaces/ISubscriptionManager.sol";

/// @title HeadlineSentiment
/// @notice Example subscription: every period, nodes classify the headline the owner last set, and the contract
/// keeps the latest label. Input ABI `(string)`, output ABI `(string label, uint256 scoreE6)`.
contract HeadlineSentiment is SubscriptionConsumer {
    /// @notice Thrown by owner-only functions.
    error NotOwner(address caller);

    /// @notice The classifier's answer for an interval arrived.
    event HeadlineSentimentReceived(uint256 indexed interval, string headline, string label, uint256 scoreE6);

    address public immutable owner;
    bytes32 public immutable modelId;
    string public headline;
    string public latestLabel;
    uint256 public latestScoreE6;
    uint32 public latestInterval;

    constructor(address subscriptionManager_, bytes32 modelId_) SubscriptionConsumer(subscriptionManager_) {
        owner = msg.sender;
        modelId = modelId_;
    }

    /// @notice Sets the headline the next intervals classify.
    function setHeadline(string calldata text) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        headline = text;
    }

    /// @notice Subscribes for `intervals` periods of `period` seconds, one node each; `msg.value` pays them all.
    function subscribe(uint32 period, uint32 intervals) external payable returns (uint256) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        return _subscribe(
            ISubscriptionManager.SubscriptionParams({
                modelId: modelId,
                callbackGasLimit: 200_000,
                redundancy: 1,
                period: period,
                intervals: intervals,
                token: address(0),
                feePerNode: msg.value / intervals
            })
        );
    }

    function subscriptionInput(uint256, uint32) external view override returns (bytes memory) {
        return abi.encode(headline);
    }

    function _onIntervalResult(uint256, uint32 interval, address, bytes calldata output) internal override {
        (string memory label, uint256 scoreE6) = abi.decode(output, (string, uint256));
        latestLabel = label;
        latestScoreE6 = scoreE6;
        latestInterval = interval;
        emit HeadlineSentimentReceived(interval, headline, label, scoreE6);
    }
}
