"""Off-chain jobs: submitted over `/v1`, computed by the same containers (and within the same concurrency limits) as
on-chain requests, answered over HTTP instead of on-chain.

Guarantees:
- A submission (one job or a batch) is validated whole before anything is kept: a batch with one bad item is
  refused with the item's index and nothing of it runs.
- A job belongs to the token that submitted it: another token gets 404 for it, as for an unknown id.
- Each job runs once, through its model's `ModelRoute` (node/dispatch/calls.py): the same concurrency limit, retry
  policy and container protocol as on-chain requests. A container that rejects the input fails the job with the
  container's reason; one that errors is retried (`max_attempts` of the model) and one that is down is waited for,
  for as long as the model's attempts could take (`ModelRoute.budget_s`), before the job fails.
- The newest `api.keep_jobs` finished jobs are kept in memory for `GET` (without their input), and at most
  `max_pending` wait or run at once (more: 503, retry later). Each job is also recorded in the job store when it is
  accepted and at each change of status (node/jobs/apijobs.py): an older one is read back from there, and one a
  stopped run (a restart, or another replica that was the leader) had not finished is run again (`resume`): its
  output was never recorded, so it is computed again, once.
- `stream: true` on a streaming container (generate) records each piece as it comes; `GET /v1/jobs/{id}/events`
  replays what a late subscriber missed and then follows the job live, as Server-Sent Events. A stream that failed
  after pieces went out is not retried (its followers would see two attempts spliced): the job fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from node.dispatch.pipeline import Route
from node.errors import ContainerError, ContainerRejected, InputRejected, Overloaded
from node.jobs.apijobs import ApiJobTable

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

TERMINAL = ("completed", "failed")


class JobInputError(InputRejected):
    """A submission that cannot be accepted; `str()` says what to fix."""


class JobsBusy(Overloaded):
    """Too many jobs waiting or running to take more now (503)."""


@dataclass(slots=True)
class ApiJob:
    """What every job the API accepts has: its id, the token that owns it, its model, status, error and timing. A
    kind of job adds its own fields after these three (the rest are keywords)."""

    id: str
    owner: str
    model: str
    status: str = field(default="queued", kw_only=True)
    error: str | None = field(default=None, kw_only=True)
    created_at: float = field(default_factory=time.time, kw_only=True)
    finished_at: float | None = field(default=None, kw_only=True)

    def _add_timing(self, out: dict[str, Any]) -> None:
        """Adds when the job finished and its latency to `view()`'s `out`, once it has."""
        if self.finished_at is not None:
            out["finished_at"] = self.finished_at
            out["latency_ms"] = round((self.finished_at - self.created_at) * 1000, 1)


@dataclass(slots=True)
class OffchainJob(ApiJob):
    """One job of the `/v1` API: its input, status, output or error, attempts and timing, kept in memory."""

    input: dict[str, Any]
    stream: bool
    output: Any = None
    attempts: int = 0
    started_at: float | None = None
    #: Pieces of a streamed output, in order.
    tokens: list[str] = field(default_factory=list)
    #: Set and replaced on every change, so followers wake up.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def touch(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def view(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "status": self.status,
            "created_at": self.created_at,
            "attempts": self.attempts,
        }
        if self.status == "completed":
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        self._add_timing(out)
        return out


