// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../../testing/Test.sol";
import {RecordingConsumer} from "./Actors.sol";
import {Coordinator} from "../../src/Coordinator.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";

/// @notice A coordinator with its registry, three staked nodes and a recording consumer.
abstract contract CoordinatorTest is Test {
    bytes32 internal constant MODEL = keccak256("classify/minilm-sentiment@1");
    uint32 internal constant GAS_LIMIT = 300_000;
    uint256 internal constant FEE = 0.01 ether;
    uint256 internal constant MIN_STAKE = 1 ether;

    address internal owner = address(0xA11CE);
    address internal node = address(0xB0B);
    address internal node2 = address(0xB0B2);
    address internal node3 = address(0xB0B3);
    address internal stranger = address(0xBAD);
    NodeRegistry internal registry;
    Coordinator internal coordinator;
    RecordingConsumer internal consumer;

    function setUp() public virtual {
        registry = new NodeRegistry(owner, MIN_STAKE, 1 days);
        coordinator = new Coordinator(owner, registry);
        _stake(node);
        _stake(node2);
        _stake(node3);
        consumer = new RecordingConsumer(address(coordinator));
        vm.deal(address(this), 1_000_000 ether);
    }

    function _stake(address who) internal {
        vm.deal(who, who.balance + MIN_STAKE);
        vm.prank(who);
        registry.register{value: MIN_STAKE}();
    }

    function _request(bytes memory input, uint32 callbackGasLimit, uint256 fee) internal returns (uint256) {
        return consumer.request{value: fee}(MODEL, input, callbackGasLimit);
    }

    function _params(uint16 redundancy, uint256 feePerNode, address token)
        internal
        view
        returns (ICoordinator.RequestParams memory)
    {
        return ICoordinator.RequestParams({
            modelId: MODEL,
            callbackGasLimit: GAS_LIMIT,
            redundancy: redundancy,
            deadline: uint64(block.timestamp + 1 hours),
            token: token,
            feePerNode: feePerNode
        });
    }

    function _requestRedundant(uint16 redundancy, uint256 feePerNode) internal returns (uint256) {
        return consumer.requestWith{value: feePerNode * redundancy}(
            _params(redundancy, feePerNode, address(0)), hex"01"
        );
    }

    function _status(uint256 requestId) internal view returns (ICoordinator.Status) {
        return coordinator.getRequest(requestId).status;
    }

    function _closed(uint256 requestId, ICoordinator.Status status) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(ICoordinator.RequestClosed.selector, requestId, status);
    }
}
