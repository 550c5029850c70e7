"""A Solidity consumer asks; the node answers on-chain. Everything real: anvil, solc, MiniLM, the node process."""

from __future__ import annotations

import json

import pytest
from eth_abi.abi import encode

from node.chain.contracts import model_id
from node.devnet import wait_until
from tests.e2e.conftest import KEYSTORE_PASSWORD, System

pytestmark = pytest.mark.e2e

ANSWER_TIMEOUT_S = 60


def fulfilled_events(system: System, request_id: int) -> list[object]:
    dep = system.dev.deployment
    assert dep is not None
    topic = dep.coordinator.events.RequestFulfilled().topic
    return list(
        system.dev.w3.eth.get_logs(
            {
                "address": dep.coordinator.address,
                "fromBlock": dep.start_block,
                "topics": [topic, "0x" + request_id.to_bytes(32, "big").hex()],
            }
        )
    )


def test_positive_sentence_is_stored_as_positive(system: System) -> None:
    rid = system.dev.ask_sentiment("I absolutely love this, it is wonderful")
    label, score = system.dev.wait_sentiment(rid, timeout_s=ANSWER_TIMEOUT_S, alive=system.node.check_alive)
    assert label == "positive"
    assert 500_000 < score <= 1_000_000
    assert len(fulfilled_events(system, rid)) == 1


def test_negative_sentence_is_stored_as_negative(system: System) -> None:
    rid = system.dev.ask_sentiment("This is the worst thing I have ever bought, I hate it")
    label, _ = system.dev.wait_sentiment(rid, timeout_s=ANSWER_TIMEOUT_S, alive=system.node.check_alive)
    assert label == "negative"


def test_undecodable_input_fails_the_job_and_the_node_keeps_serving(system: System) -> None:
    dev = system.dev
    bad = dev.request_raw(dev.model_name, b"\xde\xad\xbe\xef")
    good = dev.ask_sentiment("What a fantastic movie, truly great")
    assert dev.wait_sentiment(good, timeout_s=ANSWER_TIMEOUT_S, alive=system.node.check_alive)[0] == "positive"
    line = wait_until(
        lambda: next(
            (ln for ln in system.node.log_path.read_text().splitlines() if f"request {bad}: failed" in ln), None
        ),
        timeout_s=30,
        what=f"the node's failure line for request {bad}",
    )
    assert "container rejected the input: cannot decode input as (string)" in line
    assert not dev.is_fulfilled(bad)
    # Failure is an answer: the node told the coordinator why, so the request can fail and be refunded.
    dep = dev.deployment
    assert dep is not None
    reports = wait_until(
        lambda: dep.coordinator.events.FailureReported().get_logs(
            from_block=dep.start_block, argument_filters={"requestId": bad}
        ),
        timeout_s=30,
        what=f"the failure report for request {bad}",
    )
    assert len(reports) == 1
    assert reports[0]["args"]["node"] == dev.node_account.address
    assert "cannot decode input as (string)" in reports[0]["args"]["reason"]
    assert dev.request_state(bad)["failures"] == 1
    system.node.check_alive()


def test_a_burst_is_delivered_exactly_once_each(system: System) -> None:
    dev = system.dev
    texts = ["I am so happy with my new phone", "The product broke after one day, awful"] * 5
    node_nonce_before = dev.w3.eth.get_transaction_count(dev.node_account.address)
    ids = [dev.ask_sentiment(t) for t in texts]
    labels = [dev.wait_sentiment(i, timeout_s=ANSWER_TIMEOUT_S, alive=system.node.check_alive)[0] for i in ids]
    assert labels == ["positive", "negative"] * 5
    assert all(len(fulfilled_events(system, i)) == 1 for i in ids)
    # At most one transaction per delivery (deliveries ready together share a deliverBatch): nothing sent twice.
    assert 1 <= dev.w3.eth.get_transaction_count(dev.node_account.address) - node_nonce_before <= len(ids)


def test_a_restarted_node_backfills_without_delivering_twice(system: System) -> None:
    dev = system.dev
    assert dev.stop(system.node) == 0  # SIGTERM is a clean shutdown
    nonce_before = dev.w3.eth.get_transaction_count(dev.node_account.address)
    missed = dev.ask_sentiment("I am delighted, this is excellent")  # made while the node is down
    system.node = dev.start_node(system.config)
    label, _ = dev.wait_sentiment(missed, timeout_s=ANSWER_TIMEOUT_S, alive=system.node.check_alive)
    assert label == "positive"
    # Backfill saw every earlier request again; only the missed one cost a transaction.
    assert dev.w3.eth.get_transaction_count(dev.node_account.address) == nonce_before + 1
    assert len(fulfilled_events(system, missed)) == 1


def test_requests_for_models_the_node_does_not_serve_are_left_alone(system: System) -> None:
    dev = system.dev
    other = dev.request_raw("generate/other-model@1", encode(["string"], ["hi"]))
    control = dev.ask_sentiment("Best day ever!")
    dev.wait_sentiment(control, timeout_s=ANSWER_TIMEOUT_S, alive=system.node.check_alive)
    assert not dev.is_fulfilled(other)
    assert model_id("generate/other-model@1") != model_id(dev.model_name)


def test_no_log_line_of_the_run_holds_the_key_or_the_password(system: System) -> None:
    """Runs last in this module: every log line of our processes (node, model container) is read. anvil's own log
    is not ours: its banner lists the keys of its public test mnemonic, which the devnet node key is one of."""
    dev = system.dev
    key = dev.private_key_hex().removeprefix("0x").lower()
    logs = sorted(p for p in dev.workdir.glob("*.log") if p.name != "anvil.log")
    assert system.node.log_path in logs
    node_lines = system.node.log_path.read_text().splitlines()
    assert len(node_lines) > 20  # DEBUG: plenty to leak from
    for path in logs:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            assert key not in line.lower(), f"{path.name}:{number} holds the node's private key"
            assert KEYSTORE_PASSWORD not in line, f"{path.name}:{number} holds the keystore password"
    entries = [json.loads(line) for line in node_lines if line.startswith("{")]
    assert len(entries) == len([line for line in node_lines if line.strip()])  # every line is a JSON object
    delivered = [e for e in entries if " delivered " in e["msg"]]
    assert delivered
    assert all(isinstance(e.get("request_id"), int) for e in delivered)
