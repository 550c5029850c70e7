"""One way to call a model's container, for every caller: on-chain jobs (the scheduler), off-chain jobs and delegated
requests (the API).

A `ModelRoute` per model owns its container's concurrency (at most `max_concurrency` calls in it at once, whoever
makes them), the one retry policy (`CallPolicy`: tenacity's `AsyncRetrying` with the node's back-off, `node.retry`)
and the timing of each call in metrics. A caller gives a deadline and, when it keeps the count, the attempts already
used and a callback that commits each change of it; it gets the output or the error that ended the call.

Guarantees:
- a retryable failure (`ContainerError.retryable`: 408/425/429, a 5xx, a timeout, a lost connection, a malformed
  answer) is retried until `max_attempts` attempts are used, each retry after `retry_backoff_s` doubling (plus up to a
  quarter of it of jitter, capped at `BACKOFF_MAX_S`) or the container's `Retry-After` when longer, never sooner than
  `MIN_RETRY_S`; a rejected input (`ContainerRejected`) fails at once;
- a container that refuses connections (`ContainerUnavailable`: it is down) is waited for in `CONTAINER_WAIT_S` steps
  and uses no attempt; the caller's `on_wait` hears why once (`waiting: container of <model> at <url> is down since
  <time>`), and None once the container takes the call;
- a call that loses its connection (`ContainerLost`) while other calls shared the container uses no attempt (any of
  them may have crashed it), and the caller's later attempts run alone in the container (they take every slot), where
  a lost connection is its own and counts: an input that crashes its container fails by itself, not the jobs beside it;
- no retry starts unless it can start before the deadline (by the route's clock; the node's is the chain's): the call
  fails then, saying so;
- a stream that has handed out pieces is not retried (its readers would see two attempts spliced);
- `on_attempt(n)` hears the attempts used each time that number changes (+1 as an attempt enters the container,
  before the call; -1 when it turns out not to count), so a caller that commits it cannot retry forever across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypeVar

import tenacity

from containers.runtime.wire import NO_ATTESTATION_KEY, Attestation
from node.chain.rpc import public_url
from node.config import ModelConfig
from node.dispatch.protocol import Output
from node.errors import ContainerError, ContainerLost, ContainerRejected, ContainerUnavailable, ProofUnavailable
from node.retry import backoff_s

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Longest back-off between two attempts, in seconds (a container's `Retry-After` may ask for longer).
BACKOFF_MAX_S = 10.0
#: Shortest wait before any retry, in seconds: nothing a container answers can make a call spin.
MIN_RETRY_S = 0.05
#: How often a call re-tries a container that refuses connections, in seconds.
CONTAINER_WAIT_S = 1.0
#: A call that was waiting for its container no longer waits once the container has held it this long, in seconds.
ENTERED_S = 0.5


class Dispatcher(Protocol):
    """How a model's container is reached (`node.dispatch.http`, `node.dispatch.mqtt`); each call raises the
    `ContainerError` family."""

    async def compute(
        self, job_id: str, input_: bytes, attestation: Attestation | None = None, consensus: bool = False
    ) -> Output:
        """The ABI output for an on-chain input (ABI-encoded), with the container's proof (empty unless
        `attestation` asked for one, bound to it); `consensus`: in the model's consensus form (a consensus
        request's, which several nodes must answer byte for byte alike)."""
        ...

    async def compute_offchain(self, job_id: str, data: dict[str, Any]) -> Any:
        """The output of an off-chain job (its input fields by name)."""
        ...

    def stream(self, job_id: str, data: dict[str, Any]) -> AsyncGenerator[str, None]:
        """The pieces of an off-chain job's output, as the container hands them out."""
        ...

    async def healthy(self) -> bool:
        """Whether the container can take calls now."""
        ...


