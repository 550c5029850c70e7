"""The hand-off from "seen on-chain" to "stored as a job": a node killed right after its listener committed the
cursor past a block range must still serve every request of that range.

The node is killed at the fault-injection point `cursor-saved` (`node.faultpoint`): the cursor of a backfilled range
with requests is committed and nothing downstream has run yet. Before the durable hand-off the range's requests sat
in an in-memory queue there and were lost for good (the restarted node resumed after them); now the job rows are
committed in the same transaction as the cursor. Over a WebSocket and with HTTP polling.
"""

from __future__ import annotations

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