class OffchainJobs:
    """The `/v1` off-chain jobs: run on the node's containers within each model's concurrency, kept in memory (the
    newest `keep`)."""

    def __init__(
        self,
        routes: dict[str, Route],
        *,
        keep: int,
        max_batch: int,
        max_pending: int = 1024,
        metrics: Metrics | None = None,
        table: ApiJobTable | None = None,
    ) -> None:
        """`routes`: each served model's, by name (the ones on-chain requests use: one concurrency limit per model);
        `keep`: finished jobs kept in memory for `GET`; `max_pending`: jobs waiting or running at most; `table`: the
        store's record of every job (`GET` of one no longer in memory, `resume` after a restart or a failover)."""
        self._routes = routes
        self._models = {name: route.model for name, route in routes.items()}
        self._keep = keep
        self.max_batch = max_batch
        self._max_pending = max_pending
        self._metrics = metrics
        self._jobs: OrderedDict[str, OffchainJob] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()
        self.submitted = 0
        self._table = table

    @property
    def served(self) -> list[str]:
        return sorted(name for name, m in self._models.items() if m.transport == "http")

    # -------------------------------------------------------------------------------------------- submit

    def _check(self, spec: Any, where: str) -> tuple[str, dict[str, Any], bool]:
        if not isinstance(spec, dict):
            raise JobInputError(f"{where}must be a JSON object with model and input")
        unknown = sorted(set(spec) - {"model", "input", "stream"})
        if unknown:
            raise JobInputError(f"{where}unknown field(s): {', '.join(unknown)}")
        model, input_, stream = spec.get("model"), spec.get("input"), spec.get("stream", False)
        if not isinstance(model, str):
            raise JobInputError(f"{where}model must be a string, one of: {', '.join(self.served)}")
        if model not in self._models:
            raise JobInputError(f"{where}unknown model {model!r}; this node serves: {', '.join(self.served)}")
        if self._models[model].transport != "http":
            raise JobInputError(f"{where}model {model!r} is served over MQTT; off-chain jobs need an HTTP container")
        if not isinstance(input_, dict):
            raise JobInputError(f"{where}input must be a JSON object of the model's input fields")
        if not isinstance(stream, bool):
            raise JobInputError(f"{where}stream must be true or false")
        return model, input_, stream

    def submit(self, owner: str, specs: list[Any], *, batch: bool) -> list[OffchainJob]:
        """Validates every spec, then starts them all; raises `JobInputError` (nothing started) otherwise."""
        if batch and not 1 <= len(specs) <= self.max_batch:
            raise JobInputError(f"jobs must hold 1 to {self.max_batch} jobs (api.max_batch), got {len(specs)}")
        checked = [self._check(s, f"jobs[{i}]: " if batch else "") for i, s in enumerate(specs)]
        if len(self._tasks) + len(checked) > self._max_pending:
            raise JobsBusy(f"{len(self._tasks)} off-chain jobs are waiting or running; retry shortly")
        jobs = [OffchainJob(uuid.uuid4().hex, owner, m, i, s) for m, i, s in checked]
        for job in jobs:
            self._start(job)
        self.submitted += len(jobs)
        self._forget_old()
        return jobs

    def _start(self, job: OffchainJob) -> None:
        self._jobs[job.id] = job
        self._save(job)
        task = asyncio.create_task(self._run(job), name=f"offchain-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _save(self, job: OffchainJob) -> None:
        if self._table is not None:
            record = {k: getattr(job, k) for k in _RECORDED}
            self._table.save("offchain", job.id, job.owner, job.model, job.status, record)

    def get(self, owner: str, job_id: str) -> OffchainJob | None:
        """The job, from memory or, once forgotten there (or accepted by a replica that stopped), from the store."""
        job = self._jobs.get(job_id)
        if job is not None:
            return job if job.owner == owner else None
        record = self._table.load("offchain", owner, job_id) if self._table is not None else None
        return None if record is None else _from_record(owner, record)

    def resume(self) -> int:
        """Runs again the jobs the store holds as unfinished (this node or another replica stopped while they ran:
        their output was never recorded); returns how many. A job whose model this node does not serve, or accepted
        more than `RESUME_WITHIN_S` ago, fails instead."""
        if self._table is None:
            return 0
        resumed = 0
        for job_id, owner, record in self._table.unfinished("offchain"):
            if job_id in self._jobs:
                continue
            job = _from_record(owner, record)
            job.status, job.error = "queued", None
            why = None
            if job.model not in self._models:
                why = f"model {job.model} is not served here"
            elif time.time() - job.created_at > RESUME_WITHIN_S:
                why = "the node that accepted it stopped, and it is too old to run again now: submit it again"
            if why is not None:
                job.status, job.error, job.finished_at = "failed", why, time.time()
                self._save(job)
                continue
            self._start(job)
            resumed += 1
        if resumed:
            log.info("off-chain jobs: %d unfinished job(s) of a previous run started again", resumed)
        return resumed

    def _forget_old(self) -> None:
        excess = len(self._jobs) - self._keep
        if excess <= 0:
            return
        for job_id in [j.id for j in self._jobs.values() if j.status in TERMINAL][:excess]:
            del self._jobs[job_id]

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ----------------------------------------------------------------------------------------------- run

    async def _run(self, job: OffchainJob) -> None:
        route = self._routes[job.model]
        try:
            if job.stream:
                text = await route.stream(
                    job.id, job.input, self._piece(job), on_attempt=self._attempt(job), on_wait=self._wait(job)
                )
                job.output = {"text": text}
            else:
                job.output = await route.call_offchain(
                    job.id, job.input, on_attempt=self._attempt(job), on_wait=self._wait(job)
                )
            job.status = "completed"
        except ContainerRejected as exc:
            job.status, job.error = "failed", str(exc)
        except ContainerError as exc:
            job.status, job.error = "failed", f"container failed {job.attempts} time(s); last: {exc}"
        except Exception as exc:  # a bug must fail one job, not the node
            log.exception("off-chain job %s: unexpected error", job.id)
            job.status, job.error = "failed", f"internal error: {type(exc).__name__}"
        finally:
            finished = job.status in TERMINAL  # else cancelled (node stopping): the store keeps it to resume
            if not finished:
                job.status, job.error = "failed", "the node stopped before the job finished"
            job.finished_at = time.time()
            job.input = {}  # a finished job keeps its view (and output), not its payload
            if finished:
                self._save(job)
            job.touch()
            if self._metrics is not None:
                self._metrics.observe_api_job("offchain", job.status)
            log.info("off-chain job %s (%s) %s in %.0f ms", job.id, job.model, job.status, job.view()["latency_ms"])
            self._forget_old()

    def _attempt(self, job: OffchainJob) -> Callable[[int], None]:
        """What a job records as an attempt enters the container (and when one turns out not to count)."""

        def record(attempts: int) -> None:
            job.status, job.started_at, job.attempts = "running", time.time(), attempts
            job.touch()
            self._save(job)

        return record

    @staticmethod
    def _wait(job: OffchainJob) -> Callable[[str | None], None]:
        """What a job records while its container is down (`waiting: container of … is down since …`, as its
        `error`), and once the container takes it (None)."""

        def record(reason: str | None) -> None:
            job.error = reason
            job.touch()

        return record

    @staticmethod
    def _piece(job: OffchainJob) -> Callable[[str], None]:
        """What a streaming job records of each piece: kept in order, followers woken."""

        def record(piece: str) -> None:
            job.tokens.append(piece)
            job.touch()

        return record


#: An unfinished job older than this (s) is not run again by `resume`, but ended: its client has long given up.
RESUME_WITHIN_S = 3600.0

#: What the store records of an off-chain job (JSON-ready).
_RECORDED = ("id", "model", "status", "error", "created_at", "finished_at", "started_at", "input", "stream", "output",
             "attempts")  # fmt: skip


def _from_record(owner: str, record: dict[str, Any]) -> OffchainJob:
    """An off-chain job as the store recorded it."""
    job = OffchainJob(str(record["id"]), owner, str(record["model"]), dict(record["input"]), bool(record["stream"]))
    for key in ("status", "error", "created_at", "finished_at", "started_at", "output", "attempts"):
        setattr(job, key, record[key])
    return job
