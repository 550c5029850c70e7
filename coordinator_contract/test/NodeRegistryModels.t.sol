// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {NodeRegistryTest} from "./utils/RegistryBase.sol";
import {INodeRegistry} from "../src/interfaces/INodeRegistry.sol";

/// @notice Model provenance: registered nodes commit the digest of the model they serve per model id.
contract NodeRegistryModelTest is NodeRegistryTest {
    bytes32 internal constant MODEL = keccak256("llm/smollm2-135m-instruct@1");

    function testCanCommitAModelDigest() public {
        _register(node, MIN_STAKE);
        vm.expectEmit(true, true, true, true, address(registry));
        emit INodeRegistry.ModelCommitted(node, MODEL, keccak256("w1"));
        vm.prank(node);
        registry.commitModel(MODEL, keccak256("w1"));
        assertEq(registry.modelDigestOf(node, MODEL), keccak256("w1"), "digest recorded");
        assertEq(registry.modelDigestOf(node, keccak256("other")), bytes32(0), "per model");
    }

    function testActiveDigestForAnswersBothInOneCall() public {
        _register(node, MIN_STAKE);
        vm.prank(node);
        registry.commitModel(MODEL, keccak256("w1"));
        (bool active, bytes32 digest) = registry.activeDigestFor(node, MODEL);
        assertTrue(active, "active");
        assertEq(digest, keccak256("w1"), "digest");
        vm.prank(node);
        registry.beginUnbonding();
        (active, digest) = registry.activeDigestFor(node, MODEL);
        assertFalse(active, "unbonding: inactive");
        assertEq(digest, keccak256("w1"), "the digest stays");
        (active, digest) = registry.activeDigestFor(stranger, MODEL);
        assertFalse(active || digest != 0, "unknown node");
    }

    function testFuzzANewDigestReplacesTheOld(bytes32 modelId, bytes32 first, bytes32 second) public {
        if (first == 0) first = keccak256("first");
        if (second == 0) second = keccak256("second");
        _register(node, MIN_STAKE);
        vm.startPrank(node);
        registry.commitModel(modelId, first);
        registry.commitModel(modelId, second);
        vm.stopPrank();
        assertEq(registry.modelDigestOf(node, modelId), second, "latest digest");
    }

    function testFuzzCannotCommitUnregistered(address who) public {
        who = _outsider(who);
        vm.expectRevert(abi.encodeWithSelector(INodeRegistry.NotRegistered.selector, who));
        vm.prank(who);
        registry.commitModel(MODEL, keccak256("w1"));
    }

    function testCannotCommitAZeroDigest() public {
        _register(node, MIN_STAKE);
        vm.expectRevert(INodeRegistry.InvalidParameter.selector);
        vm.prank(node);
        registry.commitModel(MODEL, bytes32(0));
    }

    function testAnUnbondingNodeMayStillCommit() public {
        _register(node, MIN_STAKE);
        _unbond(node);
        vm.prank(node);
        registry.commitModel(MODEL, keccak256("w1"));
        assertEq(registry.modelDigestOf(node, MODEL), keccak256("w1"), "registered is enough");
    }
}
