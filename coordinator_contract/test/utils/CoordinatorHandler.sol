// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../../testing/Test.sol";
import {RecordingConsumer} from "./Actors.sol";
import {Coordinator} from "../../src/Coordinator.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";

/// @notice Drives the coordinator with random requests, deliveries, failure reports, reclaims, cancels and withdrawals,
/// keeping ghost totals the invariants compare against.
contract CoordinatorHandler is Test {
    Coordinator public immutable coordinator;
    RecordingConsumer public immutable consumer;
    address[] public nodes;
    address[] public accounts;
    uint256[] public requestIds;

    /// @notice ETH that left the coordinator through `withdraw`.
    uint256 public ghostWithdrawn;
    /// @notice ETH that entered it as escrow.
    uint256 public ghostEscrowed;
    /// @notice Payments observed per (request, node): must never exceed one.
    mapping(uint256 => mapping(address => uint256)) public ghostPaid;
    uint256 public ghostDoublePayments;

    constructor(Coordinator coordinator_, RecordingConsumer consumer_, address[] memory nodes_) {
        coordinator = coordinator_;
        consumer = consumer_;
        nodes = nodes_;
        accounts = nodes_;
        accounts.push(address(consumer_));
        accounts.push(coordinator_.protocolFeeRecipient());
    }

    function request(uint16 redundancy, uint256 fee) external {
        // casting to 'uint16' is safe because bound() keeps it at most the number of nodes
        // forge-lint: disable-next-line(unsafe-typecast)
        redundancy = uint16(bound(redundancy, 1, nodes.length));
        fee = bound(fee, 0, 10 ether);
        ICoordinator.RequestParams memory p = ICoordinator.RequestParams({
            modelId: keccak256("m"),
            callbackGasLimit: 200_000,
            redundancy: redundancy,
            deadline: uint64(block.timestamp + 1 hours),
            token: address(0),
            feePerNode: fee
        });
        vm.deal(address(this), fee * redundancy);
        requestIds.push(consumer.requestWith{value: fee * redundancy}(p, hex"01"));
        ghostEscrowed += fee * redundancy;
    }

    function deliver(uint256 requestSeed, uint256 nodeSeed) external {
        if (requestIds.length == 0) return;
        uint256 id = requestIds[requestSeed % requestIds.length];
        address node = nodes[nodeSeed % nodes.length];
        uint256 before = coordinator.balanceOf(address(0), node);
        vm.prank(node);
        try coordinator.deliver(id, hex"00") {
            if (
                coordinator.balanceOf(address(0), node) > before || coordinator.getRequest(id).feePerNode == 0
            ) {
                if (++ghostPaid[id][node] > 1) ++ghostDoublePayments;
            }
        } catch {}
    }

    function reportFailure(uint256 requestSeed, uint256 nodeSeed) external {
        if (requestIds.length == 0) return;
        vm.prank(nodes[nodeSeed % nodes.length]);
        try coordinator.reportFailure(requestIds[requestSeed % requestIds.length], "x") {} catch {}
    }

    function passTime(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 2 hours));
    }

    function reclaim(uint256 requestSeed) external {
        if (requestIds.length == 0) return;
        try coordinator.reclaim(requestIds[requestSeed % requestIds.length]) {} catch {}
    }

    function cancel(uint256 requestSeed) external {
        if (requestIds.length == 0) return;
        try consumer.cancel(requestIds[requestSeed % requestIds.length]) {} catch {}
    }

    function withdraw(uint256 accountSeed) external {
        address account = accounts[accountSeed % accounts.length];
        uint256 amount = coordinator.balanceOf(address(0), account);
        if (amount == 0) return;
        vm.prank(account);
        coordinator.withdraw(address(0), address(0xD00D));
        ghostWithdrawn += amount;
    }

    function requestCount() external view returns (uint256) {
        return requestIds.length;
    }

    function accountCount() external view returns (uint256) {
        return accounts.length;
    }
}
