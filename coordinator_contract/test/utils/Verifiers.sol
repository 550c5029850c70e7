// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IVerifier} from "../../src/interfaces/IVerifier.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";
import {Coordinator} from "../../src/Coordinator.sol";

/// @notice An atomic verifier: the proof is valid when it equals keccak256(output); an invalid one slashes the node
/// to the request's consumer.
contract HashProofVerifier is IVerifier {
    INodeRegistry public immutable registry;
    Coordinator public immutable coordinator;
    uint256 public immutable slashAmount;

    constructor(INodeRegistry registry_, Coordinator coordinator_, uint256 slashAmount_) {
        registry = registry_;
        coordinator = coordinator_;
        slashAmount = slashAmount_;
    }

    function verify(uint256 requestId, address node, bytes calldata output, bytes calldata proof)
        external
        returns (Verdict)
    {
        if (keccak256(proof) == keccak256(abi.encode(keccak256(output)))) return Verdict.Valid;
        registry.slash(node, slashAmount, coordinator.getRequest(requestId).consumer);
        return Verdict.Invalid;
    }

    function window() external pure returns (uint64) {
        return 0;
    }
}

/// @notice An optimistic verifier: every output is pending; the test plays the challenger through `judge`.
contract OptimisticVerifier is IVerifier {
    Coordinator public immutable coordinator;
    uint64 public immutable windowSeconds;

    constructor(Coordinator coordinator_, uint64 window_) {
        coordinator = coordinator_;
        windowSeconds = window_;
    }

    function verify(uint256, address, bytes calldata, bytes calldata) external pure returns (Verdict) {
        return Verdict.Pending;
    }

    function window() external view returns (uint64) {
        return windowSeconds;
    }

    function judge(uint256 requestId, address node, bool valid) external {
        coordinator.resolveVerification(requestId, node, valid);
    }
}

/// @notice A verifier that always reverts.
contract BrokenVerifier is IVerifier {
    function verify(uint256, address, bytes calldata, bytes calldata) external pure returns (Verdict) {
        revert("broken");
    }

    function window() external pure returns (uint64) {
        return 0;
    }
}
