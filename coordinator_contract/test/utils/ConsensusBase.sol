// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./CoordinatorBase.sol";
import {ConsensusConsumer} from "./ConsensusActors.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../../src/interfaces/IConsensus.sol";

/// @notice The coordinator base with sixteen staked nodes (`voters[0..2]` are node, node2, node3), a consensus
/// consumer, and helpers that commit and reveal as a given node.
abstract contract ConsensusTest is CoordinatorTest {
    uint32 internal constant WINDOW = 10 minutes;
    IConsensus internal cons;
    ConsensusConsumer internal asker;
    address[] internal voters;

    function setUp() public virtual override {
        super.setUp();
        cons = IConsensus(address(coordinator));
        asker = new ConsensusConsumer(address(coordinator));
        voters.push(node);
        voters.push(node2);
        voters.push(node3);
        for (uint256 i = 3; i < 16; ++i) {
            // casting to 'uint160' is safe because the value is below 2^24
            // forge-lint: disable-next-line(unsafe-typecast)
            address v = address(uint160(0xC0DE00 + i));
            _stake(v);
            voters.push(v);
        }
    }

    function _consensus(uint16 quorum) internal pure returns (IConsensus.ConsensusParams memory) {
        return IConsensus.ConsensusParams({quorum: quorum, commitWindow: WINDOW, modelDigest: bytes32(0)});
    }

    function _ask(uint16 n, uint16 k) internal returns (uint256) {
        return asker.ask{value: FEE * n}(_params(n, FEE, address(0)), hex"01", _consensus(k));
    }

    function _askWithDigest(uint16 n, uint16 k, bytes32 digest) internal returns (uint256) {
        IConsensus.ConsensusParams memory c = _consensus(k);
        c.modelDigest = digest;
        return asker.ask{value: FEE * n}(_params(n, FEE, address(0)), hex"01", c);
    }

    function _salt(address who, bytes memory output) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", who, output));
    }

    /// @dev The commitment formula of `IConsensus.commitmentFor`, written out.
    function _commitment(uint256 id, address who, bytes memory output, bytes32 salt)
        internal
        view
        returns (bytes32)
    {
        return keccak256(abi.encode(block.chainid, address(coordinator), id, who, keccak256(output), salt));
    }

    function _commit(uint256 id, address who, bytes memory output) internal {
        bytes32 c = _commitment(id, who, output, _salt(who, output));
        vm.prank(who);
        cons.commit(id, c);
    }

    function _reveal(uint256 id, address who, bytes memory output) internal returns (bool) {
        vm.prank(who);
        return cons.reveal(id, output, _salt(who, output));
    }

    function _balance(address who) internal view returns (uint256) {
        return coordinator.balanceOf(address(0), who);
    }

    function _expectRevert(bytes4 selector, uint256 id, address who) internal {
        vm.expectRevert(abi.encodeWithSelector(selector, id, who));
    }
}
