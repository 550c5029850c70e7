"""The one container-call path (`node.dispatch.calls.ModelRoute`) and its retry policy, over a scripted dispatcher and
a clock that the policy's waits advance (no real sleeping): which errors retry, the attempts budget and what is
committed of it, Retry-After, the deadline cut-off, a container that is down, a lost connection beside other calls,
streams."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from containers.runtime.wire import Attestation
from node.config import ModelConfig
from node.dispatch.calls import BACKOFF_MAX_S, CONTAINER_WAIT_S, MIN_RETRY_S, ModelRoute, retry_delay_s
from node.dispatch.protocol import Output
from node.errors import ContainerError, ContainerLost, ContainerRejected, ContainerUnavailable

Answer = bytes | BaseException


async def next_turn() -> None:
    """Yields to the event loop for exactly one turn (no time passes, nothing is waited for)."""
    turn = asyncio.Event()
    asyncio.get_running_loop().call_soon(turn.set)
    await turn.wait()


class Clock:
    """The time the route judges deadlines by; its `sleep` records each wait and moves the time on by it."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds
        await next_turn()  # a real sleep suspends: other calls run meanwhile, as they would


class Scripted:
    """A dispatcher that answers each call with the next item of its script (an output or an error to raise)."""

    def __init__(self, *script: Answer, pieces: list[list[Answer]] | None = None) -> None:
        self.script = list(script)
        self.pieces = list(pieces or [])
        self.calls = 0
        self.inside = 0
        self.most_inside = 0

    async def compute(
        self, job_id: str, input_: bytes, attestation: Attestation | None = None, consensus: bool = False
    ) -> Output:
        self.calls += 1
        answer = self.script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return Output(answer)

    async def compute_offchain(self, job_id: str, data: dict[str, Any]) -> Any:
        return {"echo": (await self.compute(job_id, b"")).output.decode()}

    async def stream(self, job_id: str, data: dict[str, Any]) -> AsyncGenerator[str, None]:
        self.calls += 1
        for piece in self.pieces.pop(0):
            if isinstance(piece, BaseException):
                raise piece
            yield piece.decode()

    async def healthy(self) -> bool:
        return True


def route(dispatcher: Any, clock: Clock, **model: Any) -> ModelRoute:
    config = ModelConfig(name="m", url="http://127.0.0.1:1", **{"max_attempts": 3, "retry_backoff_s": 0.5, **model})
    return ModelRoute(config, dispatcher, clock=clock, sleep=clock.sleep)


async def call(r: ModelRoute, clock: Clock, *, deadline_s: float = 600, so_far: int = 0) -> tuple[bytes, list[int]]:
    """Calls once; returns the output and every attempts count `on_attempt` was told."""
    told: list[int] = []
    out = await r.call("7", b"in", deadline=clock() + deadline_s, attempts_so_far=so_far, on_attempt=told.append)
    return out.output, told


def failed(status: int, retry_after_s: float | None = None) -> ContainerError:
    return ContainerError(f"container failed: HTTP {status}", status=status, retry_after_s=retry_after_s)


# ---------------------------------------------------------------------------------------------- which errors retry


async def test_a_success_is_one_attempt_committed_before_the_call() -> None:
    clock = Clock()
    out, told = await call(route(Scripted(b"out"), clock), clock)
    assert (out, told, clock.waits) == (b"out", [1], [])


@pytest.mark.parametrize(
    "error",
    [failed(500), failed(503), ContainerError("did not answer within 30 s"), ContainerError("not JSON")],
    ids=["500", "503", "timeout", "malformed"],
)
async def test_retryable_errors_are_retried_until_the_attempts_are_used(error: ContainerError) -> None:
    clock = Clock()
    d = Scripted(error, error, error)
    with pytest.raises(ContainerError) as caught:
        await call(route(d, clock), clock)
    assert caught.value is error  # the last answer, as it was
    assert d.calls == 3
    assert len(clock.waits) == 2


async def test_a_retry_that_succeeds_returns_the_output_with_every_attempt_committed() -> None:
    clock = Clock()
    out, told = await call(route(Scripted(failed(500), failed(502), b"out"), clock), clock)
    assert (out, told) == (b"out", [1, 2, 3])


async def test_a_rejected_input_fails_at_once() -> None:
    clock = Clock()
    d = Scripted(ContainerRejected("container rejected the input: bad", status=400), b"never")
    with pytest.raises(ContainerRejected):
        await call(route(d, clock), clock)
    assert (d.calls, clock.waits) == (1, [])


