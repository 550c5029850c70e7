"""Pipelines (`node.dispatch.pipeline.PipelineRoute`) over scripted stage containers and the policy's clock (no real
sleeping): each output is the next input, a retry re-runs only its own stage, a refusal names its stage, off-chain
fields flow from stage to stage. Then the scheduler on a real SQLite store: a job stopped between stages resumes
after the finished one, computing no stage twice, with one output handed on."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncGenerator
from typing import Any

import pytest
from eth_utils.address import to_checksum_address

from containers.runtime.wire import Attestation
from node.chain.contracts import InferenceRequest, model_id
from node.config import ModelConfig
from node.dispatch.calls import ModelRoute
from node.dispatch.pipeline import PipelineRoute
from node.dispatch.protocol import Output
from node.errors import ContainerError, ContainerRejected, ProofUnavailable
from node.jobs.scheduler import Scheduler
from node.jobs.stages import StageOutputs
from node.jobs.store import Job, JobState, JobStore
from node.observability.metrics import Metrics
from tests.unit.test_dispatch_retry import Clock, failed

PIPE = "moderate/a-b@1"
ETH = to_checksum_address("0x" + "00" * 20)
ADDR = to_checksum_address("0x" + "11" * 20)


class Stage:
    """A stage's container: answers each call with its transform of the input (bytes, or off-chain fields), or
    raises the next scripted error first; records what it was given. `hold`: calls wait for it to be set."""

    def __init__(self, tag: bytes, *errors: BaseException, hold: asyncio.Event | None = None) -> None:
        self.tag = tag
        self.errors = list(errors)
        self.inputs: list[tuple[str, bytes]] = []
        self.fields: list[dict[str, Any]] = []
        self.hold = hold
        self.entered = asyncio.Event()

    async def compute(
        self, job_id: str, input_: bytes, attestation: Attestation | None = None, consensus: bool = False
    ) -> Output:
        self.inputs.append((job_id, input_))
        self.entered.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.errors:
            raise self.errors.pop(0)
        return Output(input_ + self.tag)

    async def compute_offchain(self, job_id: str, data: dict[str, Any]) -> Any:
        self.fields.append(data)
        if self.errors:
            raise self.errors.pop(0)
        return {"text": data.get("text", data.get("prompt", "")) + self.tag.decode()}

    async def stream(self, job_id: str, data: dict[str, Any]) -> AsyncGenerator[str, None]:
        self.fields.append(data)
        for piece in (data["text"], self.tag.decode()):
            yield piece

    async def healthy(self) -> bool:
        return True


def stage_route(name: str, dispatcher: Any, clock: Clock, **model: Any) -> ModelRoute:
    config = ModelConfig(name=name, url="http://127.0.0.1:1", **{"max_attempts": 3, "retry_backoff_s": 0.5, **model})
    return ModelRoute(config, dispatcher, clock=clock, sleep=clock.sleep)


def pipeline(clock: Clock, *stages: Stage, metrics: Metrics | None = None) -> PipelineRoute:
    names = [f"stage/{s.tag.decode()}@1" for s in stages]
    model = ModelConfig(name=PIPE, pipeline=names)
    return PipelineRoute(model, [stage_route(n, s, clock) for n, s in zip(names, stages, strict=True)], metrics)


# ---------------------------------------------------------------------------------------------------- the route


async def test_each_output_is_the_next_input_and_the_last_is_the_jobs() -> None:
    clock = Clock()
    a, b = Stage(b"A"), Stage(b"B")
    told: list[int] = []
    heard: list[tuple[int, bytes]] = []
    out = await pipeline(clock, a, b).call(
        "7", b"in", deadline=clock() + 600, on_attempt=told.append, on_stage=lambda i, o: heard.append((i, o))
    )
    assert out == Output(b"inAB")  # no proof: a pipeline never attests
    assert a.inputs == [("7.stage1", b"in")]  # each stage a job id of its own (MQTT workers cache by job id)
    assert b.inputs == [("7.stage2", b"inA")]
    assert heard == [(0, b"inA")]  # every finished stage but the last, before the next starts
    assert told == [1, 1]  # the running stage's attempts, from 0 again at each stage


async def test_a_retryable_failure_retries_only_its_own_stage() -> None:
    clock = Clock()
    a, b = Stage(b"A"), Stage(b"B", failed(503), failed(500))
    told: list[int] = []
    out = await pipeline(clock, a, b).call("7", b"in", deadline=clock() + 600, on_attempt=told.append)
    assert out.output == b"inAB"
    assert len(a.inputs) == 1  # the finished stage is not called again
    assert [i for _, i in b.inputs] == [b"inA"] * 3
    assert told == [1, 1, 2, 3]
    assert len(clock.waits) == 2  # stage 2's own back-off


async def test_a_refusal_ends_the_call_at_once_naming_the_stage() -> None:
    clock = Clock()
    a, b = Stage(b"A"), Stage(b"B", ContainerRejected("container rejected the input: text is empty", status=400))
    metrics = Metrics()
    with pytest.raises(ContainerRejected) as caught:
        await pipeline(clock, a, b, metrics=metrics).call("7", b"in", deadline=clock() + 600)
    assert str(caught.value) == "stage 2/2 stage/B@1: container rejected the input: text is empty"
    assert caught.value.status == 400
    assert len(b.inputs) == 1
    assert clock.waits == []

    def counted(stage: str, outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "infera_pipeline_stages_total", {"pipeline": PIPE, "stage": stage, "outcome": outcome}
        )

    assert counted("stage/A@1", "ok") == 1
    assert counted("stage/B@1", "refused") == 1


async def test_a_stage_out_of_attempts_fails_naming_the_stage_with_its_last_error() -> None:
    clock = Clock()
    a, b = Stage(b"A", failed(502), failed(502), failed(502)), Stage(b"B")
    with pytest.raises(ContainerError) as caught:
        await pipeline(clock, a, b).call("7", b"in", deadline=clock() + 600)
    assert not isinstance(caught.value, ContainerRejected)
    assert str(caught.value) == "stage 1/2 stage/A@1: container failed: HTTP 502"
    assert b.inputs == []


async def test_a_resumed_call_starts_after_its_finished_stages_with_their_attempts() -> None:
    clock = Clock()
    a, b, c = Stage(b"A"), Stage(b"B", failed(500)), Stage(b"C")
    told: list[int] = []
    out = await pipeline(clock, a, b, c).call(
        "7", b"in", deadline=clock() + 600, done=[b"inA"], attempts_so_far=1, on_attempt=told.append
    )
    assert out.output == b"inABC"
    assert a.inputs == []
    assert told == [2, 3, 1]  # stage 2 had used 1 attempt before the restart; stage 3 starts from 0
    with pytest.raises(ContainerError, match="no answer after 3 attempt"):  # its attempts were all used before
        await pipeline(clock, Stage(b"A"), Stage(b"B")).call("8", b"in", done=[b"x"], attempts_so_far=3)


async def test_a_pipeline_refuses_to_attest_and_a_one_stage_chain() -> None:
    clock = Clock()
    a, b = Stage(b"A"), Stage(b"B")
    attestation: Attestation = {"chain_id": 1, "coordinator": ADDR, "request_id": "7", "node": ADDR}
    with pytest.raises(ProofUnavailable):
        await pipeline(clock, a, b).call("7", b"in", attestation=attestation)
    assert a.inputs == []
    with pytest.raises(ValueError, match="2 or more stages"):
        PipelineRoute(ModelConfig(name=PIPE, pipeline=["a", "b"]), [stage_route("a", a, clock)])


async def test_off_chain_output_fields_are_the_next_input_and_a_stream_streams_the_last_stage() -> None:
    clock = Clock()
    a, b = Stage(b"A"), Stage(b"B")
    route = pipeline(clock, a, b)
    assert await route.call_offchain("j", {"prompt": "hi"}) == {"text": "hiAB"}
    assert b.fields == [{"text": "hiA"}]
    pieces: list[str] = []
    assert await route.stream("j", {"prompt": "hi"}, pieces.append) == "hiAB"
    assert pieces == ["hiA", "B"]


async def test_an_off_chain_output_that_is_not_named_fields_is_refused_naming_the_stage() -> None:
    clock = Clock()

    class Bare(Stage):
        async def compute_offchain(self, job_id: str, data: dict[str, Any]) -> Any:
            return "just text"

    with pytest.raises(ContainerRejected, match=r"^stage 1/2 stage/A@1: its off-chain output is not an object"):
        await pipeline(clock, Bare(b"A"), Stage(b"B")).call_offchain("j", {"prompt": "hi"})


# ------------------------------------------------------------------------------------- scheduler, store, restart


class Sender:
    """The transaction manager's side: collects the computed jobs handed on."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.handed = asyncio.Event()

    def enqueue(self, job: Job, upcoming: int = 0) -> None:
        self.jobs.append(job)
        self.handed.set()

    def expect(self, upcoming: int) -> None:
        pass


