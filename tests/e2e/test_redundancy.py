"""Redundancy with real node processes: several nodes, each with its own key, store and config, serve one request.

The multi-node rig (tests/multinode.py): anvil, the contracts, one shared echo container, node processes staked with
their own dev accounts. A `CallbackCounter` (coordinator_contract/test/utils) asks with redundancy 3 and counts
its callbacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from node.chain.contracts import model_id
from node.config import ETH_TOKEN
from node.devnet import DEFAULT_FEE_WEI
from tests.multinode import MODEL, MultiNode, RigNode

pytestmark = pytest.mark.e2e

FULFILLED = 2


def balance(rig: MultiNode, node: RigNode) -> int:
    assert rig.dev.deployment is not None
    return int(rig.dev.deployment.coordinator.functions.balanceOf(ETH_TOKEN, node.address).call())


def test_three_nodes_serve_redundancy_three_each_paid_once_and_a_fourth_spends_no_gas(tmp_path: Path) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        nodes = [rig.add_node(name) for name in ("a", "b", "c", "d")]
        serving, late = nodes[:3], nodes[3]
        for node in serving:
            rig.start(node)
        consumer: Any = rig.deploy("CallbackCounter", dep.coordinator.address)
        before = {node.name: balance(rig, node) for node in nodes}

        fn = consumer.functions.ask(model_id(MODEL), b"three of us", 3, rig.now() + 3600)
        receipt = rig.transact(fn, value=3 * DEFAULT_FEE_WEI)
        rid = rig.dev.request_id_of(receipt)
        rig.wait(lambda: consumer.functions.results(rid).call() == 3 or None, "three deliveries")

        events = dep.coordinator.events.RequestFulfilled().get_logs(
            from_block=receipt["blockNumber"], argument_filters={"requestId": rid}
        )
        assert sorted(e["args"]["node"] for e in events) == sorted(n.address for n in serving)  # one each
        assert all(e["args"]["fee"] == DEFAULT_FEE_WEI for e in events)
        for node in serving:
            assert balance(rig, node) == before[node.name] + DEFAULT_FEE_WEI  # paid once
            assert rig.tx_count(node) == 1  # one delivery, nothing else
        assert rig.dev.request_state(rid)["status"] == FULFILLED
        assert consumer.functions.errors(rid).call() == 0

        # A fourth node that comes up now backfills the full request and spends no gas on it.
        rig.start(late)

        def settled() -> tuple[str, str] | None:
            rows = late.db("SELECT state, error FROM jobs WHERE request_id = ?", str(rid))
            return rows[0] if rows and rows[0][0] in ("expired", "failed", "confirmed") else None

        rig.wait(settled, "the late node to settle the request it backfilled")
        state = late.db("SELECT state, error FROM jobs WHERE request_id = ?", str(rid))[0]
        assert state[0] == "expired", state
        assert "already settled on-chain" in state[1]
        assert rig.tx_count(late) == 0
        assert balance(rig, late) == before["d"]
        assert consumer.functions.results(rid).call() == 3
