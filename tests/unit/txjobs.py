"""A job as the transaction layer receives it (computed, stored), for the tx units' unit tests."""

from __future__ import annotations

from node.chain.contracts import InferenceRequest
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore


def computed_job(store: JobStore, rid: int, address: str, *, failure: str | None = None) -> Job:
    """Request `rid` (consumer and token `address`) stored and computed: output b"out", or `failure` to report."""
    request = InferenceRequest(
        rid, b"\x01" * 32, address, b"in", address, 1, 100_000, 1, 2**40, address, 1, "0xaa", "0x", 0
    )
    job = store.add(request, "m")
    assert job is not None
    store.update(job, JobState.COMPUTED, output=None if failure else b"out", failure=failure)
    return job
