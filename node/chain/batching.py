"""Forming transactions from ready jobs: the queue of jobs that have their output, and which of them go out together.

Guarantees:
- A batch holds at most `max_batch` items (halved for each time one of them was refused), below `BATCH_GAS_SHARE` of
  the block gas limit and `MAX_BATCH_DATA_BYTES` of calldata; its first item is always taken, and a lone item may
  use up to `LONE_ITEM_GAS_SHARE` of a block (past that it can never be mined and becomes a failure report first).
- A job past its deadline by the chain's clock is not sent (it expires); one that is no longer `computed` (orphaned,
  settled meanwhile) leaves the queue unsent.
- A delivery that can never be mined (gas over the block's limit, output over the coordinator's `maxOutputBytes`)
  becomes a failure report, which is sent instead.
- Jobs sent back after a failed send go to the front of the queue, in their order.
- A subscription interval's delivery (`deliverInterval`, to the SubscriptionManager) always goes alone, and one that
  can never be mined is settled as failed (`report` does it: an interval has no failure report).
- A delivery with a proof (a verified request, `delivery.with_proof`) always goes alone, as `deliverWithProof`;
  a consensus request's `commit` goes with other commits only (`consensusBatch`, several; `commit`, one).

`take_batch` is a function of the queue, the limits and the chain's time; what becomes of a skipped job is the
caller's (`expire`, `report`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from node.chain import delivery
from node.jobs.states import JobState
from node.jobs.store import Job

#: How long, at most, a partial batch waits to fill while one of the node's transactions is unmined.
BATCH_LINGER_S = 0.02
#: Share of the block gas limit one batch may use (a lone item may use up to `LONE_ITEM_GAS_SHARE`): a transaction
#: over the limit can never be mined, and a batch that fills a whole block waits behind everyone else's.
BATCH_GAS_SHARE = 0.5
LONE_ITEM_GAS_SHARE = 0.95
#: Calldata bytes in one batch: geth's transaction pool refuses transactions over 128 KiB.
MAX_BATCH_DATA_BYTES = 96 * 1024


class ReadyQueue:
    """Jobs that have their output (or their failure reason) and wait to be sent, oldest first."""

    def __init__(self) -> None:
        self._jobs: collections.deque[Job] = collections.deque()
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._jobs)

    def append(self, job: Job) -> None:
        self._jobs.append(job)
        self._arrived.set()

    def put_back(self, jobs: list[Job], *, wake: bool = True) -> None:
        """Puts `jobs` back at the front, in their order (`wake`: tell a sender asleep on an empty queue)."""
        self._jobs.extendleft(reversed(jobs))
        if wake:
            self._arrived.set()

    def poke(self) -> None:
        """Wakes whoever waits for an arrival, to look again (a partial batch lingering for jobs that will not come)."""
        self._arrived.set()

    def peek(self) -> Job:
        return self._jobs[0]

    def pop(self) -> Job:
        return self._jobs.popleft()

    async def wait_for_jobs(self) -> None:
        """Returns once the queue holds a job (at once when it does)."""
        while not self._jobs:
            await self.next_arrival()

    def next_arrival(self) -> Coroutine[Any, Any, bool]:
        """Awaitable that returns when a job arrives (from the moment of this call on)."""
        self._arrived.clear()
        return self._arrived.wait()


@dataclass(frozen=True)
class BatchLimits:
    """What bounds one transaction: items, the block gas limit it is sized below, the coordinator's output limit."""

    max_items: int
    block_gas_limit: int
    #: The coordinator's `maxOutputBytes` (None: unknown, the simulation finds an output too long).
    max_output_bytes: int | None = None

    @property
    def gas_budget(self) -> int:
        """Gas one batch may use."""
        return int(self.block_gas_limit * BATCH_GAS_SHARE)


def unsendable(job: Job, limits: BatchLimits) -> str | None:
    """Why `job`'s delivery can never be mined (None: it can): what the failure report will say."""
    if job.failure is not None:
        return None
    output = job.output or b""
    if limits.max_output_bytes is not None and len(output) > limits.max_output_bytes:
        return f"output of {len(output)} bytes is over the coordinator's maxOutputBytes ({limits.max_output_bytes})"
    gas = delivery.gas_limit([job])
    if gas > limits.block_gas_limit * LONE_ITEM_GAS_SHARE:
        return f"delivery needs {gas} gas, over the block gas limit ({limits.block_gas_limit})"
    return None


def refused_limit(max_items: int, refusals: int) -> int:
    """Items a batch may hold when one of them was refused `refusals` times: halved per refusal, at least 1."""
    return max(1, max_items >> refusals) if refusals else max_items


def take_batch(
    queue: ReadyQueue,
    limits: BatchLimits,
    *,
    now: float,
    refusals: Callable[[int], int],
    expire: Callable[[Job], None],
    report: Callable[[Job, str], None],
    commits: Callable[[Job], bool] = lambda job: False,
) -> list[Job]:
    """The next transaction's jobs, taken from the front of `queue` (see the module's guarantees). `now`: the chain's
    time; `refusals(request_id)`: how often that job was refused; `expire(job)`: a job past its deadline (taken off
    the queue); `report(job, why)`: a job whose delivery can never be mined, to be turned into a failure report
    (it stays in the batch as that report); `commits(job)`: whether the job's action is a consensus request's
    `commit` (those batch with each other only, as `consensusBatch`)."""
    batch: list[Job] = []
    limit = limits.max_items
    gas = delivery.BATCH_BASE_GAS
    size = 0
    while queue and len(batch) < limit:
        job = queue.peek()
        if job.state is not JobState.COMPUTED:
            queue.pop()
            continue  # orphaned or settled meanwhile
        if job.request.deadline <= now:
            queue.pop()
            expire(job)
            continue
        if batch and (job.subscription is not None or batch[0].subscription is not None):
            break  # an interval goes alone
        if (why := unsendable(job, limits)) is not None:
            report(job, why)
            if job.state is not JobState.COMPUTED:  # an interval, settled as failed by `report`
                queue.pop()
                continue
        limit = min(limit, refused_limit(limits.max_items, refusals(job.request_id)))
        commit = delivery.with_proof(job) and commits(job)
        if batch and commit != (delivery.with_proof(batch[0]) and commits(batch[0])):
            break  # commits go with commits (`consensusBatch`), deliveries with deliveries
        if not commit and (delivery.with_proof(job) or (batch and delivery.with_proof(batch[0]))):
            limit = 1  # alone: `deliverWithProof` carries one request
        if len(batch) >= limit:
            break
        item_gas = delivery.COMMIT_ITEM_GAS if commit else delivery.item_gas(job)
        item_size = delivery.item_bytes(job)
        if batch and (gas + item_gas > limits.gas_budget or size + item_size > MAX_BATCH_DATA_BYTES):
            break
        queue.pop()
        batch.append(job)
        gas += item_gas
        size += item_size
    return batch
