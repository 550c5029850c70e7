"""Every request ends in a callback, on a real one-node devnet: anvil, the contracts, the MiniLM classifier, the node.

A failing request reaches the consumer's error callback at once (the devnet's failure quorum is 1), and a redundant
request that only some nodes served ends, after its deadline, with the error callback for the unserved slot (the
node sends `reclaim`) and the slot's fee refunded. `CallbackCounter` (coordinator_contract/test/utils) counts each
callback it gets.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from eth_abi.abi import encode

from node.chain.contracts import model_id
from node.config import ETH_TOKEN
from node.devnet import DEFAULT_FEE_WEI, Devnet, DevnetError, wait_until
from tests.e2e.conftest import System

pytestmark = pytest.mark.e2e

#: `Status` values of the coordinator's RequestView.
FAILED, RECLAIMED, CANCELLED = 3, 4, 5


@pytest.fixture(scope="module")
def consumer(system: System) -> Any:
    dep = system.dev.deployment
    assert dep is not None
    return system.dev._deploy("CallbackCounter", dep.coordinator.address)


def chain_now(dev: Devnet) -> int:
    return int(dev.w3.eth.get_block("latest")["timestamp"])


def ask(dev: Devnet, consumer: Any, input_: bytes, *, redundancy: int = 1, window_s: int = 3600) -> tuple[int, int]:
    """A request from the consumer: (request id, block it was made in)."""
    fn = consumer.functions.ask(model_id(dev.model_name), input_, redundancy, chain_now(dev) + window_s)
    receipt = dev._transact(fn, dev.user, DEFAULT_FEE_WEI * redundancy)
    return dev.request_id_of(receipt), int(receipt["blockNumber"])


def reason_of(consumer: Any, rid: int) -> str:
    """The reason of the consumer's (one) error callback for `rid`, from its `ErrorReceived` log."""
    (log,) = consumer.events.ErrorReceived().get_logs(from_block=0, argument_filters={"requestId": rid})
    return str(log["args"]["reason"])


def refunds(dev: Devnet, consumer: Any) -> int:
    assert dev.deployment is not None
    return int(dev.deployment.coordinator.functions.balanceOf(ETH_TOKEN, consumer.address).call())


@pytest.mark.parametrize(
    ("what", "input_", "reason"),
    [
        ("an empty text", encode(["string"], [""]), "empty"),
        ("bytes that are not (string)", b"\xde\xad\xbe\xef", "cannot decode input as (string)"),
    ],
    ids=["empty-text", "not-abi"],
)
def test_a_request_the_model_cannot_serve_ends_in_the_error_callback_with_a_refund(
    system: System, consumer: Any, what: str, input_: bytes, reason: str
) -> None:
    dev = system.dev
    assert dev.deployment is not None
    before = refunds(dev, consumer)
    rid, block = ask(dev, consumer, input_)
    wait_until(
        lambda: consumer.functions.errors(rid).call() == 1,
        timeout_s=60,
        what=f"the error callback for {what}",
        alive=system.node.check_alive,
    )
    assert reason in reason_of(consumer, rid)
    assert consumer.functions.results(rid).call() == 0
    assert dev.request_state(rid)["status"] == FAILED
    assert refunds(dev, consumer) == before + DEFAULT_FEE_WEI  # the whole escrow back
    (failed,) = dev.deployment.coordinator.events.RequestFailed().get_logs(
        from_block=block, argument_filters={"requestId": rid}
    )
    assert failed["args"]["callbackOk"] is True
    assert failed["blockNumber"] - block <= 3  # within a few blocks, not at the deadline


