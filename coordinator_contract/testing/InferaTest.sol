// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm} from "./Test.sol";
import {Coordinator} from "../src/Coordinator.sol";
import {NodeRegistry} from "../src/NodeRegistry.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../src/interfaces/IConsensus.sol";

/// @title InferaTest
/// @notice A forge test base for your consumer: `setUp` deploys the real NodeRegistry and Coordinator and stakes
/// three nodes; your test asks through its own contract, then plays the nodes: `_deliver` an output you choose,
/// `_deliverConsensus` the outputs of a consensus request's nodes, `_failRequest` with a reason, `_expire` a request
/// past its deadline. `_callbackGas` measures your callback.
/// @dev Import it from the package as testing/InferaTest.sol. Override `setUp` and call `super.setUp()` first.
/// Everything here runs the contracts the nodes use on-chain: no mock stands in for the Coordinator.
abstract contract InferaTest is Test {
    /// @notice Stake each test node posts (and the registry's minimum), in wei.
    uint256 internal constant NODE_STAKE = 1 ether;
    /// @notice How many nodes `setUp` stakes; a request with redundancy up to this can be fully served.
    uint256 internal constant NODE_COUNT = 3;

    /// @notice Owner of the registry and the Coordinator (protocol fee 0, default limits).
    address internal inferaOwner = address(0x1F0E4A0001);
    /// @notice The staked nodes, in the order `_deliver` and `_failRequest` use them.
    address[] internal nodes;
    NodeRegistry internal registry;
    Coordinator internal coordinator;

    /// @notice Deploys NodeRegistry (minimum stake `NODE_STAKE`, unbonding 1 day) and Coordinator, and stakes
    /// `NODE_COUNT` nodes.
    function setUp() public virtual {
        registry = new NodeRegistry(inferaOwner, NODE_STAKE, 1 days);
        coordinator = new Coordinator(inferaOwner, registry);
        for (uint256 i = 0; i < NODE_COUNT; i++) {
            address node = address(uint160(0x1F0E4A1000 + i));
            vm.label(node, string.concat("node", vm.toString(i)));
            vm.deal(node, NODE_STAKE);
            vm.prank(node);
            registry.register{value: NODE_STAKE}();
            nodes.push(node);
        }
    }

    /// @notice The first node delivers `output` for `requestId`, as a node's transaction would.
    /// @return callbackOk Whether your callback ran to the end within the request's `callbackGasLimit` (a callback
    /// that reverts or runs out of gas still settles the slot and pays the node).
    function _deliver(uint256 requestId, bytes memory output) internal returns (bool callbackOk) {
        return _deliverFrom(0, requestId, output);
    }

    /// @notice Node `nodeIndex` (0 to `NODE_COUNT - 1`) delivers `output` for `requestId`.
    function _deliverFrom(uint256 nodeIndex, uint256 requestId, bytes memory output)
        internal
        returns (bool callbackOk)
    {
        vm.prank(nodes[nodeIndex]);
        return coordinator.deliver(requestId, output);
    }

    /// @notice Nodes 0 to `outputs.length - 1` commit `outputs[i]` to consensus request `requestId`, then reveal in
    /// that order until a quorum agrees (a reveal after the quorum would revert, so none is sent).
    /// @dev For a request made with `_requestConsensusInference`; its redundancy must be `outputs.length` (at most
    /// `NODE_COUNT`). A request that names a `modelDigest` needs `_commitModel` first.
    /// @return quorumReached Whether the reveals settled the request (its callback ran once, with the agreed output).
    function _deliverConsensus(uint256 requestId, bytes[] memory outputs)
        internal
        returns (bool quorumReached)
    {
        IConsensus consensus = IConsensus(address(coordinator));
        for (uint256 i = 0; i < outputs.length; i++) {
            bytes32 salt = keccak256(abi.encode("infera test salt", requestId, i));
            bytes32 commitment = consensus.commitmentFor(requestId, nodes[i], keccak256(outputs[i]), salt);
            vm.prank(nodes[i]);
            consensus.commit(requestId, commitment);
        }
        for (uint256 i = 0; i < outputs.length && !quorumReached; i++) {
            vm.prank(nodes[i]);
            quorumReached = consensus.reveal(
                requestId, outputs[i], keccak256(abi.encode("infera test salt", requestId, i))
            );
        }
    }

    /// @notice Every test node commits `digest` as the weights of `modelId` in the registry (what consensus requests
    /// that name a model digest check).
    function _commitModel(bytes32 modelId, bytes32 digest) internal {
        for (uint256 i = 0; i < nodes.length; i++) {
            vm.prank(nodes[i]);
            registry.commitModel(modelId, digest);
        }
    }

    /// @notice Enough nodes report failure with `reason` to close `requestId`: the escrow is refunded to the consumer
    /// and its error callback gets `reason` once.
    function _failRequest(uint256 requestId, string memory reason) internal {
        uint256 needed = coordinator.failureQuorum(requestId);
        for (uint256 i = 0; i < needed; i++) {
            vm.prank(nodes[i]);
            coordinator.reportFailure(requestId, reason);
        }
    }

    /// @notice Moves time past `requestId`'s deadline and reclaims it (anyone may): unserved slots are refunded and
    /// the error callback runs once, with a reason that starts with "deadline".
    function _expire(uint256 requestId) internal {
        vm.warp(uint256(coordinator.getRequest(requestId).deadline) + 1);
        coordinator.reclaim(requestId);
    }

    /// @notice Gas your callback uses for `output`: `consumer.rawFulfill(requestId, node, output)` called as the
    /// Coordinator calls it, measured by forge (`vm.lastCallGas`) for that call frame alone. Compare it with the
    /// `callbackGasLimit` your contract asks for and keep a margin: storage the request itself wrote is warm here but
    /// cold on-chain (2,100 gas more per such slot) unless the test runs with `isolate = true`.
    /// @return gasUsed Gas of the callback frame.
    /// @return ok Whether it returned without reverting.
    function _callbackGas(address consumer, uint256 requestId, bytes memory output)
        internal
        returns (uint256 gasUsed, bool ok)
    {
        vm.prank(address(coordinator));
        (ok,) = consumer.call(
            abi.encodeWithSignature("rawFulfill(uint256,address,bytes)", requestId, nodes[0], output)
        );
        Vm.Gas memory gas = vm.lastCallGas();
        return (gas.gasTotalUsed, ok);
    }

    /// @notice The request record the Coordinator holds for `requestId` (status, slots, fees, deadline).
    function _request(uint256 requestId) internal view returns (ICoordinator.RequestView memory) {
        return coordinator.getRequest(requestId);
    }
}
