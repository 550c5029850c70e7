"""Turns requests into jobs and computes each one in its container, then hands it to the transaction manager.

Guarantees: at most `max_concurrency` jobs run per model at once, and at most twice that many have a task at all
(the rest wait in a queue: a burst of thousands of requests costs a queue entry each, not a task and its frames); a
retryable container failure (429, 5xx, timeout, crash, malformed answer) is retried up to `max_attempts`, each retry
after capped exponential backoff or the container's `Retry-After` if longer (never sooner than `MIN_RETRY_S`, never
past the request's deadline: a retry that could not start before it fails the job now); a rejected input (4xx) fails
at once; a call that loses its connection while other jobs were in the same container (one of them may have crashed
it) uses up no attempt, and that job's next attempts run alone in the container, so an input that crashes its
container fails by itself and the jobs beside it are not failed with it; a job that cannot be computed is reported
on-chain (`reportFailure`) so the request fails and is refunded instead of hanging, with a reason of at most
`MAX_FAILURE_CHARS` characters; a request past its deadline is dropped, not run (deadlines are judged by the `clock`
given, the chain's time in the node); the output is committed to the store before it is handed on, so it is never
computed twice (a restart resumes computed jobs at the send); each attempt is committed too, so a container that
crashes the node's jobs cannot make a restarted node retry forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import tenacity

from node.chain.contracts import model_id
from node.config import ModelConfig
from node.errors import ContainerError, ContainerLost, ContainerUnavailable
from node.jobs.store import Job, JobState, JobStore

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

BACKOFF_MAX_S = 10.0
#: Shortest wait before any retry, in seconds: nothing a container answers can make a job spin.
MIN_RETRY_S = 0.05
#: How often a job re-tries a container that refuses connections.
CONTAINER_WAIT_S = 1.0
#: Longest failure reason reported on-chain, in characters.
MAX_FAILURE_CHARS = 256


def backoff_s(attempt: int, base_s: float) -> float:
    """Seconds before retry number `attempt` (1-based): `base_s` doubling each time, capped at `BACKOFF_MAX_S`."""
    wait = tenacity.wait_exponential(multiplier=base_s, min=MIN_RETRY_S, max=BACKOFF_MAX_S)
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), None, (), {})
    state.attempt_number = max(1, attempt)
    return float(wait(state))


def retry_delay_s(exc: ContainerError, attempt: int, base_s: float) -> float:
    """Seconds before the retry after `exc`: the backoff for `attempt`, or the container's `Retry-After` if longer."""
    return max(backoff_s(attempt, base_s), exc.retry_after_s or 0.0)


class Dispatcher(Protocol):
    """What computes an input in a model container: `compute(job_id, input) -> output bytes`, raising
    `ContainerError`s."""

    async def compute(self, job_id: str, input_: bytes) -> bytes: ...


class Sender(Protocol):
    """Where computed jobs go to be delivered on-chain (the transaction manager's `enqueue`)."""

    def enqueue(self, job: Job) -> None: ...


@dataclass(eq=False)
class Call:
    """One call in a container; `shared` once another call was in the same container at any moment of it."""

    shared: bool = False


@dataclass
class Route:
    """Where a model's jobs go and how many may run at once."""

    model: ModelConfig
    dispatcher: Dispatcher
    #: `max_concurrency` permits: one per call in the container.
    slots: asyncio.Semaphore
    #: Jobs with a task (computing, waiting for a slot, or backing off before a retry).
    active: int = 0
    #: Jobs waiting for a task.
    waiting: collections.deque[Job] = field(default_factory=collections.deque)
    #: Held by the job that takes every slot (runs alone), so that two such jobs never split the slots between them.
    exclusive: asyncio.Lock = field(default_factory=asyncio.Lock)
    calls: set[Call] = field(default_factory=set)

    @property
    def max_active(self) -> int:
        return 2 * self.model.max_concurrency

    @contextlib.asynccontextmanager
    async def call(self, *, alone: bool = False) -> AsyncIterator[Call]:
        """A place in the container for one call; `alone`: every place, so no other call runs beside it."""
        held = 0
        async with self.exclusive if alone else contextlib.nullcontext():
            try:
                for _ in range(self.model.max_concurrency if alone else 1):
                    await self.slots.acquire()
                    held += 1
                call = Call(shared=bool(self.calls))
                for other in self.calls:
                    other.shared = True
                self.calls.add(call)
                try:
                    yield call
                finally:
                    self.calls.discard(call)
            finally:
                for _ in range(held):
                    self.slots.release()