def test_a_redundant_request_served_by_one_node_ends_after_its_deadline_with_the_error_callback(
    system: System, consumer: Any
) -> None:
    dev = system.dev
    before = refunds(dev, consumer)
    rid, _ = ask(dev, consumer, encode(["string"], ["A lovely, kind and generous gesture"]), redundancy=2, window_s=600)
    wait_until(
        lambda: consumer.functions.results(rid).call() == 1,
        timeout_s=60,
        what="the one node's delivery",
        alive=system.node.check_alive,
    )
    assert consumer.functions.errors(rid).call() == 0  # the other slot is still open until the deadline
    dev.w3.provider.make_request("evm_increaseTime", [720])  # type: ignore[arg-type]  # past the deadline and spread
    dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    wait_until(
        lambda: consumer.functions.errors(rid).call() == 1,
        timeout_s=90,
        what="the error callback after the deadline (the node's reclaim)",
        alive=system.node.check_alive,
    )
    assert reason_of(consumer, rid) == "deadline: 1 of 2 unserved"
    assert consumer.functions.results(rid).call() == 1  # exactly one result and one error: one per slot
    assert dev.request_state(rid)["status"] == RECLAIMED
    assert refunds(dev, consumer) == before + DEFAULT_FEE_WEI  # the unserved slot's fee
    with sqlite3.connect(f"file:{dev.workdir / 'node.db'}?mode=ro", uri=True, timeout=10) as db:
        (mark,) = db.execute("SELECT reclaim FROM outcomes WHERE request_id = ?", (str(rid),)).fetchone()
    assert mark.startswith("done 0x")  # the node sent the reclaim, once, and it was mined
    receipt = dev.w3.eth.get_transaction_receipt(mark.split()[1])
    assert (receipt["from"], receipt["status"]) == (dev.node_account.address, 1)


def test_a_cancelled_request_is_refunded_and_costs_the_node_nothing(system: System, consumer: Any) -> None:
    """Made while the node is down and cancelled before it is back: the whole escrow returns to the consumer, and the
    restarted node, which backfills the request, sends nothing for it."""
    dev = system.dev
    assert dev.stop(system.node) == 0
    nonce = dev.w3.eth.get_transaction_count(dev.node_account.address)
    before = refunds(dev, consumer)
    rid, _ = ask(dev, consumer, encode(["string"], ["Never mind, I changed my mind"]), redundancy=2)
    dev._transact(consumer.functions.cancel(rid), dev.user)
    assert dev.request_state(rid)["status"] == CANCELLED
    assert refunds(dev, consumer) == before + 2 * DEFAULT_FEE_WEI
    system.node = dev.start_node(system.config)
    control, _ = ask(dev, consumer, encode(["string"], ["What a wonderful day"]))  # the node is back and serving
    wait_until(
        lambda: consumer.functions.results(control).call() == 1,
        timeout_s=60,
        what="the control request's delivery",
        alive=system.node.check_alive,
    )
    store = dev.workdir / "node.db"

    def settled() -> str | None:  # the restarted node's own verdict on the cancelled request, once it has one
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10) as db:
            row = db.execute("SELECT state FROM jobs WHERE request_id = ?", (str(rid),)).fetchone()
        return row[0] if row and row[0] not in ("seen", "running", "computed", "submitted") else None

    assert wait_until(settled, timeout_s=60, what="the cancelled request's job to settle") == "expired"
    assert dev.w3.eth.get_transaction_count(dev.node_account.address) == nonce + 1  # the control delivery only
    assert consumer.functions.results(rid).call() == consumer.functions.errors(rid).call() == 0
    assert dev.deployment is not None
    fn = consumer.functions.ask(model_id("nobody/serves@1"), b"x", 1, chain_now(dev) + 3600)
    unserved = dev.request_id_of(dev._transact(fn, dev.user, DEFAULT_FEE_WEI))
    with pytest.raises(DevnetError, match="NotConsumer"):  # only the request's consumer may cancel it
        dev._transact(dev.deployment.coordinator.functions.cancelRequest(unserved), dev.user)
    with pytest.raises(DevnetError, match="RequestClosed"):  # nor once it was served (and so closed)
        dev._transact(consumer.functions.cancel(control), dev.user)
