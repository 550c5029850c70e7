"""The node's HTTP RPC dies between compute and delivery: the result is kept, resent, and lands once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.devnet import Devnet, wait_until
from tests.proxy import TcpProxy

pytestmark = pytest.mark.e2e


@pytest.fixture
def dev(contracts_built: None, tmp_path: Path) -> Iterator[Devnet]:
    with Devnet(tmp_path) as d:
        d.start_anvil()
        d.deploy()
        yield d


def test_delivery_waits_out_an_rpc_outage_and_lands_once(dev: Devnet) -> None:
    proxy = TcpProxy(dev.rpc_port)
    try:
        _, url = dev.start_container()
        config = dev.write_node_config({dev.model_name: url})
        # Sends go through the proxy; logs still arrive over the direct WebSocket.
        config.write_text(config.read_text().replace(f'rpc_url = "{dev.rpc_url}"', f'rpc_url = "{proxy.url}"'))
        node = dev.start_node(config)
        wait_until(
            lambda: "listening to" in node.log_path.read_text(),
            timeout_s=60,
            what="the node to start listening",
            alive=node.check_alive,
        )
        nonce_before = dev.w3.eth.get_transaction_count(dev.node_account.address)

        proxy.cut()
        rid = dev.ask_sentiment("I absolutely love this, it is wonderful")
        wait_until(
            lambda: f"request {rid}: delivery attempt 2 failed" in node.log_path.read_text(),
            timeout_s=60,
            what="the node to retry the delivery",
            alive=node.check_alive,
        )
        assert not dev.is_fulfilled(rid)

        proxy.restore()
        label, _ = dev.wait_sentiment(rid, timeout_s=60, alive=node.check_alive)
        assert label == "positive"
        assert dev.w3.eth.get_transaction_count(dev.node_account.address) == nonce_before + 1
        log = node.log_path.read_text()
        assert log.count(f"request {rid}: delivered") == 1
        assert dev.private_key_hex() not in log
    finally:
        proxy.close()
