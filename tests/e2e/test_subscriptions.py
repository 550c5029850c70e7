"""Two node processes serve one subscription on a real anvil (tests/multinode.py): 5 intervals of 60 s, redundancy 2.

Each live interval is delivered exactly once by each node (IntervalFulfilled logs, one transaction per node per
interval, no reverted or wasted one), each node is paid the fee net of the protocol cut per interval (the manager's
`balanceOf`); one node is SIGKILLed while its interval-2 job is in the container and restarted in the same interval
(it serves interval 2 once, not twice, not never); the consumer cancels in interval 3, after which nothing is served
and the refund of interval 4 is credited to it. Time is driven through anvil's block timestamps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from node.chain.contracts import model_id
from node.chain.subscriptions import ManagerAbi, SubscriptionCancelled
from node.devnet.processes import ROOT
from node.jobs.intervals import Subscription
from tests.multinode import MODEL, MultiNode, RigNode

pytestmark = pytest.mark.e2e

PERIOD_S = 3600  # an hour of chain time: later blocks follow the wall clock, so each interval has room for its steps
INTERVALS = 5
REDUNDANCY = 2
FEE_WEI = 10**15
ETH = "0x0000000000000000000000000000000000000000"


def _interval_deliveries(rig: MultiNode, manager: Any, subscription_id: int) -> Counter[tuple[int, str]]:
    """IntervalFulfilled logs of the subscription: count by (interval, node address lower-case)."""
    abi = ManagerAbi(manager.abi)
    logs = rig.dev.w3.eth.get_logs(
        {  # type: ignore[typeddict-item]
            "address": manager.address,
            "topics": [abi.fulfilled_topic, "0x" + subscription_id.to_bytes(32, "big").hex()],
            "fromBlock": rig.dev.deployment.start_block,  # type: ignore[union-attr]
        }
    )
    return Counter(
        (int.from_bytes(bytes(x["topics"][2]), "big"), "0x" + bytes(x["topics"][3])[12:].hex()) for x in logs
    )


def _interval_rows(node: RigNode, manager: str, subscription_id: int) -> dict[int, str]:
    """The node's job rows of the subscription: interval -> state."""
    rows = node.db(
        "SELECT interval, state FROM jobs WHERE coordinator=? AND request_id=?", manager.lower(), str(subscription_id)
    )
    return {int(i): str(s) for i, s in rows}


