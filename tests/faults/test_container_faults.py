"""A container that crashes, hangs, answers 500 or answers garbage: bounded retries, then an on-chain failure
report, while the other requests keep flowing."""

from __future__ import annotations

import pytest

from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults

BAD = {
    b"fail500-1": "model blew up",
    b"hang-1": "did not answer within 2",
    b"malformed-1": "raw_output is not a hex string",
    b"crash-1": "unreachable: Server disconnected",
}


def test_each_container_fault_ends_in_a_failure_report_and_good_jobs_flow(rig: FaultRig) -> None:
    dev = rig.dev
    rig.configure(timeout_s=2, model={"max_attempts": 3, "retry_backoff_s": 1.0})
    rig.start_node()
    good = [f"ok-{i:02d}".encode() for i in range(12)]
    misbehaving = [b for b in BAD if b != b"crash-1"]
    ids = dev.request_many(MODEL, [*misbehaving, *good[:6]])
    bad_ids = dict(zip(misbehaving, ids[: len(misbehaving)], strict=True))
    good_ids = ids[len(misbehaving) :]
    rig.wait_fulfilled(good_ids)
    rig.wait_states("the faulty jobs to fail", failed=len(misbehaving))

    # Each attempt at `crash-1` kills the container; restart it, as systemd or Docker would, each time.
    ids = dev.request_many(MODEL, [b"crash-1", *good[6:]])
    bad_ids[b"crash-1"] = ids[0]
    good_ids += ids[1:]
    for _ in range(3):
        container = rig.container
        assert container is not None
        wait_until(lambda: container.popen.poll() is not None, timeout_s=60, what="the container to crash")  # noqa: B023
        assert container.popen.returncode == 3
        dev.procs.remove(container)
        rig.start_container()
    rig.wait_fulfilled(good_ids)
    rig.wait_states("the faulty jobs to fail", failed=len(BAD), confirmed=len(good))

    coordinator = dev.deployment.coordinator  # type: ignore[union-attr]
    reports = {
        int(e["args"]["requestId"]): e["args"]["reason"]
        for e in coordinator.events.FailureReported().get_logs(from_block=0)
        if e["args"]["node"] == dev.node_account.address
    }
    for input_, rid in bad_ids.items():
        assert BAD[input_] in reports[rid], (input_, reports.get(rid))
        assert rig.fulfillments()[rid] == 0
    attempts = dict(rig.db("SELECT request_id, attempts FROM jobs WHERE state = 'failed'"))
    assert {int(k): v for k, v in attempts.items()} == dict.fromkeys(bad_ids.values(), 3)
    computed = rig.computed()
    assert computed[b"fail500-1"] == computed[b"malformed-1"] == 3  # bounded: max_attempts, not more
    assert all(computed[g] == 1 for g in good)
    fulfilled = rig.fulfillments()
    assert all(fulfilled[i] == 1 for i in good_ids)
