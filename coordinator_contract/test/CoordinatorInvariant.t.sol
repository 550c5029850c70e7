// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {CoordinatorTest} from "./utils/CoordinatorBase.sol";
import {CoordinatorHandler} from "./utils/CoordinatorHandler.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";

contract CoordinatorInvariantTest is CoordinatorTest {
    CoordinatorHandler internal handler;

    function setUp() public override {
        super.setUp();
        vm.prank(owner);
        coordinator.setProtocolFee(500, owner);
        address[] memory nodes = new address[](3);
        nodes[0] = node;
        nodes[1] = node2;
        nodes[2] = node3;
        handler = new CoordinatorHandler(coordinator, consumer, nodes);
        targetContract(address(handler));
    }

    /// @dev Escrow still held for open requests: the slots nobody delivered yet.
    function _openEscrow() internal view returns (uint256 total) {
        for (uint256 i; i < handler.requestCount(); ++i) {
            ICoordinator.RequestView memory r = coordinator.getRequest(handler.requestIds(i));
            if (r.status == ICoordinator.Status.Open) {
                total += uint256(r.redundancy - r.delivered) * r.feePerNode;
            }
        }
    }

    function _unwithdrawn() internal view returns (uint256 total) {
        for (uint256 i; i < handler.accountCount(); ++i) {
            total += coordinator.balanceOf(address(0), handler.accounts(i));
        }
    }

    function invariantBalanceIsEscrowPlusWithdrawableBalances() public view {
        assertEq(address(coordinator).balance, _openEscrow() + _unwithdrawn(), "every wei accounted for");
        assertEq(
            address(coordinator).balance, handler.ghostEscrowed() - handler.ghostWithdrawn(), "in minus out"
        );
    }

    function invariantNoRequestExceedsItsRedundancy() public view {
        for (uint256 i; i < handler.requestCount(); ++i) {
            ICoordinator.RequestView memory r = coordinator.getRequest(handler.requestIds(i));
            assertLe(r.delivered, r.redundancy, "deliveries within redundancy");
            assertTrue(
                r.status != ICoordinator.Status.Fulfilled || r.delivered == r.redundancy, "fulfilled = full"
            );
        }
    }

    /// @dev A failed request made exactly one error callback, a reclaimed one at most one, any other none.
    function invariantAtMostOneErrorCallbackPerRequest() public view {
        uint256 failed;
        uint256 reclaimed;
        for (uint256 i; i < handler.requestCount(); ++i) {
            ICoordinator.Status status = coordinator.getRequest(handler.requestIds(i)).status;
            if (status == ICoordinator.Status.Failed) ++failed;
            if (status == ICoordinator.Status.Reclaimed) ++reclaimed;
        }
        assertGe(consumer.failures(), failed, "every failed request called back");
        assertLe(consumer.failures(), failed + reclaimed, "no second error callback, none for the rest");
    }

    function invariantNoNodeIsPaidTwiceForARequest() public view {
        assertEq(handler.ghostDoublePayments(), 0, "no double payment");
    }
}
