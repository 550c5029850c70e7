"""30 s without RPC (WebSocket and HTTP dropped) in the middle of a load: the node stays up, reports itself not
ready, and delivers everything once the RPC is back."""

from __future__ import annotations

import time
from typing import Any

import pytest

from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig, readyz

pytestmark = pytest.mark.faults

OUTAGE_S = 30.0


def test_thirty_seconds_without_rpc_mid_load(rig: FaultRig) -> None:
    dev = rig.dev
    rig.configure()
    node = rig.start_node()
    ids = dev.request_many(MODEL, [f"before-{i}".encode() for i in range(20)])
    rig.wait_fulfilled(ids)
    wait_until(lambda: readyz(dev.api_port)[0] == 200, timeout_s=30, what="the node to be ready")

    rig.proxy.cut()
    cut_at = time.monotonic()
    not_ready: dict[str, Any] = {}
    n = 0
    while time.monotonic() - cut_at < OUTAGE_S:  # the load goes on, straight to anvil
        ids += dev.request_many(MODEL, [f"during-{n}".encode()])
        n += 1
        code, body = readyz(dev.api_port)
        if code == 503:
            not_ready = body
        node.check_alive()
    assert not_ready, "the node said it was ready while its RPC was cut"
    assert any("listener" in p or "RPC" in p for p in not_ready["problems"]), not_ready

    rig.proxy.restore()
    rig.wait_fulfilled(ids, timeout_s=120)
    wait_until(lambda: readyz(dev.api_port)[0] == 200, timeout_s=60, what="the node to be ready again")
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    _, status = readyz(dev.api_port)
    assert status["jobs"] == {"confirmed": len(ids)}
    txs = rig.node_txs(dev.node_account.address)
    assert all(tx["status"] == 1 for tx in txs)
    print(f"rpc outage: {len(ids)} requests, {OUTAGE_S:.0f} s outage, {len(txs)} delivery txs, all delivered once")
