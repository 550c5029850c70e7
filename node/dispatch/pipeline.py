"""A pipeline: one model served by a chain of containers, each stage's output the next stage's input (Infernet's
chained containers), as one job with one delivery.

A `PipelineRoute` has the calls of a `ModelRoute` (node/dispatch/calls.py), so every caller (on-chain jobs,
subscription intervals, delegated requests, off-chain jobs, the challenger) serves a pipeline as it serves a model.
Each stage is called through its own model's `ModelRoute`: that container's concurrency limit (shared with whoever
else calls it), timeout, retry policy and metrics.

Guarantees:
- on-chain: stage 1 gets the request's ABI input (`source` 0, hex); each later stage gets the previous stage's
  `raw_output` (the ABI-encoded output) the same way; the last stage's output is the job's output. Off-chain: each
  stage's output fields (`{"output": {...}}`) are the next stage's input fields; a stream streams the last stage;
- a stage's retryable failure (5xx, timeout, lost connection) is retried by that stage's policy alone: the stages
  before it are not called again. A refusal (4xx) or a stage out of attempts ends the call with the same error type,
  its message naming the stage (`stage 2/2 classify/x@1: ...`), which the caller reports as it would a model's;
- `on_stage(i, output)` hears each finished stage but the last before the next starts, so a caller that commits it
  (the scheduler, node/jobs/stages.py) resumes a restarted job after its finished stages (`done`), never computing
  one twice; `on_attempt` hears the attempts of the stage running (from 0 again at each stage);
- at most the pipeline's `max_concurrency` calls are in it at once; no stage starts after the call's deadline (each
  stage's policy judges the one deadline of the whole call); a pipeline never attests.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from containers.runtime.wire import Attestation
from node.config import ModelConfig
from node.dispatch.calls import ModelRoute
from node.dispatch.protocol import Output
from node.errors import ContainerError, ContainerRejected, ProofUnavailable

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class PipelineRoute:
    """Where a pipeline's calls go: its stages' routes, in order, under the pipeline's own `max_concurrency`."""

    #: The pipeline's `[[models]]` entry (its name, fee policy and `max_concurrency`).
    model: ModelConfig
    #: Each stage's route (those of the stages' own entries: shared with every other caller of those containers).
    stages: Sequence[ModelRoute]
    #: Counts each stage's outcome, when set (`infera_pipeline_stages`).
    metrics: Metrics | None = None
    _slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        if len(self.stages) < 2:  # the config refuses it; a route built by hand must not serve a one-stage chain
            raise ValueError(f"pipeline {self.model.name} needs 2 or more stages, got {len(self.stages)}")
        self._slots = asyncio.Semaphore(self.model.max_concurrency)

    @property
    def clock(self) -> Callable[[], float]:
        """The time deadlines are judged by, in unix seconds (the stages'; the node's is the chain's)."""
        return self.stages[0].clock

    @property
    def budget_s(self) -> float:
        """Seconds a call without a deadline of its own may take: as long as every stage's attempts could."""
        return sum(stage.budget_s for stage in self.stages)

    async def call(
        self,
        job_id: str,
        input_: bytes,
        *,
        deadline: float | None = None,
        attempts_so_far: int = 0,
        on_attempt: Callable[[int], None] | None = None,
        attestation: Attestation | None = None,
        consensus: bool = False,
        done: Sequence[bytes] = (),
        on_stage: Callable[[int, bytes], None] | None = None,
        on_wait: Callable[[str | None], None] | None = None,
    ) -> Output:
        """The ABI output of the last stage for an on-chain input (ABI bytes), with an empty proof. `done`: the
        outputs of the first stages, finished by an earlier run (the call resumes after them); `attempts_so_far`:
        the attempts the first stage still to run used already; `on_attempt`: told each change of the running
        stage's attempts; `on_stage(i, output)`: told each finished stage but the last (0-based `i`). Raises the
        `ContainerError` that ended the call, its message naming the stage; `ProofUnavailable` for an `attestation`
        (a pipeline never attests); `ValueError` when `done` covers every stage. `consensus`: the last stage answers
        in its model's consensus form (what the nodes of a consensus request compare). `on_wait`: told why the call
        waits while a stage's container is down, then None (as `ModelRoute.call`)."""
        if attestation is not None:
            raise ProofUnavailable(f"{self.model.name} is a pipeline: no one container attests its output")
        if len(done) >= len(self.stages):
            raise ValueError(f"{len(done)} finished stage(s) given for a pipeline of {len(self.stages)}")
        deadline = self.clock() + self.budget_s if deadline is None else deadline
        data = done[-1] if done else input_
        async with self._slots:
            for i in range(len(done), len(self.stages)):
                attempts = attempts_so_far if i == len(done) else 0

                def make(
                    route: ModelRoute,
                    stage_job: str,
                    data: bytes = data,
                    attempts: int = attempts,
                    last: bool = i == len(self.stages) - 1,
                ) -> Awaitable[Output]:
                    return route.call(
                        stage_job,
                        data,
                        deadline=deadline,
                        attempts_so_far=attempts,
                        on_attempt=on_attempt,
                        consensus=consensus and last,
                        on_wait=on_wait,
                    )

                data = (await self._stage(i, job_id, make)).output
                if on_stage is not None and i < len(self.stages) - 1:
                    on_stage(i, data)
        return Output(data)

    async def call_offchain(
        self,
        job_id: str,
        data: dict[str, Any],
        *,
        deadline: float | None = None,
        on_attempt: Callable[[int], None] | None = None,
        on_wait: Callable[[str | None], None] | None = None,
    ) -> Any:
        """The output of the last stage for an off-chain job (its input fields by name), each stage's output fields
        the next one's input. Raises as `call`, and `ContainerRejected` when a stage's output is not an object of
        named fields (it cannot be a stage's input)."""
        deadline = self.clock() + self.budget_s if deadline is None else deadline
        async with self._slots:
            return await self._offchain(job_id, data, len(self.stages), deadline, on_attempt, on_wait)

    async def stream(
        self,
        job_id: str,
        data: dict[str, Any],
        on_piece: Callable[[str], None],
        *,
        deadline: float | None = None,
        on_attempt: Callable[[int], None] | None = None,
        on_wait: Callable[[str | None], None] | None = None,
    ) -> str:
        """Streams the last stage's output for an off-chain job (`on_piece` told each piece), the stages before it
        run whole as in `call_offchain`; returns the pieces joined. Raises as `call_offchain`."""
        deadline = self.clock() + self.budget_s if deadline is None else deadline
        last = len(self.stages) - 1
        async with self._slots:
            fields = await self._offchain(job_id, data, last, deadline, on_attempt, on_wait)
            fields = self._fields(last, fields)

            def make(route: ModelRoute, stage_job: str) -> Awaitable[str]:
                return route.stream(
                    stage_job, fields, on_piece, deadline=deadline, on_attempt=on_attempt, on_wait=on_wait
                )

            return await self._stage(last, job_id, make)

    async def _offchain(
        self,
        job_id: str,
        data: dict[str, Any],
        stages: int,
        deadline: float,
        on_attempt: Callable[[int], None] | None,
        on_wait: Callable[[str | None], None] | None = None,
    ) -> Any:
        """The off-chain output of the first `stages` stages for `data`."""
        value: Any = data
        for i in range(stages):
            fields = data if i == 0 else self._fields(i, value)

            def make(route: ModelRoute, stage_job: str, fields: dict[str, Any] = fields) -> Awaitable[Any]:
                return route.call_offchain(stage_job, fields, deadline=deadline, on_attempt=on_attempt, on_wait=on_wait)

            value = await self._stage(i, job_id, make)
        return value

    def _fields(self, i: int, value: Any) -> dict[str, Any]:
        """Stage `i`'s (0-based, above 0) off-chain input: `value`, the previous stage's output, when it is an object
        of named fields."""
        if not isinstance(value, dict):
            raise ContainerRejected(
                f"stage {i}/{len(self.stages)} {self.stages[i - 1].model.name}: its off-chain output is not an object"
                f" of named fields, so it cannot be the input of {self.stages[i].model.name}"
            )
        return value

    async def _stage(self, i: int, job_id: str, make: Callable[[ModelRoute, str], Awaitable[T]]) -> T:
        """Runs stage `i` (0-based) through its route; its errors come out naming it. Logs and counts its outcome."""
        route = self.stages[i]
        where = f"stage {i + 1}/{len(self.stages)} {route.model.name}"
        started = time.perf_counter()
        try:
            # A job id of its own per stage: an MQTT worker caches answers by job id, and a stage may repeat a model.
            result = await make(route, f"{job_id}.stage{i + 1}")
        except ContainerError as exc:
            refused = isinstance(exc, ContainerRejected)
            self._count(route, "refused" if refused else "failed")
            log.info("job %s (%s): %s %s: %s", job_id, self.model.name, where, "refused" if refused else "failed", exc)
            raise type(exc)(f"{where}: {exc}", status=exc.status, retry_after_s=exc.retry_after_s) from exc
        self._count(route, "ok")
        log.debug(
            "job %s (%s): %s done in %.0f ms", job_id, self.model.name, where, (time.perf_counter() - started) * 1000
        )
        return result

    def _count(self, route: ModelRoute, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.count_stage(self.model.name, route.model.name, outcome)


#: What serves one model's calls: its container, or a pipeline of containers.
Route = ModelRoute | PipelineRoute
