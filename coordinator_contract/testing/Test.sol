// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @notice The forge cheatcodes the Infera tests and `InferaTest` use: a small subset of forge-std's `Vm`, shipped with
/// the Infera contracts package so a consumer's tests need no other package (forge-std installs only with git).
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    struct Gas {
        uint64 gasLimit;
        uint64 gasTotalUsed;
        uint64 gasMemoryUsed;
        int64 gasRefunded;
        uint64 gasRemaining;
    }

    function warp(uint256 newTimestamp) external;
    function lastCallGas() external view returns (Gas memory gas);
    function roll(uint256 newHeight) external;
    function chainId(uint256 newChainId) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    function deal(address account, uint256 newBalance) external;
    function expectRevert(bytes calldata revertData) external;
    function expectRevert(bytes4 revertData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter)
        external;
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory logs);
    function addr(uint256 privateKey) external pure returns (address);
    function label(address account, string calldata newLabel) external;
    function toString(uint256 value) external pure returns (string memory);
    function toString(address value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);
    function toString(int256 value) external pure returns (string memory);
    function toString(bytes calldata value) external pure returns (string memory);
}

/// @notice Minimal test base: cheatcodes, assertions that fail with both values, `bound` for fuzz inputs, and
/// the `targetContract` / `targetContracts` pair forge reads to pick invariant-test handlers.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @notice forge prints these with `-vv` (the DSTest log events): `emit log_named_uint("gas", used)`.
    event log_named_uint(string key, uint256 val);
    event log_named_string(string key, string val);

    address[] private _targetedContracts;

    /// @dev Only `target`'s functions are called by the invariant fuzzer (forge reads `targetContracts()`).
    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function fail(string memory message) internal pure {
        revert(string.concat("assertion failed: ", message));
    }

    function assertTrue(bool condition, string memory message) internal pure {
        if (!condition) fail(message);
    }

    function assertFalse(bool condition, string memory message) internal pure {
        if (condition) fail(message);
    }

    function assertEq(uint256 a, uint256 b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", vm.toString(a), " != ", vm.toString(b)));
    }

    function assertEq(address a, address b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", vm.toString(a), " != ", vm.toString(b)));
    }

    function assertEq(bytes32 a, bytes32 b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", vm.toString(a), " != ", vm.toString(b)));
    }

    function assertEq(bool a, bool b, string memory message) internal pure {
        if (a != b) fail(message);
    }

    function assertEq(string memory a, string memory b, string memory message) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) {
            fail(string.concat(message, ": '", a, "' != '", b, "'"));
        }
    }

    function assertEq(bytes memory a, bytes memory b, string memory message) internal pure {
        if (keccak256(a) != keccak256(b)) {
            fail(string.concat(message, ": ", vm.toString(a), " != ", vm.toString(b)));
        }
    }

    function assertLe(uint256 a, uint256 b, string memory message) internal pure {
        if (a > b) fail(string.concat(message, ": ", vm.toString(a), " > ", vm.toString(b)));
    }

    function assertGe(uint256 a, uint256 b, string memory message) internal pure {
        if (a < b) fail(string.concat(message, ": ", vm.toString(a), " < ", vm.toString(b)));
    }

    function assertEq(int256 a, int256 b, string memory message) internal pure {
        if (a != b) fail(string.concat(message, ": ", vm.toString(a), " != ", vm.toString(b)));
    }

    // The same assertions without a message, as forge-std has them.

    function assertTrue(bool condition) internal pure {
        assertTrue(condition, "expected true");
    }

    function assertFalse(bool condition) internal pure {
        assertFalse(condition, "expected false");
    }

    function assertEq(uint256 a, uint256 b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertEq(int256 a, int256 b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertEq(address a, address b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertEq(bytes32 a, bytes32 b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertEq(bool a, bool b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertEq(string memory a, string memory b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertEq(bytes memory a, bytes memory b) internal pure {
        assertEq(a, b, "not equal");
    }

    function assertLe(uint256 a, uint256 b) internal pure {
        assertLe(a, b, "not <=");
    }

    function assertGe(uint256 a, uint256 b) internal pure {
        assertGe(a, b, "not >=");
    }

    /// @dev Maps any `x` into [min, max] without discarding fuzz runs (unlike `vm.assume`).
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        uint256 size = max - min + 1;
        if (size == 0) return x; // the full uint256 range
        return min + (x % size);
    }
}