def request(rid: int, input_: bytes) -> InferenceRequest:
    return InferenceRequest(rid, model_id(PIPE), ADDR, input_, ETH, 10**15, 100_000, 1, 2**40, ETH, 10, "0xaa", "0x", 0)


def open_store(store_at: str) -> JobStore:
    return JobStore(store_at, chain_id=31337, coordinator=ADDR)


async def test_a_job_stopped_between_stages_resumes_after_the_finished_one(store_at: str) -> None:
    clock = Clock()
    store = open_store(store_at)
    a, b = Stage(b"A"), Stage(b"B", hold=asyncio.Event())  # stage 2 never answers in this run
    sender = Sender()
    scheduler = Scheduler(store, {model_id(PIPE): pipeline(clock, a, b)}, sender)
    (job,) = store.record_requests([(request(1, b"in"), PIPE)])
    scheduler.admit([job])
    await asyncio.wait_for(b.entered.wait(), timeout=10)
    # Stage 1's output is committed before stage 2 starts, with the attempts counting stage 2's.
    assert StageOutputs(store).done(job, ["stage/A@1", "stage/B@1"]) == [b"inA"]
    await scheduler.drain(timeout_s=0)  # the node stops: stage 2's call is cancelled, its attempt given back
    assert (job.state, job.attempts) == (JobState.RUNNING, 0)
    store.close()

    store = open_store(store_at)
    a2, b2 = Stage(b"A"), Stage(b"B")
    sender = Sender()
    scheduler = Scheduler(store, {model_id(PIPE): pipeline(clock, a2, b2)}, sender)
    assert scheduler.resume() == 1
    await asyncio.wait_for(sender.handed.wait(), timeout=10)
    assert a2.inputs == []  # the finished stage is not computed again
    assert [i for _, i in b2.inputs] == [b"inA"]
    (done,) = sender.jobs
    assert (done.request_id, done.state, done.output) == (1, JobState.COMPUTED, b"inAB")
    assert StageOutputs(store).done(done, ["stage/A@1", "stage/B@1"]) == []  # nothing left to resume
    store.close()


