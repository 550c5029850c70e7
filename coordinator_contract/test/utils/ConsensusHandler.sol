// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Test} from "../../testing/Test.sol";
import {ConsensusConsumer} from "./ConsensusActors.sol";
import {Coordinator} from "../../src/Coordinator.sol";
import {ICoordinator} from "../../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../../src/interfaces/IConsensus.sol";

/// @notice Drives consensus requests with random requests, commits, reveals (honest and copied), time, reclaims and
/// withdrawals, keeping the ghost totals and the payments each reveal caused.
contract ConsensusHandler is Test {
    Coordinator public immutable coordinator;
    IConsensus public immutable cons;
    ConsensusConsumer public immutable consumer;
    address[] public nodes;
    address[] public accounts;
    uint256[] public requestIds;
    bytes[3] internal outputs = [bytes(hex"01"), bytes(hex"02"), bytes(hex"0303")];

    uint256 public ghostEscrowed;
    uint256 public ghostWithdrawn;
    uint256 public ghostCopiesAccepted;
    /// @notice Reveals that reached a quorum (the runs do reach it: see `invariantOneCallbackAtMostPerRequest`).
    uint256 public ghostQuorums;
    /// @notice Output index + 1 each node committed to, per request.
    mapping(uint256 => mapping(address => uint256)) public committedTo;
    /// @notice Payments a node received for a request (counted by the reveal that made them).
    mapping(uint256 => mapping(address => uint256)) public ghostPayments;

    constructor(Coordinator coordinator_, ConsensusConsumer consumer_, address[] memory nodes_) {
        coordinator = coordinator_;
        cons = IConsensus(address(coordinator_));
        consumer = consumer_;
        nodes = nodes_;
        accounts = nodes_;
        accounts.push(address(consumer_));
        accounts.push(coordinator_.protocolFeeRecipient());
    }

    function request(uint16 n, uint16 k, uint32 window, uint256 fee) external {
        // casting to 'uint16' / 'uint32' is safe because bound() keeps them within the node count and an hour
        // forge-lint: disable-next-line(unsafe-typecast)
        n = uint16(bound(n, 1, nodes.length));
        // forge-lint: disable-next-line(unsafe-typecast)
        k = uint16(bound(k, 1, n));
        // forge-lint: disable-next-line(unsafe-typecast)
        window = uint32(bound(window, 1, 30 minutes));
        fee = bound(fee, 1_000, 1 ether);
        ICoordinator.RequestParams memory p = ICoordinator.RequestParams({
            modelId: keccak256("m"),
            callbackGasLimit: 200_000,
            redundancy: n,
            deadline: uint64(block.timestamp + 1 hours),
            token: address(0),
            feePerNode: fee
        });
        vm.deal(address(this), fee * n);
        IConsensus.ConsensusParams memory c =
            IConsensus.ConsensusParams({quorum: k, commitWindow: window, modelDigest: bytes32(0)});
        requestIds.push(consumer.ask{value: fee * n}(p, hex"01", c));
        ghostEscrowed += fee * n;
    }

    /// @dev Half the time the newest request, so that requests gather enough votes to reach their quorum.
    function _pick(uint256 requestSeed) internal view returns (uint256) {
        if (requestSeed % 2 == 0) return requestIds[requestIds.length - 1];
        return requestIds[(requestSeed >> 1) % requestIds.length];
    }

    function _salt(uint256 id, address node) internal pure returns (bytes32) {
        return keccak256(abi.encode(id, node, "salt"));
    }

    function commit(uint256 requestSeed, uint256 nodeSeed, uint256 outputSeed) external {
        if (requestIds.length == 0) return;
        uint256 id = _pick(requestSeed);
        address node = nodes[nodeSeed % nodes.length];
        uint256 out = outputSeed % 4 < 2 ? 0 : outputSeed % 4 - 1; // output 0 half the time
        bytes32 c = cons.commitmentFor(id, node, keccak256(outputs[out]), _salt(id, node));
        vm.prank(node);
        try cons.commit(id, c) {
            committedTo[id][node] = out + 1;
        } catch {}
    }

    function reveal(uint256 requestSeed, uint256 nodeSeed) external {
        if (requestIds.length == 0) return;
        uint256 id = _pick(requestSeed);
        // The first node from the seed on that committed and did not reveal yet.
        for (uint256 i; i < nodes.length; ++i) {
            address node = nodes[(nodeSeed % nodes.length + i) % nodes.length];
            uint256 out = committedTo[id][node];
            (, bytes32 revealedHash,) = cons.voteOf(id, node);
            if (out == 0 || revealedHash != 0) continue;
            _revealAs(id, node, outputs[out - 1], _salt(id, node), false);
            return;
        }
    }

    /// @dev `copier` reveals what `victim` committed to, with its salt: must never be accepted.
    function copyReveal(uint256 requestSeed, uint256 victimSeed, uint256 copierSeed) external {
        if (requestIds.length == 0) return;
        uint256 id = _pick(requestSeed);
        address victim = nodes[victimSeed % nodes.length];
        address copier = nodes[copierSeed % nodes.length];
        uint256 out = committedTo[id][victim];
        if (out == 0 || copier == victim) return;
        _revealAs(id, copier, outputs[out - 1], _salt(id, victim), true);
    }

    function _revealAs(uint256 id, address node, bytes memory output, bytes32 salt, bool copy) internal {
        uint256[] memory before = new uint256[](nodes.length);
        for (uint256 i; i < nodes.length; ++i) {
            before[i] = coordinator.balanceOf(address(0), nodes[i]);
        }
        vm.prank(node);
        try cons.reveal(id, output, salt) returns (bool reached) {
            if (copy) ++ghostCopiesAccepted;
            if (reached) ++ghostQuorums;
        } catch {}
        for (uint256 i; i < nodes.length; ++i) {
            if (coordinator.balanceOf(address(0), nodes[i]) > before[i]) ++ghostPayments[id][nodes[i]];
        }
    }

    function passTime(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 20 minutes));
    }

    function reclaim(uint256 requestSeed) external {
        if (requestIds.length == 0) return;
        try coordinator.reclaim(_pick(requestSeed)) {} catch {}
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

    function nodeCount() external view returns (uint256) {
        return nodes.length;
    }

    function accountCount() external view returns (uint256) {
        return accounts.length;
    }
}
