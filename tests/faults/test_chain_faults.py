"""The chain misbehaves: a reorg inside the confirmation depth, a delivery dropped from the mempool, a base-fee
spike above what the node bid."""

from __future__ import annotations

import json
from typing import Any

import pytest
from eth_utils.crypto import keccak

from node.chain.contracts import model_id
from node.commands.chain_ops import Reverts, send_tx
from node.devnet import DEFAULT_FEE_WEI, wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults


def rpc(rig: FaultRig, method: str, *params: Any) -> Any:
    response = rig.dev.w3.provider.make_request(method, list(params))  # type: ignore[arg-type]
    assert "error" not in response, response
    return response.get("result")


def signed_request(rig: FaultRig, input_: bytes, nonce: int) -> str:
    dev = rig.dev
    fn = dev.deployment.coordinator.functions.requestInference(model_id(MODEL), input_, 100_000)  # type: ignore[union-attr]
    params: Any = {
        "from": dev.user.address,
        "value": DEFAULT_FEE_WEI,
        "nonce": nonce,
        "gas": 400_000,
        "maxFeePerGas": 100 * 10**9,
        "maxPriorityFeePerGas": 10**9,
    }
    return "0x" + bytes(dev.user.sign_transaction(fn.build_transaction(params)).raw_transaction).hex()


def output_hashes(rig: FaultRig, request_id: int) -> list[bytes]:
    coordinator = rig.dev.deployment.coordinator  # type: ignore[union-attr]
    events = coordinator.events.RequestFulfilled().get_logs(from_block=0, argument_filters={"requestId": request_id})
    return [bytes(e["args"]["outputHash"]) for e in events]


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_reorg_within_confirmations_serves_only_the_reincluded_request(rig: FaultRig, transport: str) -> None:
    """Over a WebSocket every head is seen; polling HTTP every 4 s sees only some, so the reorg (two blocks replaced,
    three mined on top) happens between two polls and the stored hashes have a gap below the new head: the node must
    still find the fork and serve the re-included request (before the fix it dropped it as "orphaned")."""
    dev = rig.dev
    rig.configure(confirmations=3, **({} if transport == "ws" else {"ws": False, "poll_interval_s": 4.0}))
    rig.start_node()
    nonce = dev.w3.eth.get_transaction_count(dev.user.address)
    (orphan_id,) = dev.request_many(MODEL, [b"orphaned-request"])
    rpc(rig, "evm_mine")  # two blocks deep: still under the node's 3 confirmations
    top = dev.w3.eth.block_number
    wait_until(lambda: rig.db("SELECT 1 FROM blocks WHERE number = ?", top) or None, timeout_s=30, what="the head seen")
    assert rig.states() == {}, "a request under the confirmation depth must not become a job"

    # Replace both blocks: the orphaned request is gone, another request takes its place (and its id).
    rpc(rig, "anvil_reorg", 2, [[signed_request(rig, b"reincluded-request", nonce), 0]])
    rpc(rig, "anvil_mine", 3)
    wait_until(lambda: output_hashes(rig, orphan_id) or None, timeout_s=60, what="the re-included request delivered")
    rpc(rig, "anvil_mine", 3)
    rig.wait_states("the job confirmed", confirmed=1)

    assert output_hashes(rig, orphan_id) == [keccak(b"reincluded-request")]
    assert b"orphaned-request" not in rig.computed()
    assert rig.states() == {"confirmed": 1}
    (request,) = rig.db("SELECT request FROM jobs")
    assert bytes.fromhex(json.loads(request[0])["input"]) == b"reincluded-request"


