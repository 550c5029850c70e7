"""A stop that waits on a long computation says at once what it waits for and for how long at most, then keeps
saying which tasks are left, instead of being silent; it ends cleanly once the computation does."""

from __future__ import annotations

import signal
import time

import pytest

from node.app import SHUTDOWN_REPORT_S
from node.devnet import wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults


def test_a_slow_stop_says_what_it_waits_for_and_for_how_long(rig: FaultRig) -> None:
    rig.configure()
    node = rig.start_node()
    rig.control("hold")  # the container takes the call and holds it: a long computation
    request_id = rig.dev.request_raw(MODEL, b"a long one")
    rig.wait_states("the job in the container", running=1)
    log = node.log_path
    before = len(log.read_text())

    stopped_at = time.monotonic()
    node.popen.send_signal(signal.SIGTERM)

    def said(words: str) -> float | None:
        return time.monotonic() - stopped_at if words in log.read_text()[before:] else None

    bound = wait_until(
        lambda: said(f"stopping: waiting up to 30 s for 1 running computation(s) (request {request_id});"),
        timeout_s=10,
        what="the stop to say what it waits for",
    )
    assert bound < 3, f"said only after {bound:.1f} s"
    assert "resumed at the next start" in log.read_text()[before:]
    left = wait_until(
        lambda: said("stopping: still waiting for"), timeout_s=SHUTDOWN_REPORT_S + 10, what="the report of what is left"
    )
    assert left < SHUTDOWN_REPORT_S + 3, f"reported only after {left:.1f} s"
    assert f"job-{request_id} (" in log.read_text()[before:]  # the task by name, and where it waits
    assert node.popen.poll() is None  # still waiting for the computation

    rig.control("release")
    assert node.popen.wait(timeout=30) == 0
    assert "stopped" in log.read_text()[before:]
    rig.dev.procs.remove(node)
