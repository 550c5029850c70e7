"""Turns requests into jobs and drives each one: compute in its container, then deliver on-chain.

Guarantees: at most `max_concurrency` jobs run per model at once; a retryable container failure is retried with
capped exponential backoff up to `max_attempts`; a rejected input fails the job at once; a job that fails
in its container is reported on-chain (`reportFailure`) so the request can fail and be refunded; a request past its
deadline is dropped, not run; the output is computed
once and the delivery simulated before it is sent; one log line per job outcome with its request id and duration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from node.chain.contracts import InferenceRequest
from node.chain.tx import AlreadyFulfilled, Receipt
from node.config import ModelConfig
from node.errors import ContainerError, InferaError
from node.jobs.store import Job, JobState, JobStore

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 10.0


def backoff_s(attempt: int) -> float:
    """Capped exponential backoff before retry number `attempt` (1-based)."""
    return float(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)))


class Dispatcher(Protocol):
    async def compute(self, job_id: str, input_: bytes) -> bytes: ...


class Deliverer(Protocol):
    async def deliver(self, request_id: int, output: bytes) -> Receipt: ...

    async def report_failure(self, request_id: int, reason: str) -> Receipt: ...


@dataclass
class Route:
    """Where a model's jobs go and how many may run at once."""

    model: ModelConfig
    dispatcher: Dispatcher
    slots: asyncio.Semaphore


class Scheduler:
    def __init__(
        self, store: JobStore, routes: dict[bytes, Route], sender: Deliverer, *, delivery_retry_window_s: float
    ) -> None:
        self._store = store
        self._routes = routes
        self._sender = sender
        self._delivery_retry_window_s = delivery_retry_window_s
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, request: InferenceRequest) -> Job | None:
        """Accepts a request seen on-chain; returns its new job, or None if it is a duplicate or not ours."""
        route = self._routes.get(request.model_id)
        if route is None:
            log.debug("request %d: model 0x%s is not served here", request.request_id, request.model_id.hex())
            return None
        job = self._store.add(request, route.model.name)
        if job is None:
            return None
        task = asyncio.create_task(self._run(job, route), name=f"job-{request.request_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def run(self, requests: asyncio.Queue[InferenceRequest]) -> None:
        """Consumes requests from the listener until cancelled."""
        try:
            while True:
                self.submit(await requests.get())
        finally:
            await self.drain()

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Waits for running jobs to finish, then cancels what is left."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _compute(self, job: Job, route: Route) -> bytes:
        while True:
            job.attempts += 1
            try:
                async with route.slots:
                    return await route.dispatcher.compute(str(job.request_id), job.request.input)
            except ContainerError as exc:
                if not exc.retryable or job.attempts >= route.model.max_attempts:
                    raise
                delay = backoff_s(job.attempts)
                log.warning(
                    "request %d: attempt %d/%d failed (%s); retrying in %.2f s",
                    job.request_id,
                    job.attempts,
                    route.model.max_attempts,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _send(self, job: Job, send: Callable[[], Awaitable[Receipt]], what: str) -> Receipt:
        """Sends a transaction, retrying while the RPC is unreachable; what it carries is never recomputed."""
        deadline = time.monotonic() + self._delivery_retry_window_s
        attempt = 0
        while True:
            attempt += 1
            try:
                return await send()
            except InferaError as exc:
                if not exc.retryable or time.monotonic() + backoff_s(attempt) > deadline:
                    raise
                log.warning(
                    "request %d: %s attempt %d failed (%s); retrying in %.2f s",
                    job.request_id,
                    what,
                    attempt,
                    exc,
                    backoff_s(attempt),
                )
                await asyncio.sleep(backoff_s(attempt))

    async def _report_failure(self, job: Job, reason: str) -> None:
        """Failure is an answer: tells the coordinator, so the request can fail and be refunded, not hang."""
        try:
            receipt = await self._send(
                job, lambda: self._sender.report_failure(job.request_id, reason), "failure report"
            )
        except AlreadyFulfilled:
            log.info("request %d: no failure report needed (already settled)", job.request_id)
        except InferaError as exc:
            log.error("request %d: could not report the failure on-chain: %s", job.request_id, exc)
        else:
            log.info("request %d: failure reported on-chain tx %s", job.request_id, receipt.tx_hash)

    async def _run(self, job: Job, route: Route) -> None:
        started = time.perf_counter()
        rid = job.request_id
        if job.request.deadline < time.time():
            self._store.set_state(job, JobState.EXPIRED, error="deadline passed")
            log.info("request %d: deadline passed before it could run; skipped", rid)
            return
        try:
            self._store.set_state(job, JobState.RUNNING)
            if job.output is None:
                job.output = await self._compute(job, route)
                self._store.set_state(job, JobState.COMPUTED)
            computed_ms = (time.perf_counter() - started) * 1000
            self._store.set_state(job, JobState.SUBMITTED)
            output = job.output
            receipt = await self._send(job, lambda: self._sender.deliver(rid, output), "delivery")
        except AlreadyFulfilled:
            self._store.set_state(job, JobState.EXPIRED, error="already fulfilled")
            log.info("request %d: already fulfilled on-chain; skipped", rid)
        except InferaError as exc:
            self._store.set_state(job, JobState.FAILED, error=str(exc))
            log.error(
                "request %d: failed after %.0f ms (%d attempt(s)): %s",
                rid,
                (time.perf_counter() - started) * 1000,
                job.attempts,
                exc,
            )
            if isinstance(exc, ContainerError):  # the model could not answer: say so on-chain
                await asyncio.shield(self._report_failure(job, str(exc)))
        except Exception as exc:  # a bug must fail one job, not the node
            self._store.set_state(job, JobState.FAILED, error=repr(exc))
            log.exception("request %d: unexpected error", rid)
        else:
            job.tx_hash = receipt.tx_hash
            self._store.set_state(job, JobState.CONFIRMED)
            log.info(
                "request %d: delivered %s in %.0f ms (compute %.0f ms) tx %s block %d gas %d",
                rid,
                route.model.name,
                (time.perf_counter() - started) * 1000,
                computed_ms,
                receipt.tx_hash,
                receipt.block_number,
                receipt.gas_used,
            )