def _cli(*args: str) -> str:
    """`infera <args>` as an operator runs it; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", *args], capture_output=True, text=True, check=False, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _metric(node: RigNode, name: str, labels: str) -> float:
    for line in node.api("/metrics").decode().splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[-1])
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


@pytest.mark.parametrize("ws", [False, True], ids=["http-polling", "websocket"])
def test_two_nodes_serve_every_live_interval_once_through_a_kill_and_a_cancel(
    contracts_built: None, tmp_path: Path, ws: bool
) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        assert dep.subscriptions is not None
        manager = dep.subscriptions
        a, b = rig.add_node("a", ws=ws, poll_interval_s=0.2), rig.add_node("b", ws=ws, poll_interval_s=0.2)
        rig.start(a)
        rig.start(b)
        consumer = rig.deploy("TestSubscriber", manager.address)

        def earned(node: RigNode) -> int:
            return int(manager.functions.balanceOf(ETH, node.address).call())

        paid = {n.name: earned(n) for n in (a, b)}  # before the subscription: its first interval is served at once
        receipt = rig.transact(
            consumer.functions.subscribe(model_id(MODEL), REDUNDANCY, PERIOD_S, INTERVALS, FEE_WEI),
            value=FEE_WEI * REDUNDANCY * INTERVALS,
        )
        abi = ManagerAbi(manager.abi)
        sub = next(
            e
            for e in (abi.decode(x) for x in receipt["logs"] if x["address"] == manager.address)
            if isinstance(e, Subscription)
        )
        start = sub.start
        bps = manager.functions.getSubscription(sub.subscription_id).call()[3]
        net = FEE_WEI - FEE_WEI * bps // 10_000
        assert net > 0

        def paid_once_more() -> None:
            """Each node earned exactly one more interval's fee (net of the protocol cut) since the last check."""
            assert {n.name: earned(n) - paid[n.name] for n in (a, b)} == {"a": net, "b": net}
            paid.update({n.name: earned(n) for n in (a, b)})

        def delivered(interval: int, node: RigNode) -> int:
            return _interval_deliveries(rig, manager, sub.subscription_id)[(interval, node.address.lower())]

        def wait_served(interval: int, *nodes: RigNode) -> None:
            rig.wait(
                lambda: all(delivered(interval, n) >= 1 for n in nodes),
                f"interval {interval} delivered by {[n.name for n in nodes]}",
                timeout_s=60,
            )

        # Intervals 0 and 1: both nodes, each once, each paid once.
        for interval in (0, 1):
            if interval:
                rig.advance_to(start + interval * PERIOD_S + 1)
            wait_served(interval, a, b)
            paid_once_more()

        # Interval 2: node a is killed while its job is in the container, and restarted within the interval.
        rig.hold()
        rig.advance_to(start + 2 * PERIOD_S + 1)
        rig.wait(
            lambda: (
                _interval_rows(a, manager.address, sub.subscription_id).get(2) == "running"
                and _interval_rows(b, manager.address, sub.subscription_id).get(2) == "running"
            ),
            "both nodes computing interval 2",
        )
        rig.kill(a)
        rig.release()
        wait_served(2, b)
        assert delivered(2, a) == 0  # a was killed before its output existed
        rig.start(a)
        wait_served(2, a)
        paid_once_more()

        # Interval 3: served, then cancelled by the consumer: interval 4's escrow goes back to it.
        rig.advance_to(start + 3 * PERIOD_S + 1)
        wait_served(3, a, b)
        paid_once_more()
        refunded_before = int(manager.functions.balanceOf(ETH, consumer.address).call())
        cancel = rig.transact(consumer.functions.cancel(sub.subscription_id))
        cancelled = [abi.decode(x) for x in cancel["logs"] if x["address"] == manager.address]
        assert len(cancelled) == 1
        assert isinstance(cancelled[0], SubscriptionCancelled)
        assert cancelled[0].last_interval == 3
        refund = FEE_WEI * REDUNDANCY * (INTERVALS - 4)
        assert cancelled[0].refund_wei == refund
        assert int(manager.functions.balanceOf(ETH, consumer.address).call()) - refunded_before == refund

        # Interval 4: after both nodes stored the cancellation and saw two heads in interval 4, none of them made a
        # job of it, sent anything or delivered.
        sent = {n.name: rig.tx_count(n) for n in (a, b)}
        rig.wait(
            lambda: all(
                n.db("SELECT active_intervals FROM subscriptions WHERE subscription_id=?", str(sub.subscription_id))
                == [(4,)]
                for n in (a, b)
            ),
            "both nodes to store the cancellation",
        )
        rig.advance_to(start + 4 * PERIOD_S + 1)
        last = rig.mine()
        rig.wait(lambda: all((rig.head_of(n) or 0) >= last for n in (a, b)), "both nodes to see interval 4")
        deliveries = _interval_deliveries(rig, manager, sub.subscription_id)
        for node in (a, b):
            me = node.address.lower()
            assert [deliveries[(i, me)] for i in range(INTERVALS)] == [1, 1, 1, 1, 0], node.name
            assert rig.tx_count(node) == sent[node.name] == 4, node.name  # one transaction per live interval
            rows = _interval_rows(node, manager.address, sub.subscription_id)
            assert rows == {i: "confirmed" for i in range(4)}, (node.name, rows)
            assert earned(node) == 4 * net
        assert int(consumer.functions.results(4).call()) == 0
        assert [int(consumer.functions.results(i).call()) for i in range(4)] == [2, 2, 2, 2]
        # b ran throughout: its metrics count the four intervals served and none skipped or failed.
        assert _metric(b, "infera_subscription_intervals_total", 'outcome="served"') == 4
        assert _metric(b, "infera_subscription_intervals_total", 'outcome="failed"') == 0
        status = json.loads(b.api("/status"))
        assert any(j.get("subscription_id") == str(sub.subscription_id) for j in status["latest_jobs"]), status