async def test_an_error_that_is_not_the_containers_is_not_retried() -> None:
    clock = Clock()
    d = Scripted(KeyError("a bug"), b"never")
    with pytest.raises(KeyError):
        await call(route(d, clock), clock)
    assert d.calls == 1


# ------------------------------------------------------------------------------------------------- the waits


async def test_waits_double_from_the_base_with_a_little_jitter_and_are_capped() -> None:
    clock = Clock()
    d = Scripted(*[failed(500)] * 6)
    with pytest.raises(ContainerError):
        await call(route(d, clock, max_attempts=6, retry_backoff_s=2.0), clock)
    for wait, base in zip(clock.waits, [2.0, 4.0, 8.0, BACKOFF_MAX_S, BACKOFF_MAX_S], strict=True):
        assert base <= wait <= min(base + 0.5, BACKOFF_MAX_S)


async def test_retry_after_is_honoured_when_longer_than_the_back_off() -> None:
    clock = Clock()
    out, _ = await call(route(Scripted(failed(429, 7.0), failed(503, 0.1), b"out"), clock), clock)
    assert out == b"out"
    assert clock.waits[0] == 7.0  # the container asked for longer than 0.5 s
    assert 1.0 <= clock.waits[1] <= 1.125  # it asked for less than the back-off: the back-off


def test_no_wait_is_shorter_than_the_floor() -> None:
    assert retry_delay_s(failed(500), 1, 0.0001) == MIN_RETRY_S
    assert retry_delay_s(failed(429, 0.0), 1, 0.0001) == MIN_RETRY_S
    assert retry_delay_s(ContainerUnavailable("down"), 5, 0.5) == CONTAINER_WAIT_S


# --------------------------------------------------------------------------------------------- the deadline


async def test_no_retry_starts_that_could_not_start_before_the_deadline() -> None:
    clock = Clock()
    d = Scripted(failed(429, 30.0), b"never")
    with pytest.raises(ContainerError, match=r"no time left for a retry in 30\.0 s") as caught:
        await call(route(d, clock), clock, deadline_s=20)
    assert caught.value.status == 429
    assert (d.calls, clock.waits) == (1, [])


async def test_a_call_without_a_deadline_gets_as_long_as_its_attempts_could_take() -> None:
    clock = Clock()
    r = route(Scripted(*[ContainerUnavailable("down")] * 1000), clock, timeout_s=5.0)
    with pytest.raises(ContainerError, match="gave up before the request's deadline"):
        await r.call_offchain("job", {"data": "x"})
    assert sum(clock.waits) <= r.budget_s == 3 * (5.0 + BACKOFF_MAX_S)


# ------------------------------------------------------------------------------------ a container that is down


async def test_a_container_that_is_down_is_waited_for_without_using_attempts() -> None:
    clock = Clock()
    down = [ContainerUnavailable("container is down")] * 5
    out, told = await call(route(Scripted(*down, b"out"), clock, max_attempts=1), clock)
    assert out == b"out"
    assert told == [1, 0] * 5 + [1]  # each refused connection un-counted, committed both ways
    assert clock.waits == [CONTAINER_WAIT_S] * 5


async def test_waiting_for_a_container_stops_at_the_deadline_with_no_attempt_used() -> None:
    clock = Clock()
    with pytest.raises(ContainerError, match="gave up before the request's deadline") as caught:
        await call(route(Scripted(*[ContainerUnavailable("down")] * 100), clock), clock, deadline_s=10.5)
    assert type(caught.value) is ContainerError
    assert clock.waits == [CONTAINER_WAIT_S] * 10


async def test_a_call_waiting_for_its_container_says_why_until_the_container_takes_it() -> None:
    clock = Clock()
    r = route(Scripted(*[ContainerUnavailable("down")] * 3, b"out", ContainerUnavailable("down"), b"again"), clock)
    said: list[str | None] = []
    out = await r.call("7", b"in", deadline=clock() + 600, on_wait=said.append)
    assert out.output == b"out"
    assert len(said) == 2, said  # once as it starts waiting (not at every refused retry), once as it ends
    assert re.fullmatch(
        r"waiting: container of m at http://127\.0\.0\.1:1 is down since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(said[0])
    )
    assert said[1] is None
    assert r.down_since is None  # it answered
    said.clear()  # the off-chain path says it the same way
    assert await r.call_offchain("job", {"data": "x"}, on_wait=said.append) == {"echo": "again"}
    assert len(said) == 2
    assert str(said[0]).startswith("waiting: container of m at http://127.0.0.1:1 is down since ")
    assert said[1] is None


