// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ConsensusTest} from "./utils/ConsensusBase.sol";
import {ICoordinator} from "../src/interfaces/ICoordinator.sol";
import {IConsensus} from "../src/interfaces/IConsensus.sol";
import {ConsensusConsumer} from "./utils/ConsensusActors.sol";

/// @notice What a consensus request costs next to a plain redundant one, same consumer, same callback.
/// @dev Each transaction's gas is the call's gas (`vm.lastCallGas`) plus its intrinsic cost (21,000 and calldata);
/// under `--isolate` every call is its own transaction and its gas already includes that. Run
/// `forge test --match-contract ConsensusGasTest --isolate -vv` for on-chain figures (cold storage in every
/// transaction); without `--isolate` (the gas snapshot) later calls find accounts and slots warm.
contract ConsensusGasTest is ConsensusTest {
    address internal constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;
    bytes internal constant INPUT = "Is this review positive? 'Great phone, battery lasts two days.'";
    bytes internal constant ANSWER =
        hex"00000000000000000000000000000000000000000000000000000000000000400000000000000000000000000000000000000000000000000000000000000f4240000000000000000000000000000000000000000000000000000000000000000008706f736974697665000000000000000000000000000000000000000000000000";

    function _log(string memory what, uint256 value) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,uint256)", what, value));
        ok;
    }

    /// @dev 21,000 + 16 per non-zero and 4 per zero calldata byte (EIP-2028).
    function _intrinsic(bytes memory data) internal pure returns (uint256 g) {
        g = 21_000;
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }

    bool internal isolated;

    function setUp() public override {
        super.setUp();
        asker.setRevertCallbacks(false); // a call that costs well under 21,000 unless it is a transaction of its own
        isolated = vm.lastCallGas().gasTotalUsed >= 21_000;
    }

    function _tx(string memory what, bytes memory data) internal view returns (uint256 g) {
        g = vm.lastCallGas().gasTotalUsed + (isolated ? 0 : _intrinsic(data));
        _log(what, g);
    }

    function _plainTotal() internal returns (uint256 total) {
        ICoordinator.RequestParams memory p = _params(3, FEE, address(0));
        uint256 id = asker.askPlain{value: 3 * FEE}(p, INPUT);
        total = _tx("plain r3: request", abi.encodeCall(ConsensusConsumer.askPlain, (p, INPUT)));
        for (uint256 i; i < 3; ++i) {
            vm.prank(voters[i]);
            coordinator.deliver(id, ANSWER);
            total += _tx("plain r3: deliver", abi.encodeCall(ICoordinator.deliver, (id, ANSWER)));
        }
        _log("plain r3: total", total);
    }

    function _consensusTotal() internal returns (uint256 total) {
        ICoordinator.RequestParams memory p = _params(3, FEE, address(0));
        IConsensus.ConsensusParams memory c = _consensus(2);
        uint256 id = asker.ask{value: 3 * FEE}(p, INPUT, c);
        total = _tx("consensus 3/2: request", abi.encodeCall(ConsensusConsumer.ask, (p, INPUT, c)));
        for (uint256 i; i < 3; ++i) {
            bytes32 commitment = _commitment(id, voters[i], ANSWER, _salt(voters[i], ANSWER));
            vm.prank(voters[i]);
            cons.commit(id, commitment);
            total += _tx("consensus 3/2: commit", abi.encodeCall(IConsensus.commit, (id, commitment)));
        }
        for (uint256 i; i < 2; ++i) {
            bytes32 salt = _salt(voters[i], ANSWER);
            vm.prank(voters[i]);
            cons.reveal(id, ANSWER, salt);
            total += _tx(
                i == 0 ? "consensus 3/2: reveal" : "consensus 3/2: reveal at quorum",
                abi.encodeCall(IConsensus.reveal, (id, ANSWER, salt))
            );
        }
        assertEq(asker.results(id), 1, "settled");
        _log("consensus 3/2: total", total);
    }

    function testConsensusCostsAtMostOneAndAHalfPlainRequests() public {
        // Each flow on fresh nodes' balances: the plain flow pays three first-time balances, the consensus flow two.
        uint256 plain = _plainTotal();
        vm.prank(node);
        coordinator.withdraw(address(0), node);
        vm.prank(node2);
        coordinator.withdraw(address(0), node2);
        vm.prank(node3);
        coordinator.withdraw(address(0), node3);
        uint256 consensus = _consensusTotal();
        _log("ratio consensus / plain, per mille", consensus * 1000 / plain);
        assertLe(consensus * 2, plain * 3, "at most 1.5x a plain redundancy-3 request");
    }
}