def test_three_nodes_fill_redundancy_two_and_a_node_back_from_downtime_serves_only_the_current_interval(
    contracts_built: None, tmp_path: Path
) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        manager = dep.subscriptions
        assert manager is not None
        nodes = [rig.add_node(name, poll_interval_s=0.2) for name in ("a", "b", "c")]
        a, b, c = nodes
        for node in nodes:
            rig.start(node)
        consumer = rig.deploy("TestSubscriber", manager.address)
        receipt = rig.transact(
            consumer.functions.subscribe(model_id(MODEL), REDUNDANCY, PERIOD_S, 4, FEE_WEI), value=FEE_WEI * 2 * 4
        )
        abi = ManagerAbi(manager.abi)
        (sub,) = [abi.decode(x) for x in receipt["logs"] if x["address"] == manager.address]
        assert isinstance(sub, Subscription)
        sid = sub.subscription_id

        def settled(node: RigNode, interval: int) -> bool:
            return _interval_rows(node, manager.address, sid).get(interval) in ("confirmed", "expired")

        # Interval 0: three nodes race for two slots; two deliver, the third settles without delivering.
        rig.wait(lambda: all(settled(n, 0) for n in nodes), "every node to settle interval 0")
        deliveries = _interval_deliveries(rig, manager, sid)
        assert sum(deliveries[(0, n.address.lower())] for n in nodes) == REDUNDANCY
        assert all(deliveries[(0, n.address.lower())] <= 1 for n in nodes)
        for node in nodes:  # a delivery counts as confirmed, the node that came third as expired
            state = _interval_rows(node, manager.address, sid)[0]
            assert state == ("confirmed" if deliveries[(0, node.address.lower())] else "expired"), node.name

        # c is down through interval 1 and comes back in interval 2 after a and b filled it.
        rig.kill(c)
        sent_c = rig.tx_count(c)
        for interval in (1, 2):
            rig.advance_to(sub.start + interval * PERIOD_S + 1)
            rig.wait(
                lambda i=interval: all(_interval_deliveries(rig, manager, sid)[(i, n.address.lower())] for n in (a, b)),
                f"a and b to deliver interval {interval}",
            )
        rig.start(c)
        rig.wait(lambda: settled(c, 2), "c to settle interval 2")
        rows = _interval_rows(c, manager.address, sid)
        assert 1 not in rows  # over while c was down: skipped, never made a job
        assert rows[2] == "expired"  # full when c came back: settled by the simulation
        assert rig.tx_count(c) == sent_c  # without a transaction
        assert _metric(c, "infera_subscription_intervals_total", 'outcome="skipped"') == 2
        deliveries = _interval_deliveries(rig, manager, sid)
        assert [sum(deliveries[(i, n.address.lower())] for n in nodes) for i in range(3)] == [2, 2, 2]


def test_a_node_killed_between_storing_and_broadcasting_its_interval_delivery_sends_that_transaction_once(
    contracts_built: None, tmp_path: Path
) -> None:
    with MultiNode.open(tmp_path) as rig:
        dep = rig.dev.deployment
        assert dep is not None
        manager = dep.subscriptions
        assert manager is not None
        a = rig.add_node("a", poll_interval_s=0.2)
        consumer = rig.deploy("TestSubscriber", manager.address)
        receipt = rig.transact(
            consumer.functions.subscribe(model_id(MODEL), 1, PERIOD_S, 2, FEE_WEI), value=FEE_WEI * 2
        )
        abi = ManagerAbi(manager.abi)
        (sub,) = [abi.decode(x) for x in receipt["logs"] if x["address"] == manager.address]
        assert isinstance(sub, Subscription)
        rig.start_to_die(a, "tx-stored")  # interval 0's deliverInterval is signed and committed, never broadcast
        assert rig.tx_count(a) == 0
        assert _interval_rows(a, manager.address, sub.subscription_id) == {0: "submitted"}
        rig.start(a)
        rig.wait(
            lambda: _interval_rows(a, manager.address, sub.subscription_id) == {0: "confirmed"}, "interval 0 confirmed"
        )
        assert _interval_deliveries(rig, manager, sub.subscription_id) == Counter({(0, a.address.lower()): 1})
        assert rig.tx_count(a) == 1  # the stored transaction, rebroadcast at its nonce: no second one
        # The operator sees it as the subscription's interval, in the list and on its own.
        listed = json.loads(_cli("jobs", "list", "--config", str(a.config), "--json"))
        assert [(j["request_id"], j["subscription_id"], j["interval"], j["state"]) for j in listed] == [
            (None, sub.subscription_id, 0, "confirmed")
        ]
        shown = json.loads(
            _cli("jobs", "show", str(sub.subscription_id), "--interval", "0", "--config", str(a.config), "--json")
        )
        assert (shown["subscription_id"], shown["interval"], shown["state"]) == (sub.subscription_id, 0, "confirmed")
