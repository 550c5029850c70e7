"""A job whose container is down says so in its row (what `infera jobs`, `/status` and the job API read) while it
waits, with the container's URL and since when; the reason goes once the container is back and the job runs."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from typing import Any

import pytest

from node.devnet import ROOT, wait_until
from tests.faults.conftest import MODEL, FaultRig

pytestmark = pytest.mark.faults


def row(rig: FaultRig, request_id: int) -> tuple[str, int, str | None] | None:
    found = rig.db("SELECT state, attempts, error FROM jobs WHERE request_id = ?", str(request_id))
    return found[0] if found else None


def latest_job(rig: FaultRig, request_id: int) -> dict[str, Any] | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{rig.dev.api_port}/status", timeout=5) as resp:
        status = json.loads(resp.read())
    return next((j for j in status["latest_jobs"] if str(j.get("request_id")) == str(request_id)), None)


def test_a_job_waiting_for_a_stopped_container_says_so_until_it_runs(rig: FaultRig) -> None:
    rig.configure()
    rig.start_node()
    assert rig.container is not None
    stopped_at = time.time()
    rig.dev.stop(rig.container)  # the real container process, stopped
    request_id = rig.dev.request_raw(MODEL, b"wait for me")

    expected = re.compile(
        rf"waiting: container of {re.escape(MODEL)} at {re.escape(rig.container_url)} is down since "
        r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"
    )

    def waiting() -> tuple[str, int, str | None] | None:
        found = row(rig, request_id)
        return found if found is not None and found[2] is not None and expected.fullmatch(found[2]) else None

    assert rig.node is not None
    state, attempts, error = wait_until(
        waiting, timeout_s=60, what="the job's waiting reason", alive=rig.node.check_alive
    )
    assert (state, attempts) == ("running", 0)  # waiting uses no attempt
    match = expected.fullmatch(str(error))
    assert match is not None
    since = datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()
    assert stopped_at - 1 <= since <= time.time()

    # What the operator reads: `infera jobs list` and the status page show the same reason.
    listed = subprocess.run(
        [sys.executable, "-m", "node.cli", "jobs", "list", "--config", str(rig.config), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=60,
        check=True,
    )
    (job,) = [j for j in json.loads(listed.stdout) if j["request_id"] == request_id]
    assert job["error"] == error
    shown = latest_job(rig, request_id)
    assert shown is not None
    assert shown["error"] == error

    rig.start_container()  # back: the job runs, is delivered, and its row no longer says it waits
    rig.wait_fulfilled([request_id])
    wait_until(
        lambda: (found := row(rig, request_id)) is not None and found[0] in ("submitted", "confirmed"),
        timeout_s=30,
        what="the job to be sent",
    )
    state, attempts, error = row(rig, request_id)  # type: ignore[misc]
    assert attempts == 1
    assert error is None or not error.startswith("waiting"), error
