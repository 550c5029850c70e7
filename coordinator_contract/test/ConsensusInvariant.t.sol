// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConsensusTest} from "./utils/ConsensusBase.sol";
import {ConsensusHandler} from "./utils/ConsensusHandler.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";

contract ConsensusInvariantTest is ConsensusTest {
    ConsensusHandler internal handler;

    function setUp() public override {
        super.setUp();
        vm.prank(owner);
        coordinator.setProtocolFee(500, owner);
        address[] memory nodes = new address[](5);
        for (uint256 i; i < nodes.length; ++i) {
            nodes[i] = voters[i];
        }
        handler = new ConsensusHandler(coordinator, asker, nodes);
        targetContract(address(handler));
    }

    function invariantOneCallbackAtMostPerRequest() public view {
        for (uint256 i; i < handler.requestCount(); ++i) {
            uint256 id = handler.requestIds(i);
            uint256 results = asker.results(id);
            assertLe(results + asker.errors(id), 1, "at most one callback");
            ICoordinator.Status status = coordinator.getRequest(id).status;
            assertEq(results == 1, status == ICoordinator.Status.Fulfilled, "a result iff fulfilled");
        }
    }

    function invariantOnlyTheAgreeingQuorumIsPaid() public view {
        for (uint256 i; i < handler.requestCount(); ++i) {
            uint256 id = handler.requestIds(i);
            (uint16 quorum,,,,,, bytes32 agreed) = cons.consensusOf(id);
            uint256 paid;
            for (uint256 j; j < handler.nodeCount(); ++j) {
                address n = handler.nodes(j);
                uint256 payments = handler.ghostPayments(id, n);
                if (payments == 0) continue;
                assertEq(payments, 1, "paid once");
                ++paid;
                (, bytes32 outputHash, bool revealed) = cons.voteOf(id, n);
                assertTrue(revealed && outputHash == agreed, "paid nodes revealed the agreed output");
            }
            bool fulfilled = coordinator.getRequest(id).status == ICoordinator.Status.Fulfilled;
            assertEq(paid, fulfilled ? quorum : 0, "exactly the quorum, and only at quorum");
        }
        assertEq(handler.ghostCopiesAccepted(), 0, "no copied reveal accepted");
    }

    function invariantEscrowIsConserved() public view {
        uint256 open;
        for (uint256 i; i < handler.requestCount(); ++i) {
            ICoordinator.RequestView memory r = coordinator.getRequest(handler.requestIds(i));
            if (r.status == ICoordinator.Status.Open) open += uint256(r.redundancy) * r.feePerNode;
        }
        uint256 balances;
        for (uint256 i; i < handler.accountCount(); ++i) {
            balances += coordinator.balanceOf(address(0), handler.accounts(i));
        }
        assertEq(address(coordinator).balance, open + balances, "every wei accounted for");
        assertEq(
            address(coordinator).balance, handler.ghostEscrowed() - handler.ghostWithdrawn(), "in minus out"
        );
    }
}
