"""Turns requests into jobs and computes each one in its container, then hands it to the transaction manager.

Guarantees: at most twice a model's `max_concurrency` jobs have a task at all (the rest wait in a queue: a burst of
thousands of requests costs a queue entry each, not a task and its frames); each job's container call goes through
the model's `ModelRoute` (node/dispatch/calls.py), which holds the concurrency limit and the one retry policy
(retryable failures retried with back-off up to `max_attempts`, a rejected input failed at once, a container that is
down waited for without using attempts, a call that lost its connection beside others run again alone, no retry past
the request's deadline); each attempt is committed to the store as it starts (and un-counted if it did not count),
so a container that crashes the node's jobs cannot make a restarted node retry forever; a job that cannot be
computed is reported on-chain (`reportFailure`) so the request fails and is refunded instead of hanging, with a
reason of at most `MAX_FAILURE_CHARS` characters; a request past its deadline is dropped, not run (deadlines are
judged by the `clock` given, the chain's time in the node); the output is committed to the store before it is handed
on, so it is never computed twice (a restart resumes computed jobs at the send). A subscription interval's job
(node/jobs/subscriptions.py) runs the same way, its deadline the interval's end; one that cannot be computed is
settled as failed here, with no transaction (an interval has no failure report). A pipeline's job
(node/dispatch/pipeline.py) is one job like any other: one row, one output, one delivery or failure report; each
finished stage is committed with its output (node/jobs/stages.py), so a restart resumes after it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from containers.runtime.wire import Attestation, attestation
from node import faultpoint
from node.chain import commitments
from node.chain.contracts import model_id
from node.dispatch.pipeline import PipelineRoute, Route
from node.dispatch.protocol import Output
from node.errors import ContainerError, ProofUnavailable
from node.jobs import fees, verification
from node.jobs.db import is_store_outage
from node.jobs.intervals import describe_job
from node.jobs.stages import StageOutputs
from node.jobs.store import Job, JobState, JobStore
from node.jobs.verification import Proofs

log = logging.getLogger(__name__)

#: While draining, how often the scheduler says which computations it still waits for, in seconds.
DRAIN_REPORT_S = 5.0

#: Longest failure reason reported on-chain, in characters.
MAX_FAILURE_CHARS = 256
#: How the `error` of a job that waits for its container begins (`waiting: container of … is down since …`): what
#: `infera jobs`, the job API and the status page show while it waits; cleared once the container takes the job.
WAITING = "waiting: "


def _unwait(job: Job) -> dict[str, None]:
    """The field that clears a job's waiting reason (when it has one) in the update that settles it."""
    return {"error": None} if job.error is not None and job.error.startswith(WAITING) else {}


class Sender(Protocol):
    """Where computed jobs go to be delivered on-chain (the transaction manager's `enqueue`)."""

    def enqueue(self, job: Job, upcoming: int = 0) -> None:
        """Queues a computed job; `upcoming`: how many more jobs are still being computed (a batching hint)."""

    def expect(self, upcoming: int) -> None:
        """The count of jobs still being computed, when it changed without a job handed on."""


@dataclass(eq=False)
class _Queue:
    """A model's jobs with a task, and those waiting for one."""

    route: Route
    #: Jobs with a task (computing, waiting for a place in the container, or backing off before a retry).
    active: int = 0
    waiting: collections.deque[Job] = field(default_factory=collections.deque)

    @property
    def max_active(self) -> int:
        return 2 * self.route.model.max_concurrency