class Scheduler:
    """Turns stored requests into container calls under each model's concurrency, retries them, and hands each computed
    job (or its failure) to the sender."""

    def __init__(
        self,
        store: JobStore,
        routes: dict[bytes, Route],
        sender: Sender,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: the time that requests' deadlines are judged by, in unix seconds (the node passes the chain's,
        `ChainClock.now`)."""
        self._store = store
        self._clock = clock
        self._routes = routes
        self._sender = sender
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: Container calls made, by model name (what a restart must not repeat for computed jobs).
        self.container_calls: dict[str, int] = {}
        #: Times each container call, when set.
        self.metrics = metrics

    def admit(self, jobs: list[Job]) -> None:
        """Starts work on jobs the listener has just committed (`JobStore.record_requests`): they are stored
        already, so a crash from here on only delays them (`resume` picks them up)."""
        for job in jobs:
            route = self._routes.get(job.request.model_id)
            if route is None:  # the listener records only served models; a config change between runs aside
                self._store.update(job, JobState.FAILED, error=f"model {job.model_name} is not served here")
                continue
            self._start(job, route)

    def resume(self) -> int:
        """Picks up the jobs a previous run left unfinished (from the store); returns how many."""
        jobs = self._store.resumable()
        for job in jobs:
            route = self._routes.get(model_id(job.model_name))
            if route is None:
                self._store.update(job, JobState.FAILED, error=f"model {job.model_name} is no longer served here")
                continue
            self._start(job, route)
        if jobs:
            log.info("resuming %d unfinished job(s) from the store", len(jobs))
        return len(jobs)

    def cancel(self, request_ids: list[int]) -> None:
        """Stops work on requests a reorg removed."""
        for rid in request_ids:
            task = self._tasks.pop(rid, None)
            if task is not None:
                task.cancel()
            log.info("request %d: removed by a reorg; its job is cancelled", rid)

    def _start(self, job: Job, route: Route) -> None:
        if job.state is JobState.COMPUTED:
            self._sender.enqueue(job)  # computed before a restart or a reorg: send, never recompute
            return
        if route.active >= route.max_active:
            route.waiting.append(job)
            return
        rid = job.request_id
        route.active += 1
        task = asyncio.create_task(self._run(job, route), name=f"job-{rid}")
        self._tasks[rid] = task
        task.add_done_callback(lambda t: self._done(rid, t, route))

    def _done(self, rid: int, task: asyncio.Task[None], route: Route) -> None:
        if self._tasks.get(rid) is task:
            del self._tasks[rid]
        route.active -= 1
        while route.waiting and route.active < route.max_active:
            job = route.waiting.popleft()
            if job.state in (JobState.SEEN, JobState.RUNNING, JobState.COMPUTED):  # not orphaned meanwhile
                self._start(job, route)

    @property
    def waiting(self) -> int:
        return sum(len(r.waiting) for r in self._routes.values())

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Waits for running computations to finish, then cancels what is left (the store resumes it)."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks.values()), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _compute(self, job: Job, route: Route) -> bytes:
        down_since: float | None = None
        #: Set once a call of this job lost its connection beside other calls: it runs alone from then on.
        suspect = False
        while True:
            async with route.call(alone=suspect) as call:  # `running` means in the container, not waiting for a slot
                self._store.update(job, JobState.RUNNING, attempts=job.attempts + 1)
                self.container_calls[route.model.name] = self.container_calls.get(route.model.name, 0) + 1
                called = time.perf_counter()
                try:
                    output = await route.dispatcher.compute(str(job.request_id), job.request.input)
                except ContainerUnavailable as exc:
                    # The container is down, not failing on this input: wait for it, within the request's deadline.
                    self._store.update(job, JobState.RUNNING, attempts=job.attempts - 1)
                    if self._clock() + CONTAINER_WAIT_S >= job.request.deadline:
                        raise ContainerError(f"{exc}; gave up before the request's deadline") from None
                    if down_since is None:
                        down_since = time.monotonic()
                        log.info("request %d: %s; waiting for it", job.request_id, exc)
                    error: ContainerError = exc
                    delay = CONTAINER_WAIT_S
                except ContainerLost as exc:
                    if self.metrics is not None:
                        self.metrics.observe_container(route.model.name, time.perf_counter() - called, ok=False)
                    if call.shared:  # any call beside it may have crashed the container: not this job's attempt
                        self._store.update(job, JobState.RUNNING, attempts=job.attempts - 1)
                    elif job.attempts >= route.model.max_attempts:  # it was alone: the crash is its own
                        raise
                    suspect = True
                    error, delay = exc, retry_delay_s(exc, job.attempts, route.model.retry_backoff_s)
                    log.warning(
                        "request %d: %s (%s); retrying alone in the container in %.2f s",
                        job.request_id,
                        "a call beside others lost its connection (not counted as an attempt)"
                        if call.shared
                        else f"attempt {job.attempts}/{route.model.max_attempts} lost its connection",
                        error,
                        delay,
                    )
                except ContainerError as exc:
                    if self.metrics is not None:
                        self.metrics.observe_container(route.model.name, time.perf_counter() - called, ok=False)
                    if not exc.retryable or job.attempts >= route.model.max_attempts:
                        raise
                    error, delay = exc, retry_delay_s(exc, job.attempts, route.model.retry_backoff_s)
                    log.warning(
                        "request %d: attempt %d/%d failed (%s); retrying in %.2f s",
                        job.request_id,
                        job.attempts,
                        route.model.max_attempts,
                        error,
                        delay,
                    )
                else:
                    if self.metrics is not None:
                        self.metrics.observe_container(route.model.name, time.perf_counter() - called, ok=True)
                    return output
            if self._clock() + delay >= job.request.deadline:
                raise ContainerError(
                    f"{error}; no time left for a retry in {delay:.1f} s before the request's deadline",
                    status=error.status,
                ) from None
            await asyncio.sleep(max(MIN_RETRY_S, delay))

    async def _run(self, job: Job, route: Route) -> None:
        rid = job.request_id
        if job.request.deadline < self._clock():
            self._store.update(job, JobState.EXPIRED, error="deadline passed before it could run")
            log.info("request %d: deadline passed before it could run; skipped", rid)
            return
        if job.attempts >= route.model.max_attempts:  # a previous run used them all (e.g. the node crashed)
            self._store.update(job, JobState.COMPUTED, failure=f"no answer after {job.attempts} attempt(s)")
            self._sender.enqueue(job)
            return
        started = time.perf_counter()
        try:
            output = await self._compute(job, route)
        except ContainerError as exc:
            log.error("request %d: %s failed after %d attempt(s): %s", rid, route.model.name, job.attempts, exc)
            # Failure is an answer: report it on-chain so the request fails and is refunded, not left hanging.
            self._store.update(job, JobState.COMPUTED, failure=_reason(exc))
        except Exception as exc:  # a bug must fail one job, not the node
            log.exception("request %d: unexpected error", rid)
            self._store.update(job, JobState.FAILED, error=repr(exc))
            return
        else:
            self._store.update(job, JobState.COMPUTED, output=output)
            log.debug("request %d: computed in %.0f ms", rid, (time.perf_counter() - started) * 1000)
        self._sender.enqueue(job)


def _reason(exc: BaseException) -> str:
    """A failure reason that fits in a report: one line of at most `MAX_FAILURE_CHARS` characters."""
    line = " ".join(str(exc).split())
    return line if len(line) <= MAX_FAILURE_CHARS else line[: MAX_FAILURE_CHARS - 1] + "…"
