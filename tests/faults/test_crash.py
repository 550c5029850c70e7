"""SIGKILL the node at the three points where a job can be lost or repeated, restart it, and check the chain.

1. after the request is stored, before the container answered (the container holds every call);
2. after the output is stored, before anything was sent (the node's RPC is cut);
3. after the delivery was sent, before its receipt (anvil stops mining).
Afterwards every request has exactly one delivery, no input was computed twice, no delivery reverted, and the
node's nonces run without a gap.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults

PER_PHASE = (70, 65, 65)


def test_sigkill_at_every_stage_loses_and_repeats_nothing(rig: FaultRig) -> None:
    dev = rig.dev
    rig.configure()
    node = dev.node_account.address
    inputs = [f"job-{i:03d}".encode() for i in range(sum(PER_PHASE))]
    phase_a = inputs[: PER_PHASE[0]]
    phase_b = inputs[PER_PHASE[0] : PER_PHASE[0] + PER_PHASE[1]]
    phase_c = inputs[PER_PHASE[0] + PER_PHASE[1] :]
    ids: list[int] = []

    # 1. Stored, not computed: the container holds every call, so the jobs sit in `running`.
    rig.start_node()
    rig.control("hold")
    ids += dev.request_many(MODEL, phase_a)
    rig.wait_states("phase 1 jobs stored", running=8, seen=len(phase_a) - 8)
    rig.kill_node()
    rig.control("release")
    assert rig.computed() == Counter(), "a held call must not count as computed"
    rig.start_node()
    rig.wait_fulfilled(ids)

    # 2. Computed, not sent: the node's RPC is cut once the container answered.
    rig.control("hold")
    ids += dev.request_many(MODEL, phase_b)
    rig.wait_states("phase 2 jobs stored", confirmed=len(phase_a), running=8)
    rig.proxy.cut()
    rig.control("release")
    rig.wait_states("phase 2 jobs computed", computed=len(phase_b))
    rig.kill_node()
    rig.proxy.restore()
    rig.start_node()
    rig.wait_fulfilled(ids)

    # 3. Sent, not mined: anvil stops mining, the deliveries wait in its mempool when the node dies.
    dev.w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    request_txs = dev.request_many(MODEL, phase_c, wait=False)
    dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    ids += [dev.request_id_of(dev.w3.eth.get_transaction_receipt(h)) for h in request_txs]
    rig.wait_states("phase 3 deliveries sent", submitted=len(phase_c))
    rig.kill_node()
    dev.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    dev.w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    rig.start_node()
    rig.wait_fulfilled(ids)
    rig.wait_states("every job confirmed", confirmed=len(inputs))

    # Exactly once on-chain, computed once, nothing reverted, no nonce gap.
    assert len(ids) == len(set(ids)) == 200
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    assert rig.computed() == Counter(dict.fromkeys(inputs, 1)), "an input was computed twice"
    txs = rig.node_txs(node)
    assert [tx["status"] for tx in txs] == [1] * len(txs), "a delivery transaction reverted"
    nonces = [tx["nonce"] for tx in txs]
    assert nonces == list(range(nonces[0], nonces[0] + len(nonces)))
    assert dev.w3.eth.get_transaction_count(node) == nonces[-1] + 1
    assert rig.restarts == 3
    print(f"crash test: 200 requests, 3 SIGKILLs, {len(txs)} delivery txs, 0 lost, 0 duplicated, 0 recomputed")


def test_sigterm_with_a_backlog_fails_nothing_and_resumes_everything(rig: FaultRig) -> None:
    """SIGTERM while 2 jobs compute and 18 wait for a place (max_concurrency 2): the node stops taking work, lets the
    two finish, exits 0, and the next start serves the other 18; no job is failed, none computed twice. Before, each
    finishing job started a waiting one that the stop then cut off (`Session is closed`) and marked failed for good."""
    dev = rig.dev
    rig.configure(model={"max_concurrency": 2})
    rig.start_node()
    rig.control("hold")
    inputs = [f"backlog-{i:02d}".encode() for i in range(20)]
    ids = dev.request_many(MODEL, inputs)
    rig.wait_states("2 running, the rest waiting", running=2, seen=18)
    assert rig.node is not None
    node = rig.node
    node.popen.send_signal(signal.SIGTERM)
    log_path = dev.workdir / "node.log"
    wait_until(lambda: "stopping: finishing in-flight jobs" in log_path.read_text(), timeout_s=30, what="the stop")
    rig.control("release")
    assert node.popen.wait(60) == 0, f"the node did not stop cleanly:\n{node.log_tail()}"
    dev.procs.remove(node)
    assert "failed" not in rig.states(), f"jobs failed by the stop: {rig.states()}"
    rig.start_node()
    rig.wait_fulfilled(ids)
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    assert rig.computed() == Counter(dict.fromkeys(inputs, 1)), "an input was computed twice"
