// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../../testing/Test.sol";
import {NodeRegistry} from "../../src/NodeRegistry.sol";
import {INodeRegistry} from "../../src/interfaces/INodeRegistry.sol";

/// @notice Cheatcodes this file needs that `test/utils/Test.sol` does not declare.
interface VmExtra {
    function getNonce(address account) external view returns (uint64);
    function computeCreateAddress(address deployer, uint256 nonce) external pure returns (address);
}

/// @notice An account that refuses ETH but can still claim slashed ETH to somewhere else.
contract RejectingReceiver {
    function claim(INodeRegistry registry, address to) external returns (uint256) {
        return registry.claimSlashed(to);
    }

    receive() external payable {
        revert("no thanks");
    }
}

/// @notice A node run by a contract whose `receive` tries to withdraw its stake a second time.
contract ReentrantWithdrawer {
    INodeRegistry public immutable registry;
    bool public reentered;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(INodeRegistry registry_) {
        registry = registry_;
    }

    function register() external payable {
        registry.register{value: msg.value}();
    }

    function beginUnbonding() external {
        registry.beginUnbonding();
    }

    function withdraw() external returns (uint256) {
        return registry.withdrawStake(address(this));
    }

    receive() external payable {
        if (reentered) return;
        reentered = true;
        try registry.withdrawStake(address(this)) {
            reentrySucceeded = true;
        } catch (bytes memory reason) {
            reentryError = reason;
        }
    }
}

/// @notice A slash recipient whose `receive` tries to claim its slashed balance a second time.
contract ReentrantClaimer {
    INodeRegistry public immutable registry;
    bool public reentered;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(INodeRegistry registry_) {
        registry = registry_;
    }

    function claim() external returns (uint256) {
        return registry.claimSlashed(address(this));
    }

    receive() external payable {
        if (reentered) return;
        reentered = true;
        try registry.claimSlashed(address(this)) {
            reentrySucceeded = true;
        } catch (bytes memory reason) {
            reentryError = reason;
        }
    }
}

abstract contract NodeRegistryTest is Test {
    VmExtra internal constant vmExtra = VmExtra(address(uint160(uint256(keccak256("hevm cheat code")))));
    uint256 internal constant MIN_STAKE = 1 ether;
    uint64 internal constant DELAY = 7 days;
    uint64 internal constant MAX_DELAY = 365 days;
    uint256 internal constant MAX_STAKE = 1_000_000 ether;

    address internal owner = address(0xA11CE);
    address internal verifier = address(0xFE7);
    address internal node = address(0xB0B);
    address internal stranger = address(0xBAD);
    address internal recipient = address(0xCAFE);
    NodeRegistry internal registry;

    function setUp() public virtual {
        registry = new NodeRegistry(owner, MIN_STAKE, DELAY);
        vm.prank(owner);
        registry.setVerifier(verifier, true);
        vm.warp(1_700_000_000);
        vm.label(owner, "owner");
        vm.label(verifier, "verifier");
        vm.label(node, "node");
        vm.label(stranger, "stranger");
        vm.label(recipient, "recipient");
    }

    function _register(address who, uint256 amount) internal {
        vm.deal(who, amount);
        vm.prank(who);
        registry.register{value: amount}();
    }

    function _unbond(address who) internal returns (uint64) {
        vm.prank(who);
        registry.beginUnbonding();
        return registry.unlockAt(who);
    }

    function _slash(address who, uint256 amount, address to) internal {
        vm.prank(verifier);
        registry.slash(who, amount, to);
    }

    /// @dev `who`, moved off every address the tests give a role to (and the registry and cheatcode accounts).
    function _outsider(address who) internal view returns (address) {
        if (
            who == node || who == owner || who == verifier || who == recipient || who == address(registry)
                || who == address(this) || who == address(vm) || uint160(who) <= 0xFFFF
        ) {
            return address(uint160(uint256(keccak256(abi.encode(who)))));
        }
        return who;
    }

    function _now() internal view returns (uint64) {
        // casting to 'uint64' is safe because the tests never warp past 2**64 seconds
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(block.timestamp);
    }

    /// @dev `x` bounded to [min, max] as an unbonding delay.
    function _delay(uint256 x, uint64 min, uint64 max) internal pure returns (uint64) {
        // casting to 'uint64' is safe because bound() keeps the result within [min, max], both uint64
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64(bound(x, min, max));
    }
}
