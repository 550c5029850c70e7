"""A container that crashes, hangs, answers 500 or answers garbage: bounded retries, then an on-chain failure
report, while the other requests keep flowing; an input that crashes its container with other calls in it fails
alone, not the calls beside it."""

from __future__ import annotations

import pytest

from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults

BAD = {
    b"fail500-1": "model blew up",
    b"hang-1": "did not answer within 4",
    b"malformed-1": "raw_output is not a hex string",
    b"crash-1": "dropped the connection mid-call",
}


def test_each_container_fault_ends_in_a_failure_report_and_good_jobs_flow(rig: FaultRig) -> None:
    dev = rig.dev
    rig.configure(timeout_s=4, model={"max_attempts": 3, "retry_backoff_s": 1.0})
    rig.start_node()
    good = [f"ok-{i:02d}".encode() for i in range(12)]
    misbehaving = [b for b in BAD if b != b"crash-1"]
    ids = dev.request_many(MODEL, [*misbehaving, *good[:6]])
    bad_ids = dict(zip(misbehaving, ids[: len(misbehaving)], strict=True))
    good_ids = ids[len(misbehaving) :]
    rig.wait_fulfilled(good_ids)
    rig.wait_states("the faulty jobs to fail", failed=len(misbehaving))

    # `crash-1` kills the container while six good calls are in it with it (the container holds every call until all
    # seven are in). Its first call, beside others, is nobody's attempt; it then runs alone, so only it uses up
    # attempts: three more crashes. Restart the container after each crash, as systemd or Docker would.
    rig.control("hold")
    ids = dev.request_many(MODEL, [b"crash-1", *good[6:]])
    bad_ids[b"crash-1"] = ids[0]
    good_ids += ids[1:]
    rig.wait_states("seven calls in the container", running=7)
    rig.control("release")
    for _ in range(4):
        container = rig.container
        assert container is not None
        wait_until(lambda: container.popen.poll() is not None, timeout_s=60, what="the container to crash")  # noqa: B023
        assert container.popen.returncode == 3
        dev.procs.remove(container)
        rig.start_container()
    rig.wait_fulfilled(good_ids)
    rig.wait_states("the faulty jobs to fail", failed=len(BAD), confirmed=len(good))
    assert rig.container is not None
    assert rig.container.popen.poll() is None  # four crashes, no fifth

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
    # the good calls the crash cut off were retried alone without using up an attempt
    confirmed = dict(rig.db("SELECT request_id, attempts FROM jobs WHERE state = 'confirmed'"))
    assert {int(k): v for k, v in confirmed.items()} == dict.fromkeys(good_ids, 1)
    fulfilled = rig.fulfillments()
    assert all(fulfilled[i] == 1 for i in good_ids)
