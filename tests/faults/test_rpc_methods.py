"""A provider without `eth_sendRawTransactionSync` (EIP-7966): the node falls back to sending and polling receipts."""

from __future__ import annotations

import pytest

from bench.rpcproxy import proxy_in_thread
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults


def test_endpoint_without_sync_send_falls_back_to_receipt_polling(rig: FaultRig) -> None:
    dev = rig.dev
    with proxy_in_thread(dev.rpc_port, refuse=frozenset({"eth_sendRawTransactionSync"})) as proxy:
        rig.config = dev.write_node_config({MODEL: {"url": rig.container_url, "timeout_s": 10}}, rpc_url=proxy.http_url)
        rig.start_node()
        ids = dev.request_many(MODEL, [f"no-sync-{i}".encode() for i in range(12)])
        rig.wait_fulfilled(ids)
        rig.wait_states("every job confirmed", confirmed=len(ids))
        calls = proxy.http_calls

    assert rig.fulfillments() == {rid: 1 for rid in ids}
    # Tried while not known to be missing (at most one per concurrent send), never again once refused.
    assert 1 <= calls["eth_sendRawTransactionSync"] <= 4
    assert calls["eth_sendRawTransaction"] >= 1
    assert calls["eth_getTransactionReceipt"] >= calls["eth_sendRawTransaction"]
    log = (dev.workdir / "node.log").read_text()
    assert "has no eth_sendRawTransactionSync" in log
    assert "refused by the RPC" not in log  # the refusal is not mistaken for a refused transaction