def retry_delay_s(exc: ContainerError, attempts: int, base_s: float) -> float:
    """Seconds before the call after `exc`, when `attempts` attempts are used: `CONTAINER_WAIT_S` for a container that
    is down, else the back-off for `attempts` (`base_s` doubling, jittered, capped at `BACKOFF_MAX_S`) or the
    container's `Retry-After` when longer, and never less than `MIN_RETRY_S`."""
    if isinstance(exc, ContainerUnavailable):
        return CONTAINER_WAIT_S
    return max(MIN_RETRY_S, backoff_s(attempts, base_s, BACKOFF_MAX_S), exc.retry_after_s or 0.0)


@dataclass
class Tally:
    """One call's progress over its attempts: what the policy reads and the attempt updates."""

    #: Attempts used (committed by the caller through `on_attempt`).
    attempts: int
    on_attempt: Callable[[int], None] | None = None
    #: Set once an attempt lost its connection: the later ones run alone in the container.
    alone: bool = False
    #: Whether the last lost connection happened beside other calls (and so did not count).
    shared_loss: bool = False
    #: Set once the call must not be retried whatever happens (a stream handed out pieces).
    final: bool = False
    #: Told why the call waits (`waiting: container of … is down since …`), then None once the container takes it.
    on_wait: Callable[[str | None], None] | None = None
    #: What `on_wait` was last told (None: the call is not waiting).
    waiting: str | None = None

    def count(self, delta: int) -> None:
        self.attempts += delta
        if self.on_attempt is not None:
            self.on_attempt(self.attempts)

    def wait(self, reason: str | None) -> None:
        """Tells `on_wait` why the call waits now (None: it no longer does), once per change."""
        if reason != self.waiting:
            self.waiting = reason
            if self.on_wait is not None:
                self.on_wait(reason)


class CallPolicy:
    """The one retry policy of container calls (the module docstring), as tenacity's strategies over a `Tally`."""

    def __init__(self, route: ModelRoute, job_id: str, tally: Tally, deadline: float) -> None:
        self._route = route
        self._model = route.model
        self._clock = route.clock
        self._sleep = route.sleep
        self._job = f"job {job_id} ({route.model.name})"
        self.tally = tally
        self.deadline = deadline
        self._waiting = False

    def retrying(self) -> tenacity.AsyncRetrying:
        return tenacity.AsyncRetrying(
            retry=self.retry,
            wait=self.wait,
            stop=self.stop,
            before_sleep=self.before_sleep,
            retry_error_callback=self.give_up,
            sleep=self._sleep,
        )

    def retry(self, state: tenacity.RetryCallState) -> bool:
        exc = _error(state)
        return isinstance(exc, ContainerError) and exc.retryable and not self.tally.final

    def wait(self, state: tenacity.RetryCallState) -> float:
        exc = _error(state)
        assert isinstance(exc, ContainerError)  # `retry` let only these through
        return retry_delay_s(exc, self.tally.attempts, self._model.retry_backoff_s)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        """Attempts used up (only counted attempts can use them up), or no time to start the next one."""
        return self.tally.attempts >= self._model.max_attempts or self._clock() + state.upcoming_sleep >= self.deadline

    def give_up(self, state: tenacity.RetryCallState) -> NoReturn:
        exc = _error(state)
        assert isinstance(exc, ContainerError)
        if self.tally.attempts >= self._model.max_attempts:
            raise exc
        if isinstance(exc, ContainerUnavailable):
            raise ContainerError(f"{exc}; gave up before the request's deadline") from None
        raise ContainerError(
            f"{exc}; no time left for a retry in {state.upcoming_sleep:.1f} s before the request's deadline",
            status=exc.status,
        ) from None

    def before_sleep(self, state: tenacity.RetryCallState) -> None:
        exc, delay, used, most = _error(state), state.upcoming_sleep, self.tally.attempts, self._model.max_attempts
        if isinstance(exc, ContainerUnavailable):
            self.tally.wait(self._route.waiting_reason())
            if not self._waiting:  # once per call: a down container is waited for in 1 s steps
                self._waiting = True
                log.info("%s: %s; waiting for it", self._job, exc)
        elif isinstance(exc, ContainerLost):
            said = (
                "a call beside others lost its connection (not counted as an attempt)"
                if self.tally.shared_loss
                else f"attempt {used}/{most} lost its connection"
            )
            log.warning("%s: %s (%s); retrying alone in the container in %.2f s", self._job, said, exc, delay)
        else:
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.2f s", self._job, used, most, exc, delay)


