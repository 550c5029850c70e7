"""The node is stopped while requests are made; started again, it backfills from its cursor and serves them all,
spreading the deliveries over its two staked keys."""

from __future__ import annotations

from collections import Counter

import pytest

from node.devnet import dev_account, wait_until
from tests.faults.conftest import MODEL, FaultRig, readyz

pytestmark = pytest.mark.faults


def test_requests_made_while_the_node_is_down_are_all_delivered(rig: FaultRig) -> None:
    dev = rig.dev
    second_key = dev_account(3)
    dev.register_node(second_key)
    rig.env = {"INFERA_SECOND_KEY": second_key.key.hex()}
    rig.configure(extra_key_envs=["INFERA_SECOND_KEY"], max_batch=16)
    node = rig.start_node()
    warm = dev.request_many(MODEL, [b"before-downtime"])
    rig.wait_fulfilled(warm)

    assert dev.stop(node) == 0  # a clean stop (SIGTERM)
    inputs = [f"while-down-{i:02d}".encode() for i in range(50)]
    ids = dev.request_many(MODEL, inputs)
    assert all(rig.fulfillments()[i] == 0 for i in ids)

    rig.start_node()
    rig.wait_fulfilled(ids)
    rig.wait_states("every job confirmed", confirmed=51)
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    assert rig.computed() == Counter(dict.fromkeys([b"before-downtime", *inputs], 1))
    # Both keys delivered (round-robin over batches of at most 16).
    events = dev.deployment.coordinator.events.RequestFulfilled().get_logs(from_block=0)  # type: ignore[union-attr]
    senders = {e["args"]["node"] for e in events if e["args"]["requestId"] in ids}
    assert senders == {dev.node_account.address, second_key.address}
    for address in senders:
        txs = rig.node_txs(address)
        assert all(tx["status"] == 1 for tx in txs)
        assert [tx["nonce"] for tx in txs] == list(range(txs[0]["nonce"], txs[0]["nonce"] + len(txs)))


def test_every_log_seen_twice_is_one_job(rig: FaultRig) -> None:
    """Rewinding the stored cursor makes the node read every request log a second time: all are dropped as
    duplicates, nothing is computed or sent again."""
    dev = rig.dev
    rig.configure()
    node = rig.start_node()
    ids = dev.request_many(MODEL, [f"once-{i}".encode() for i in range(20)])
    rig.wait_fulfilled(ids)
    rig.wait_states("every job confirmed", confirmed=len(ids))
    assert dev.stop(node) == 0
    nonce = dev.w3.eth.get_transaction_count(dev.node_account.address)
    rig.write_db("UPDATE cursors SET next_block = 0")

    rig.start_node()  # "listening" is logged once the backfill (all of history) has been handed on
    wait_until(lambda: readyz(dev.api_port)[1].get("duplicates_dropped") == len(ids), timeout_s=30, what="duplicates")
    assert dev.w3.eth.get_transaction_count(dev.node_account.address) == nonce
    assert rig.computed() == Counter(f"once-{i}".encode() for i in range(20))
    assert rig.states() == {"confirmed": len(ids)}


def test_a_second_key_that_is_not_an_active_node_delivers_nothing_and_fails_nothing(rig: FaultRig) -> None:
    """A misconfigured `extra_key_envs` key (funded, never registered): the coordinator refuses its deliveries
    (`NodeNotActive` of that key). Before, that refusal was taken for the request's and the active key reported the
    request as failed, losing its fee and failing the consumer. Now the key pauses (readiness names it) and the
    active key delivers every request once."""
    dev = rig.dev
    stray = dev_account(4)  # funded by anvil, not registered
    rig.env = {"INFERA_SECOND_KEY": stray.key.hex()}
    rig.configure(extra_key_envs=["INFERA_SECOND_KEY"], max_batch=1)
    rig.start_node()
    ids = dev.request_many(MODEL, [f"two-keys-{i}".encode() for i in range(6)])
    rig.wait_fulfilled(ids, timeout_s=120)
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    events = dev.deployment.coordinator.events  # type: ignore[union-attr]
    assert not [e for e in events.FailureReported().get_logs(from_block=0) if e["args"]["requestId"] in ids]
    senders = {
        e["args"]["node"] for e in events.RequestFulfilled().get_logs(from_block=0) if e["args"]["requestId"] in ids
    }
    assert senders == {dev.node_account.address}
    assert dev.w3.eth.get_transaction_count(stray.address) == 0  # the stray key sent nothing
    status, body = readyz(dev.api_port)
    assert status == 503
    assert any(stray.address in line and "not registered" in line for line in body["checks"]["stake"]["problems"])
