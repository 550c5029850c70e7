"""The hand-off from "seen on-chain" to "stored as a job": a node killed right after its listener committed the
cursor past a block range must still serve every request of that range.

The node is killed at the fault-injection point `cursor-saved` (`node.faultpoint`): the cursor of a backfilled range
with requests is committed and nothing downstream has run yet. Before the durable hand-off the range's requests sat
in an in-memory queue there and were lost for good (the restarted node resumed after them); now the job rows are
committed in the same transaction as the cursor. Over a WebSocket and with HTTP polling.
"""

from __future__ import annotations

import signal

import pytest

from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults

REQUESTS = 30


@pytest.mark.parametrize("transport", ["ws", "http"])
def test_a_kill_between_cursor_and_job_rows_loses_no_request(rig: FaultRig, transport: str) -> None:
    dev = rig.dev
    rig.configure(ws=transport == "ws")
    ids = dev.request_many(MODEL, [f"handoff-{i:02d}".encode() for i in range(REQUESTS)])  # made while it is down
    rig.start_node_to_die("cursor-saved")
    cursor = rig.db("SELECT next_block FROM cursors")
    stored = {int(r[0]) for r in rig.db("SELECT request_id FROM jobs")}
    assert cursor, "the node died before it saved any cursor"
    rig.start_node()
    try:
        rig.wait_fulfilled(ids, timeout_s=45)
    except TimeoutError:
        fulfilled = rig.fulfillments()
        lost = [i for i in ids if fulfilled[i] == 0]
        pytest.fail(
            f"{len(lost)} request(s) lost at the hand-off (cursor {cursor[0][0]} saved, {len(stored)} job rows at the"
            f" kill): {lost}"
        )
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)
    assert len(stored) == REQUESTS, "the job rows were not committed with the cursor"
    wait_until(lambda: rig.states()["confirmed"] == REQUESTS, timeout_s=30, what="every job confirmed")


def test_live_websocket_requests_survive_a_kill_at_the_cursor_commit(rig: FaultRig) -> None:
    """Live logs are committed as they arrive, without moving the cursor; the cursor moves only when the logs are
    read back (`log_reconcile_s`). The node is killed right after the first such commit that passes live requests
    (their container calls held, so none is answered yet): after the restart each is delivered exactly once."""
    dev = rig.dev
    rig.configure(log_reconcile_s=1.0)
    rig.env["INFERA_FAULT_POINT"] = "cursor-saved"
    node = rig.start_node()
    rig.env.pop("INFERA_FAULT_POINT")
    rig.control("hold")
    ids = dev.request_many(MODEL, [f"live-{i:02d}".encode() for i in range(REQUESTS)])
    wait_until(lambda: node.popen.poll() is not None, timeout_s=60, what="the node to die at cursor-saved")
    assert node.popen.returncode == -signal.SIGKILL
    dev.procs.remove(node)
    (cursor,) = rig.db("SELECT next_block FROM cursors")[0]
    stored = {int(r[0]) for r in rig.db("SELECT request_id FROM jobs")}
    passed = {i for i, block in request_blocks(rig).items() if block < cursor}
    assert passed, "the kill came before the cursor passed any request"
    assert passed <= stored, f"the cursor passed requests with no job row: {sorted(passed - stored)}"
    rig.control("release")
    rig.start_node()
    rig.wait_fulfilled(ids, timeout_s=60)
    fulfilled = rig.fulfillments()
    assert {i: fulfilled[i] for i in ids} == dict.fromkeys(ids, 1)


def request_blocks(rig: FaultRig) -> dict[int, int]:
    """Request id -> the block of its RequestCreated log, over the whole chain."""
    dev = rig.dev
    assert dev.abi is not None
    assert dev.deployment is not None
    logs = dev.w3.eth.get_logs(
        {  # type: ignore[typeddict-item]
            "address": dev.deployment.coordinator.address,
            "topics": [dev.abi.request_created_topic],
            "fromBlock": dev.deployment.start_block,
        }
    )
    return {dev.abi.decode_request_created(raw).request_id: int(raw["blockNumber"]) for raw in logs}
