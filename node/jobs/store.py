"""The node's record of jobs, one per request, with its state.

States: seen → running → computed → submitted → confirmed | failed | expired.

Guarantees: a request id becomes at most one job (duplicates from backfill overlap are dropped); the output is
kept once computed, so a send retry resends and never recomputes. This version keeps jobs in memory: a restart
backfills from the configured start block and the chain's `AlreadyFulfilled` check stops a second delivery.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from node.chain.contracts import InferenceRequest


class JobState(enum.StrEnum):
    SEEN = "seen"
    RUNNING = "running"
    COMPUTED = "computed"
    SUBMITTED = "submitted"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    EXPIRED = "expired"


TERMINAL = frozenset({JobState.CONFIRMED, JobState.FAILED, JobState.EXPIRED})


@dataclass
class Job:
    request: InferenceRequest
    model_name: str
    state: JobState = JobState.SEEN
    attempts: int = 0
    output: bytes | None = None
    tx_hash: str | None = None
    error: str | None = None
    seen_at: float = field(default_factory=time.monotonic)

    @property
    def request_id(self) -> int:
        return self.request.request_id


class JobStore:
    """Jobs by request id."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}

    def add(self, request: InferenceRequest, model_name: str) -> Job | None:
        """Records a new job; returns None if this request id already has one."""
        if request.request_id in self._jobs:
            return None
        job = self._jobs[request.request_id] = Job(request=request, model_name=model_name)
        return job

    def get(self, request_id: int) -> Job | None:
        return self._jobs.get(request_id)

    def set_state(self, job: Job, state: JobState, *, error: str | None = None) -> None:
        if job.state in TERMINAL:
            raise ValueError(f"job {job.request_id} is already {job.state}; cannot move to {state}")
        job.state = state
        if error is not None:
            job.error = error