async def test_a_call_that_gives_up_waiting_never_hears_the_wait_is_over() -> None:
    clock = Clock()
    said: list[str | None] = []
    r = route(Scripted(*[ContainerUnavailable("down")] * 100), clock)
    with pytest.raises(ContainerError, match="gave up"):
        await r.call("7", b"in", deadline=clock() + 5.5, on_wait=said.append)
    assert len(said) == 1  # the caller settles the job with its failure
    assert r.down_since is not None  # still down: the next call's reason keeps the first refusal's time


# ----------------------------------------------------------------------------------------- attempts across runs


async def test_attempts_a_previous_run_used_count() -> None:
    clock = Clock()
    d = Scripted(failed(500), b"never")
    with pytest.raises(ContainerError, match="HTTP 500"):
        await call(route(d, clock), clock, so_far=2)
    assert d.calls == 1


async def test_a_call_whose_attempts_are_used_up_is_not_made() -> None:
    clock = Clock()
    d = Scripted(b"never")
    with pytest.raises(ContainerError, match=r"no answer after 3 attempt\(s\)"):
        await call(route(d, clock), clock, so_far=3)
    assert d.calls == 0


# ------------------------------------------------------------------------------------------ a lost connection


class Crashing(Scripted):
    """Holds calls until `together` are in the container, then the first one in loses its connection (a crash cuts
    off every call beside it: the others lose theirs too); later calls echo, and the container's occupancy is kept."""

    def __init__(self, together: int) -> None:
        super().__init__()
        self.together = together
        self.entered = 0
        self.all_in = asyncio.Event()
        self.crashed = False

    async def compute(
        self, job_id: str, input_: bytes, attestation: Attestation | None = None, consensus: bool = False
    ) -> Output:
        self.calls += 1
        self.inside += 1
        try:
            if self.crashed:  # a retry: how many calls share the container with it
                self.most_inside = max(self.most_inside, self.inside)
                await next_turn()  # stay inside for a turn, so a call the route let in beside it would be counted
                return Output(input_)
            self.entered += 1
            if self.entered == self.together:
                self.all_in.set()
            await self.all_in.wait()
            self.crashed = True
            raise ContainerLost("container dropped the connection mid-call")
        finally:
            self.inside -= 1


async def test_a_lost_connection_beside_other_calls_uses_no_attempt_and_the_retry_runs_alone() -> None:
    clock = Clock()
    d = Crashing(together=3)
    r = route(d, clock, max_concurrency=3, max_attempts=1)
    told: list[list[int]] = [[], [], []]
    outs = await asyncio.gather(
        *(r.call(str(i), bytes([i]), deadline=clock() + 600, on_attempt=told[i].append) for i in range(3))
    )
    # with one attempt each, every call survived the crash
    assert [o.output for o in outs] == [b"\x00", b"\x01", b"\x02"]
    assert told == [[1, 0, 1]] * 3
    assert d.most_inside == 1  # each retry had the container to itself


async def test_a_lost_connection_alone_in_the_container_is_the_calls_own() -> None:
    clock = Clock()
    lost = ContainerLost("container dropped the connection mid-call")
    d = Scripted(lost, lost, lost)
    with pytest.raises(ContainerLost):
        await call(route(d, clock), clock)
    assert d.calls == 3


# -------------------------------------------------------------------------------------------- off-chain calls


async def test_an_offchain_call_goes_through_the_same_policy() -> None:
    clock = Clock()
    r = route(Scripted(failed(503, 2.0), b"hi"), clock)
    told: list[int] = []
    assert await r.call_offchain("job", {"data": "hi"}, on_attempt=told.append) == {"echo": "hi"}
    assert (told, clock.waits) == ([1, 2], [2.0])


async def test_a_stream_that_failed_before_its_first_piece_is_retried() -> None:
    clock = Clock()
    d = Scripted(pieces=[[failed(500)], [b"a", b"b"]])
    got: list[str] = []
    assert await route(d, clock).stream("job", {}, got.append) == "ab"
    assert (got, d.calls) == (["a", "b"], 2)


async def test_a_stream_that_handed_out_pieces_is_not_retried() -> None:
    clock = Clock()
    d = Scripted(pieces=[[b"a", failed(500)], [b"a", b"b"]])
    got: list[str] = []
    with pytest.raises(ContainerError, match="HTTP 500"):
        await route(d, clock).stream("job", {}, got.append)
    assert (got, d.calls) == (["a"], 1)