class Scheduler:
    """Turns stored requests into container calls under each model's concurrency, retries them, and hands each computed
    job (or its failure) to the sender."""

    def __init__(
        self,
        store: JobStore,
        routes: dict[bytes, Route],
        sender: Sender,
        *,
        clock: Callable[[], float] = time.time,
        count_interval: Callable[[str], None] = lambda outcome: None,
        verifiers: Mapping[str, str] | None = None,
        node: str | None = None,
    ) -> None:
        """`routes`: each served model's (a container's or a pipeline's), by model id; `clock`: the time that
        requests' deadlines are judged by, in unix seconds (the node passes the chain's, `ChainClock.now`, as it does
        to the routes); `count_interval`: told "skipped" or "failed" for each subscription interval that ends here
        (the metrics); `verifiers`: the verifiers this node serves requests of (checksummed address -> kind,
        `[chain] verifiers`); `node`: the address that delivers verified requests (an attestation is bound to it)."""
        self._store = store
        self._count_interval = count_interval
        self._clock = clock
        self._verifiers = dict(verifiers or {})
        self._node = node
        self._proofs = Proofs(store)
        self._stages = StageOutputs(store)
        self._queues = {mid: _Queue(route) for mid, route in routes.items()}
        self._sender = sender
        self._tasks: dict[int, asyncio.Task[None]] = {}
        #: Set by `drain`: no new work starts (what is stored stays stored for the next start).
        self._closing = False
        #: Requests skipped by the fee policy since start, by (model name, `fees` kind).
        self.skipped: collections.Counter[tuple[str, str]] = collections.Counter()

    def admit(self, jobs: list[Job]) -> None:
        """Starts work on jobs the listener has just committed (`JobStore.record_requests`): they are stored
        already, so a crash from here on only delays them (`resume` picks them up)."""
        for job in jobs:
            queue = self._queues.get(job.request.model_id)
            if queue is None:  # the listener records only served models; a config change between runs aside
                self._store.update(job, JobState.FAILED, error=f"model {job.model_name} is not served here")
                continue
            self._start(job, queue)

    def resume(self) -> int:
        """Picks up the jobs a previous run left unfinished (from the store); returns how many."""
        jobs = self._store.resumable()
        for job in jobs:
            queue = self._queues.get(model_id(job.model_name))
            if queue is None:
                self._store.update(job, JobState.FAILED, error=f"model {job.model_name} is no longer served here")
                continue
            self._start(job, queue)
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

    def _start(self, job: Job, queue: _Queue) -> None:
        if self._closing:  # stopping: the job stays stored as it is, the next start resumes it
            return
        if job.state is JobState.COMPUTED:
            self._hand_on(job)  # computed before a restart or a reorg: send, never recompute
            return
        if job.state is JobState.SEEN and self._skip(job, queue.route):
            return
        if queue.active >= queue.max_active:
            queue.waiting.append(job)
            return
        rid = job.request_id
        queue.active += 1
        task = asyncio.create_task(self._run(job, queue.route), name=f"job-{rid}")
        self._tasks[rid] = task
        task.add_done_callback(lambda t: self._done(rid, t, queue))

    def _skip(self, job: Job, route: Route) -> bool:
        """Settles `job` as `skipped` (no call, no transaction) when its payment is outside the model's fee policy
        or its verifier is one this node cannot satisfy (`verification.judge`); logged once, as the job is settled
        once."""
        skip = fees.judge(
            route.model, job.request.token, job.request.fee_per_node_wei, job.request.callback_gas_limit
        ) or verification.judge(route.model, job.request.verifier, self._verifiers)
        if skip is None:
            return False
        self._store.update(job, JobState.SKIPPED, error=skip.reason)
        self.skipped[(route.model.name, skip.kind)] += 1
        log.info("request %d: skipped, %s", job.request_id, skip.reason)
        return True

    def _done(self, rid: int, task: asyncio.Task[None], queue: _Queue) -> None:
        if self._tasks.get(rid) is task:
            del self._tasks[rid]
        queue.active -= 1
        while queue.waiting and queue.active < queue.max_active and not self._closing:
            job = queue.waiting.popleft()
            if job.state in (JobState.SEEN, JobState.RUNNING, JobState.COMPUTED):  # not orphaned meanwhile
                self._start(job, queue)
        self._sender.expect(self._computing())

    def _computing(self, but: int | None = None) -> int:
        """Jobs computing (tasks not yet done) or waiting for a task, leaving out request `but`."""
        return sum(1 for rid, t in self._tasks.items() if rid != but and not t.done()) + self.waiting

    def _hand_on(self, job: Job) -> None:
        """Gives a computed job to the sender, with how many others are still being computed or wait to be."""
        self._sender.enqueue(job, upcoming=self._computing(but=job.request_id))

    @property
    def waiting(self) -> int:
        return sum(len(q.waiting) for q in self._queues.values())

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float = 30.0, report_s: float = DRAIN_REPORT_S) -> None:
        """Stops taking work (no waiting job starts, no admitted job runs: they stay stored and the next start
        resumes them), waits up to `timeout_s` seconds for the running computations, then cancels what is left; a
        cancelled call's attempt is given back (the node stopped it, not its input). Returns with no task left.

        Every `report_s` seconds it logs which requests it still waits for and how long it waits at most. A second
        SIGINT/SIGTERM while it waits stops the computations at once (said in the log): they are stored and resume at
        the next start, so nothing is lost, and an operator who presses Ctrl-C twice means "now" (as most daemons
        read it); a signal after that is answered with what the node still finishes (its transactions in flight)."""
        self._closing = True
        if not self._tasks:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        log.info(
            "stopping: waiting up to %.0f s for %d running computation(s) (%s); what is still running then is stopped"
            " and resumed at the next start (a second Ctrl-C or SIGTERM stops them now)",
            timeout_s,
            len(self._tasks),
            self._running_names(),
        )
        hurry = asyncio.Event()
        signalled = _on_stop_signals(loop, partial(self._hurry, hurry, loop, deadline))
        try:
            report_at = loop.time() + report_s
            while self._tasks and not hurry.is_set() and loop.time() < deadline:
                hurried = asyncio.ensure_future(hurry.wait())
                await asyncio.wait(
                    {*self._tasks.values(), hurried},
                    timeout=min(report_at, deadline) - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                hurried.cancel()
                await asyncio.sleep(0)  # a finished task's done-callback takes it out of `_tasks`
                now = loop.time()
                if self._tasks and not hurry.is_set() and report_at <= now < deadline:
                    report_at = now + report_s
                    log.info(
                        "stopping: %d computation(s) still running (%s); stopped in %.0f s of %.0f unless they finish",
                        len(self._tasks),
                        self._running_names(),
                        deadline - now,
                        timeout_s,
                    )
            pending = [t for t in self._tasks.values() if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            if signalled:  # from here on the node only finishes sending: say so to a further signal
                _on_stop_signals(
                    loop,
                    lambda: log.info("stopping: already stopping; the computations are stopped, finishing the sends"),
                )

    def _running_names(self) -> str:
        """The running computations as `request 12, subscription 3 interval 4, …` (at most 20 named)."""
        names = sorted(describe_job(rid) for rid in self._tasks)
        return ", ".join(names[:20]) + (f", … ({len(names) - 20} more)" if len(names) > 20 else "")

    def _hurry(self, hurry: asyncio.Event, loop: asyncio.AbstractEventLoop, deadline: float) -> None:
        """A second stop signal while draining: says so, and ends the wait (the running computations are cancelled)."""
        log.warning(
            "stopping: already stopping; stopping the %d running computation(s) now instead of in up to %.0f s more"
            " (they resume at the next start)",
            len(self._tasks),
            max(0.0, deadline - loop.time()),
        )
        hurry.set()

    async def _run(self, job: Job, route: Route) -> None:
        rid = job.request_id
        if job.request.deadline < self._clock():
            self._store.update(job, JobState.EXPIRED, error="deadline passed before it could run")
            log.info("%s: deadline passed before it could run; skipped", describe_job(rid))
            if job.subscription is not None:
                self._count_interval("skipped")
            return
        started = time.perf_counter()
        try:
            result = await self._compute(job, route)
        except asyncio.CancelledError:
            if self._closing and job.state is JobState.RUNNING and job.attempts > 0:
                self._store.update(job, JobState.RUNNING, attempts=job.attempts - 1)  # stopped by us: not counted
            raise
        except ContainerError as exc:
            log.error("%s: %s failed after %d attempt(s): %s", describe_job(rid), route.model.name, job.attempts, exc)
            if isinstance(exc, ProofUnavailable):
                # The operator's set-up (`attests = true`, a container without a key), not the request's: never
                # reported on-chain; the request ends by its deadline (the node's reclaim: the error callback).
                why = f"not served: {route.model.name} has attests = true but its container gives no attestation"
                self._store.update(job, JobState.FAILED, error=f"{why} ({exc})")
                return
            if job.subscription is not None:  # no failure report for an interval: settled here, no transaction
                self._store.update(job, JobState.FAILED, error=_reason(exc))
                self._count_interval("failed")
                return
            # Failure is an answer: report it on-chain so the request fails and is refunded, not left hanging.
            self._store.update(job, JobState.COMPUTED, failure=_reason(exc), **_unwait(job))
            self._forget_stages(job, route)
        except Exception as exc:  # a bug must fail one job, not the node
            if is_store_outage(exc):  # nothing wrong with the job: the next run (or leader) resumes it
                log.error(
                    "request %d: left for the next run: the store cannot be written (%s: %s)",
                    rid,
                    type(exc).__name__,
                    exc,
                )
                return
            log.exception("request %d: unexpected error", rid)
            self._store.update(job, JobState.FAILED, error=repr(exc))
            return
        else:
            if verification.is_verified(job.request.verifier):  # the proof in the same commit as the output
                proof = result.proof
                if self._consensus(job):  # its commitment and secret salt (node/chain/consensus.py)
                    assert self._node is not None  # checked by `_consensus`
                    proof = commitments.new_proof(
                        self._store.chain_id, self._store.coordinator, rid, self._node, result.output
                    )
                with self._store.transaction():
                    self._proofs.set(rid, proof)
                    self._store.update(job, JobState.COMPUTED, output=result.output, proof=proof, **_unwait(job))
                faultpoint.reached("proof-saved")
            else:
                self._store.update(job, JobState.COMPUTED, output=result.output, **_unwait(job))
            self._forget_stages(job, route)
            log.debug("request %d: computed in %.0f ms", rid, (time.perf_counter() - started) * 1000)
        self._hand_on(job)

    async def _compute(self, job: Job, route: Route) -> Output:
        """`job`'s output from its model's route: for a pipeline, resumed after the stages an earlier run finished,
        each finished stage committed as it ends."""

        # `running` means in the container, not waiting for a place; each attempt is committed as it starts.
        waiting: list[str | None] = [None]  # why this call waits now (None: it does not)

        def on_attempt(n: int) -> None:
            stale = {} if waiting[0] is not None else _unwait(job)  # a reason left by a run that stopped waiting
            self._store.update(job, JobState.RUNNING, attempts=n, **stale)

        def on_wait(reason: str | None) -> None:  # the container is down (or back): said in the job's row
            waiting[0] = reason
            self._store.update(job, JobState.RUNNING, error=reason)

        call = route.call
        if isinstance(route, PipelineRoute):  # resumes after the stages an earlier run finished, and records each
            stages = [stage.model.name for stage in route.stages]
            call = partial(
                route.call,
                done=self._stages.done(job, stages),
                on_stage=lambda i, output: self._stages.record(job, i, output, stages),
            )
        return await call(
            str(job.request_id),
            job.request.input,
            deadline=job.request.deadline,
            attempts_so_far=job.attempts,
            on_attempt=on_attempt,
            attestation=self._attestation(job),
            consensus=self._consensus(job),
            on_wait=on_wait,
        )

    def _consensus(self, job: Job) -> bool:
        """Whether `job` is a consensus request's (its output is asked for in the model's consensus form, and
        committed before it is revealed)."""
        if verification.kind_of(job.request.verifier, self._verifiers) != commitments.CONSENSUS:
            return False
        if self._node is None:
            raise RuntimeError("a consensus job needs the node's address (Scheduler(node=...))")
        return True

    def _forget_stages(self, job: Job, route: Route) -> None:
        """Drops a pipeline job's stage outputs once its own outcome is stored (nothing to resume any more)."""
        if isinstance(route, PipelineRoute):
            self._stages.clear(job)

    def _attestation(self, job: Job) -> Attestation | None:
        """The attestation context to send the container for an attestation-verified job, else None."""
        if verification.kind_of(job.request.verifier, self._verifiers) != verification.ATTESTATION:
            return None
        if self._node is None:
            raise RuntimeError("an attestation-verified job needs the node's address (Scheduler(node=...))")
        return attestation(self._store.chain_id, self._store.coordinator, job.request_id, self._node)


def _reason(exc: BaseException) -> str:
    """A failure reason that fits in a report: one line of at most `MAX_FAILURE_CHARS` characters."""
    line = " ".join(str(exc).split())
    return line if len(line) <= MAX_FAILURE_CHARS else line[: MAX_FAILURE_CHARS - 1] + "…"


def _on_stop_signals(loop: asyncio.AbstractEventLoop, handler: Callable[[], None]) -> bool:
    """Makes SIGINT and SIGTERM call `handler` (replacing the node's "stop" handler, whose work is done once it
    stops); False where the loop cannot take signal handlers (not the main thread, not Unix)."""
    import signal

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, handler)
    except (NotImplementedError, RuntimeError, ValueError):
        return False
    return True