async def test_kept_stage_outputs_of_another_input_or_pipeline_are_not_reused(store_at: str) -> None:
    store = open_store(store_at)
    stages = StageOutputs(store)
    (job,) = store.record_requests([(request(2, b"in"), PIPE)])
    store.update(job, JobState.RUNNING, attempts=1)
    stages.record(job, 0, b"inA", ["a", "b"])
    assert job.attempts == 0  # the next stage starts from 0, in the same commit
    assert stages.done(job, ["a", "b"]) == [b"inA"]
    assert stages.done(job, ["x", "b"]) == []  # the pipeline was reconfigured between runs
    other = dataclasses.replace(job, request=dataclasses.replace(job.request, input=b"other"))
    assert stages.done(other, ["a", "b"]) == []  # a reorg put another input under this request id
    stages.record(job, 1, b"inAB", ["a", "b"])
    assert stages.done(job, ["a", "b"]) == [b"inA"]  # never every stage: the last one's output is the job's
    store.close()


async def test_a_refused_stage_is_reported_once_naming_the_stage(store_at: str) -> None:
    clock = Clock()
    store = open_store(store_at)
    refusal = ContainerRejected("container rejected the input: text must be a non-empty string", status=400)
    a, b = Stage(b"A"), Stage(b"B", refusal)
    sender = Sender()
    scheduler = Scheduler(store, {model_id(PIPE): pipeline(clock, a, b)}, sender)
    (job,) = store.record_requests([(request(3, b"in"), PIPE)])
    scheduler.admit([job])
    await asyncio.wait_for(sender.handed.wait(), timeout=10)
    (reported,) = sender.jobs
    assert reported.state is JobState.COMPUTED
    assert reported.output is None
    assert reported.failure == ("stage 2/2 stage/B@1: container rejected the input: text must be a non-empty string")
    assert len(b.inputs) == 1
    store.close()


async def test_kept_stage_outputs_go_with_their_job_when_the_store_prunes_it(store_at: str) -> None:
    store = open_store(store_at)
    stages = StageOutputs(store)
    (job,) = store.record_requests([(dataclasses.replace(request(4, b"in"), deadline=1), PIPE)])
    (kept,) = store.record_requests([(request(5, b"in"), PIPE)])
    for j in (job, kept):
        store.update(j, JobState.RUNNING, attempts=1)
        stages.record(j, 0, b"inA", ["a", "b"])
    store.update(job, JobState.FAILED, error="interval failed")  # terminal, its deadline long past
    assert store.prune(retention_s=-60) == 1
    assert store.execute("SELECT request_id FROM pipeline_stages") == [("5",)]
    store.close()