def test_dropped_and_underpriced_deliveries_are_replaced_without_a_nonce_gap(rig: FaultRig) -> None:
    dev = rig.dev
    rig.configure(bump_after_blocks=2, bump_percent=25)
    rig.start_node()
    node = dev.node_account.address
    rpc(rig, "evm_setAutomine", False)

    def mine_until(what: str, done: Any) -> None:
        def step() -> bool:
            if done():
                return True
            rpc(rig, "evm_mine")
            return False

        wait_until(step, timeout_s=60, what=what, interval_s=0.3, alive=rig.node.check_alive)  # type: ignore[union-attr]

    def sent_tx() -> dict[str, Any]:
        rig.wait_states("a delivery sent", submitted=1)
        ((request, hashes),) = rig.db("SELECT request, hashes FROM txs WHERE state = 'pending'")
        return {**json.loads(request), "hashes": json.loads(hashes)}

    # A delivery the mempool drops.
    dev.request_many(MODEL, [b"dropped-delivery"], wait=False)
    rpc(rig, "evm_mine")
    first = sent_tx()
    rpc(rig, "anvil_dropTransaction", first["hashes"][0])
    mine_until("the dropped delivery replaced and mined", lambda: rig.states()["confirmed"] == 1)

    # A base fee that jumps far above the delivery's maxFeePerGas.
    dev.request_many(MODEL, [b"underpriced-delivery"], wait=False)
    rpc(rig, "evm_mine")
    second = sent_tx()
    rpc(rig, "anvil_setNextBlockBaseFeePerGas", hex(int(second["maxFeePerGas"]) * 6))
    mine_until("the underpriced delivery replaced and mined", lambda: rig.states()["confirmed"] == 2)

    txs = rig.node_txs(node)
    deliveries = txs[-2:]
    assert [tx["status"] for tx in txs] == [1] * len(txs)
    assert [tx["nonce"] for tx in txs] == list(range(txs[0]["nonce"], txs[0]["nonce"] + len(txs))), "nonce gap"
    assert deliveries[0]["hash"].to_0x_hex() != first["hashes"][0]  # a replacement, not the dropped one
    assert deliveries[0]["maxFeePerGas"] > int(first["maxFeePerGas"])
    # Replaced once it was bump_after_blocks behind and BUMP_MIN_AGE_S old, by then the spike had decayed: the new bid
    # is 2x the base fee it saw (+ tip), so at least 2x the base fee of the block that took it.
    assert deliveries[1]["hash"].to_0x_hex() not in second["hashes"]
    mined_in = dev.w3.eth.get_block(deliveries[1]["blockNumber"])
    assert deliveries[1]["maxFeePerGas"] > int(second["maxFeePerGas"])
    assert deliveries[1]["maxFeePerGas"] >= 2 * mined_in["baseFeePerGas"]
    assert dev.w3.eth.get_transaction_count(node) == deliveries[1]["nonce"] + 1
    assert sum(rig.fulfillments().values()) == 2


def test_the_operator_using_the_nodes_key_meanwhile_loses_no_delivery(rig: FaultRig) -> None:
    """`infera node stake` (or any wallet) sends from the node's key while the node runs: the node's next delivery
    meets "nonce too low", resyncs its nonce and sends again; every request is answered once, with no nonce gap."""
    dev = rig.dev
    rig.configure()
    rig.start_node()
    node = dev.node_account
    dev.request_many(MODEL, [b"before the operator's transaction"])
    rig.wait_states("the first delivery", confirmed=1)
    registry = dev.deployment.registry  # type: ignore[union-attr]
    send_tx(dev.w3, registry.functions.addStake(), node, what="addStake", reverts=Reverts(), value=10**15)
    dev.request_many(MODEL, [b"after it, one", b"after it, two", b"after it, three"], wait=False)
    rig.wait_states("every delivery after the operator's transaction", confirmed=4)
    assert sorted(rig.fulfillments().values()) == [1, 1, 1, 1]
    txs = rig.node_txs(node.address)
    assert [tx["nonce"] for tx in txs] == list(range(txs[0]["nonce"], txs[0]["nonce"] + len(txs))), "nonce gap"
    assert [tx["status"] for tx in txs] == [1] * len(txs)
