"""Where jobs leave the transaction layer, and what the layer counted about each on the way.

Guarantees:
- `Settler.settle` is the one way a job ends in the transaction layer (confirmed, failed or expired): the store
  records it (through the job state table), the settled count and the metrics move, one log line says it, and the
  node's `on_settled` hears of it. Whatever was counted about the job is forgotten then, never before.
- `JobHistory` keeps, per job, what decides its fate: when its sends first failed and how often (its back-off and
  retry window, which re-signing does not reset), how often it was refused (its batch size) and when first alone (its
  refusal window), and its on-chain reverts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from node.jobs.intervals import describe_job
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)


class JobHistory:
    """Per-job counts of failed sends, refusals and reverts, by request id, until the job settles."""

    def __init__(self) -> None:
        #: monotonic time of each job's first failed send (a failure report restarts it: its own window).
        self._first_failure: dict[int, float] = {}
        self._send_failures: dict[int, int] = {}
        #: Refusals of each job (in a batch or alone), and the monotonic time it was first refused alone.
        self._refusals: dict[int, int] = {}
        self._first_refusal: dict[int, float] = {}
        self._reverts: dict[int, int] = {}

    def first_failure(self, request_id: int, now: float, *, counts: bool) -> float:
        """When the job's sends first failed (`counts`: this failure is the job's own and may be the first)."""
        if counts:
            return self._first_failure.setdefault(request_id, now)
        return self._first_failure.get(request_id, now)

    def restart_window(self, request_id: int, now: float) -> None:
        """The job became a failure report: its retry window starts again."""
        self._first_failure[request_id] = now

    def failed_send(self, request_id: int, *, counts: bool) -> int:
        """Counts a failed send of the job (when it `counts`); returns its failed sends so far."""
        failures = self._send_failures[request_id] = self._send_failures.get(request_id, 0) + (1 if counts else 0)
        return failures

    def refused_in_batch(self, request_id: int) -> int:
        """Counts a refusal of a batch that carried the job (its next batches are smaller); returns its refusals."""
        count = self._refusals[request_id] = self._refusals.get(request_id, 0) + 1
        return count

    def refused_alone(self, request_id: int, now: float) -> tuple[int, float]:
        """Counts a refusal of the job sent alone; returns its refusals and when it was first refused alone."""
        count = self._refusals[request_id] = self._refusals.get(request_id, 0) + 1
        return count, self._first_refusal.setdefault(request_id, now)

    def refusals(self, request_id: int) -> int:
        return self._refusals.get(request_id, 0)

    def forget_refusals(self, request_id: int) -> None:
        """The job is a failure report now: its refusals were the delivery's."""
        self._refusals.pop(request_id, None)
        self._first_refusal.pop(request_id, None)

    def reverted(self, request_id: int) -> int:
        """Counts an on-chain revert of a transaction carrying the job; returns its reverts so far."""
        reverts = self._reverts[request_id] = self._reverts.get(request_id, 0) + 1
        return reverts

    def forget(self, request_id: int) -> None:
        for per_job in (self._first_failure, self._send_failures, self._refusals, self._first_refusal, self._reverts):
            per_job.pop(request_id, None)


class Settler:
    """Settles jobs: store, count, metrics, log, `on_settled`."""

    def __init__(
        self,
        store: JobStore,
        history: JobHistory,
        *,
        metrics: Metrics | None = None,
        on_settled: Callable[[Job], None] = lambda job: None,
    ) -> None:
        self._store = store
        self._history = history
        self._metrics = metrics
        self._on_settled = on_settled
        #: Jobs settled (confirmed, failed or expired at the send) since the start.
        self.settled = 0

    def report_instead(self, job: Job, why: str) -> bool:
        """`job`'s output cannot be delivered (`why`): a request's job becomes a failure report (`computed` with
        `failure`; True: the caller queues it); a subscription interval, which has no failure report, is settled as
        failed here (False: nothing to send)."""
        if job.subscription is not None:
            self.settle(job, JobState.FAILED, why)
            return False
        log.warning("%s: %s; reporting the failure instead", describe_job(job.request_id), why)
        self._store.update(job, JobState.COMPUTED, output=None, failure=why)
        return True

    def settle(
        self,
        job: Job,
        state: JobState,
        error: str | None,
        *,
        tx_hash: str | None = None,
        gas: int = 0,
        block: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        if job.state is JobState.ORPHANED:  # a reorg removed its request meanwhile: its new job (if any) is another
            self._history.forget(job.request_id)
            return
        self._store.update(job, state, error=error, tx_hash=tx_hash or job.tx_hash)
        self.settled += 1
        rid = job.request_id
        self._history.forget(rid)
        if self._metrics is not None and job.subscription is not None:
            outcome = {JobState.CONFIRMED: "served", JobState.EXPIRED: "skipped"}.get(state, "failed")
            self._metrics.count_interval(outcome)
        took_ms = (time.monotonic() - job.seen_at) * 1000
        if state is JobState.CONFIRMED and (detail or {}).get("committed"):  # a consensus request's first action
            log.info(
                "%s: committed %s's output in %.0f ms tx %s block %s gas %d; it is revealed once the commit phase is"
                " over",
                describe_job(rid),
                job.model_name,
                took_ms,
                tx_hash,
                block,
                gas,
            )
        elif state is JobState.CONFIRMED:
            if self._metrics is not None:
                self._metrics.observe_delivered(took_ms / 1000)
            detail = detail or {}
            fee = detail.get("fee")
            log.info(
                "%s: delivered %s in %.0f ms tx %s block %s gas %d callbackOk %s fee %s",
                describe_job(rid),
                job.model_name,
                took_ms,
                tx_hash,
                block,
                gas,
                detail.get("callbackOk", "?"),
                "?" if fee is None else f"{fee} ({'ETH' if int(job.request.token, 16) == 0 else job.request.token})",
            )
        elif state in (JobState.EXPIRED, JobState.SKIPPED):
            log.info("%s: skipped: %s", describe_job(rid), error)
        else:
            log.error("%s: %s after %.0f ms: %s", describe_job(rid), state, took_ms, error)
        self._on_settled(job)