def _error(state: tenacity.RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


@dataclass(eq=False)
class _Place:
    """One call in the container; `shared` once another call was in it at any moment of this one."""

    shared: bool = False


@dataclass(eq=False)
class ModelRoute:
    """Where one model's calls go: its container (`dispatcher`), its `max_concurrency` places, its retry policy."""

    model: ModelConfig
    dispatcher: Dispatcher
    #: The time deadlines are judged by, in unix seconds (the node's: the chain's, `ChainClock.now`).
    clock: Callable[[], float] = time.time
    #: Times each call that reached the container, when set.
    metrics: Metrics | None = None
    #: How a retry waits (tests give one that advances their clock).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    #: Calls made into the container (attempts, counted or not).
    calls_made: int = 0
    _slots: asyncio.Semaphore = field(init=False)
    #: Held by the call that takes every place (runs alone), so that two such calls never split the places.
    _exclusive: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    _places: set[_Place] = field(init=False, default_factory=set)
    #: Wall-clock time (unix s) since which the container refuses connections; None while it takes them.
    down_since: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._slots = asyncio.Semaphore(self.model.max_concurrency)

    def waiting_reason(self) -> str:
        """Why a call of this route waits, as a job row shows it: `waiting: container of <model> at <url> is down
        since <ISO-8601 UTC>`."""
        since = datetime.datetime.fromtimestamp(self.down_since or time.time(), datetime.UTC)
        where = public_url(str(self.model.url)) if self.model.url is not None else "its MQTT pool"
        return f"waiting: container of {self.model.name} at {where} is down since {since:%Y-%m-%dT%H:%M:%SZ}"

    @property
    def budget_s(self) -> float:
        """Seconds a call without a deadline of its own may take: as long as its attempts could."""
        return self.model.max_attempts * (self.model.timeout_s + BACKOFF_MAX_S)

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
        on_wait: Callable[[str | None], None] | None = None,
    ) -> Output:
        """The ABI output for an on-chain input and the container's proof, under the policy (the module docstring).
        `deadline`: no retry starts after it (default: `budget_s` from now); `attempts_so_far`: those a previous run
        used; `on_attempt`: told each change of the attempts used; `attestation`: the proof is required, bound to
        it (a container that has no key, or answers without a proof, raises `ProofUnavailable`: retrying cannot
        help); `consensus`: the output in the model's consensus form; `on_wait`: told why the call waits while the
        container is down (`waiting_reason()`), then None once the container takes the call. Raises the
        `ContainerError` that ended the call (one saying "no answer after" when `attempts_so_far` leaves none)."""
        tally = Tally(attempts_so_far, on_attempt, on_wait=on_wait)

        async def one() -> Output:
            try:
                result = await self.dispatcher.compute(job_id, input_, attestation, consensus)
            except ContainerRejected as exc:
                if attestation is not None and NO_ATTESTATION_KEY in str(exc):  # the wire's refusal, defined once
                    raise ProofUnavailable(str(exc), status=exc.status) from None
                raise
            if attestation is not None and not result.proof:
                raise ProofUnavailable(
                    f"{self.model.name}'s container answered without a proof though the request requires one"
                    " (the model is configured `attests = true`: start its container with --attestation-key-file)"
                )
            return result

        return await self._retrying(job_id, tally, deadline, one)

    async def call_offchain(
        self,
        job_id: str,
        data: dict[str, Any],
        *,
        deadline: float | None = None,
        on_attempt: Callable[[int], None] | None = None,
        on_wait: Callable[[str | None], None] | None = None,
    ) -> Any:
        """The output of an off-chain job (its input fields by name), under the policy, as `call`."""
        tally = Tally(0, on_attempt, on_wait=on_wait)
        return await self._retrying(job_id, tally, deadline, lambda: self.dispatcher.compute_offchain(job_id, data))

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
        """Streams an off-chain job's output, `on_piece` told each piece as it comes; returns the pieces joined. Under
        the policy, as `call`, except that an attempt that handed out a piece is the last one."""
        tally = Tally(0, on_attempt, on_wait=on_wait)

        async def one() -> str:
            pieces: list[str] = []
            async with contextlib.aclosing(self.dispatcher.stream(job_id, data)) as stream:
                async for piece in stream:
                    tally.final = True
                    pieces.append(piece)
                    on_piece(piece)
            return "".join(pieces)

        return await self._retrying(job_id, tally, deadline, one)

    async def _retrying(self, job_id: str, tally: Tally, deadline: float | None, make: Callable[[], Awaitable[T]]) -> T:
        if tally.attempts >= self.model.max_attempts:  # a previous run used them all (e.g. the node crashed)
            raise ContainerError(f"no answer after {tally.attempts} attempt(s)")
        try:  # the first attempt outside tenacity: a call that succeeds (nearly all) pays nothing for the policy
            return await self._attempt(tally, make)
        except ContainerError as exc:
            first: list[ContainerError] = [exc]

        async def attempt(tally: Tally, make: Callable[[], Awaitable[T]]) -> T:
            if first:  # the policy judges the first failure exactly as if it had made that attempt itself
                raise first.pop()
            return await self._attempt(tally, make)

        policy = CallPolicy(self, job_id, tally, self.clock() + self.budget_s if deadline is None else deadline)
        result: T = await policy.retrying()(attempt, tally, make)
        return result

    async def _attempt(self, tally: Tally, make: Callable[[], Awaitable[T]]) -> T:
        async with self._place(alone=tally.alone) as place:  # an attempt counts once it is in the container
            tally.count(+1)
            self.calls_made += 1
            started = time.perf_counter()
            try:
                result = await (self._entered(tally, make) if tally.waiting is not None else make())
            except ContainerUnavailable:  # the container is down, not failing on this input
                tally.count(-1)
                if self.down_since is None:
                    self.down_since = time.time()
                raise
            except ContainerLost:
                self.down_since = None
                tally.wait(None)
                self._observe(started, ok=False)
                tally.alone, tally.shared_loss = True, place.shared
                if place.shared:  # any call beside it may have crashed the container: not this call's attempt
                    tally.count(-1)
                raise
            except ContainerError:
                self.down_since = None  # it answered
                tally.wait(None)
                self._observe(started, ok=False)
                raise
            self.down_since = None
            tally.wait(None)
            self._observe(started, ok=True)
            return result

    async def _entered(self, tally: Tally, make: Callable[[], Awaitable[T]]) -> T:
        """`make()` for a call that was waiting for its container: the wait is over (`tally.wait(None)`) once the
        container has held the call for `ENTERED_S` (a refused connection fails well within that)."""
        task = asyncio.ensure_future(make())
        try:
            done, _ = await asyncio.wait({task}, timeout=ENTERED_S)
            if not done:
                tally.wait(None)
            return await task
        finally:
            if not task.done():  # cancelled while it ran: the call goes with it
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def _observe(self, started: float, *, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.observe_container(self.model.name, time.perf_counter() - started, ok=ok)

    @contextlib.asynccontextmanager
    async def _place(self, *, alone: bool = False) -> AsyncIterator[_Place]:
        """A place in the container for one call; `alone`: every place, so no other call runs beside it."""
        held = 0
        async with self._exclusive if alone else contextlib.nullcontext():
            try:
                for _ in range(self.model.max_concurrency if alone else 1):
                    await self._slots.acquire()
                    held += 1
                place = _Place(shared=bool(self._places))
                for other in self._places:
                    other.shared = True
                self._places.add(place)
                try:
                    yield place
                finally:
                    self._places.discard(place)
            finally:
                for _ in range(held):
                    self._slots.release()
