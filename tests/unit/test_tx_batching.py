"""How ready jobs become one transaction (node/chain/batching.py, node/chain/view.py): the batch's gas share of the
block, a lone item's share, the calldata bound, smaller batches after refusals, deadlines by the chain's clock, and
the block gas limit believed from recent heads."""

from __future__ import annotations

from node.chain import delivery
from node.chain.batching import (
    BATCH_GAS_SHARE,
    LONE_ITEM_GAS_SHARE,
    MAX_BATCH_DATA_BYTES,
    BatchLimits,
    ReadyQueue,
    refused_limit,
    take_batch,
)
from node.chain.contracts import InferenceRequest
from node.chain.heads import Head
from node.chain.view import DEFAULT_BLOCK_GAS_LIMIT, ChainView
from node.jobs.states import JobState
from node.jobs.store import Job

NOW = 1_700_000_000.0


def _job(rid: int, *, callback_gas: int = 100_000, output: bytes = b"out", deadline: int = 2**40) -> Job:
    address = "0x" + "55" * 20
    request = InferenceRequest(
        rid,
        b"\x01" * 32,
        address,
        b"in",
        address,
        1,
        callback_gas,
        1,
        deadline,
        address,
        1,
        "0xaa",
        "0x",
        0,  # type: ignore[arg-type]
    )
    return Job(request, "m", state=JobState.COMPUTED, output=output)


class Outcomes:
    """What `take_batch` asked its caller to do with the jobs it skipped."""

    def __init__(self) -> None:
        self.expired: list[int] = []
        self.reported: dict[int, str] = {}
        self.refusals: dict[int, int] = {}

    def take(self, jobs: list[Job], limits: BatchLimits) -> tuple[list[int], ReadyQueue]:
        queue = ReadyQueue()
        for job in jobs:
            queue.append(job)
        batch = take_batch(
            queue,
            limits,
            now=NOW,
            refusals=lambda rid: self.refusals.get(rid, 0),
            expire=lambda job: self.expired.append(job.request_id),
            report=self._report,
        )
        return [j.request_id for j in batch], queue

    def _report(self, job: Job, why: str) -> None:
        self.reported[job.request_id] = why
        job.output, job.failure = None, why  # as the store would turn it into a failure report


def test_a_batch_stays_below_its_share_of_the_block_gas_limit() -> None:
    block = 4_000_000
    jobs = [_job(i) for i in range(1, 40)]
    fits = (int(block * BATCH_GAS_SHARE) - delivery.BATCH_BASE_GAS) // delivery.item_gas(jobs[0])
    taken, queue = Outcomes().take(jobs, BatchLimits(max_items=32, block_gas_limit=block))
    assert len(taken) == fits == 10
    assert delivery.gas_limit(jobs[:fits]) <= block * BATCH_GAS_SHARE < delivery.gas_limit(jobs[: fits + 1])
    assert len(queue) == len(jobs) - fits  # the rest wait for the next transaction, in order
    assert queue.peek().request_id == fits + 1


def test_max_batch_bounds_a_batch_of_small_items() -> None:
    taken, _ = Outcomes().take([_job(i) for i in range(1, 40)], BatchLimits(32, DEFAULT_BLOCK_GAS_LIMIT))
    assert taken == list(range(1, 33))


def test_a_lone_item_may_use_most_of_a_block_but_not_more() -> None:
    block = 4_000_000
    big = _job(1, callback_gas=3_300_000)  # over the batch share, under the lone item's
    assert block * BATCH_GAS_SHARE < delivery.gas_limit([big]) <= block * LONE_ITEM_GAS_SHARE
    outcomes = Outcomes()
    taken, _ = outcomes.take([big, _job(2)], BatchLimits(32, block))
    assert taken == [1]
    assert outcomes.reported == {}

    huge = _job(3, callback_gas=3_700_000)  # over 95% of the block: never mined
    assert delivery.gas_limit([huge]) > block * LONE_ITEM_GAS_SHARE
    taken, _ = outcomes.take([huge], BatchLimits(32, block))
    assert taken == [3]  # sent as a failure report, whose error callback gas is capped
    assert "over the block gas limit" in outcomes.reported[3]


def test_a_batch_stays_below_the_calldata_bound() -> None:
    output = b"\x07" * (40 * 1024)
    jobs = [_job(i, output=output) for i in range(1, 6)]
    taken, _ = Outcomes().take(jobs, BatchLimits(32, DEFAULT_BLOCK_GAS_LIMIT))
    assert taken == [1, 2]  # 80 KiB; a third would be 120 KiB
    assert 2 * len(output) <= MAX_BATCH_DATA_BYTES < 3 * len(output)


def test_an_output_over_the_coordinators_limit_becomes_a_failure_report() -> None:
    outcomes = Outcomes()
    taken, _ = outcomes.take([_job(1, output=b"x" * 101)], BatchLimits(32, DEFAULT_BLOCK_GAS_LIMIT, 100))
    assert taken == [1]
    assert "maxOutputBytes (100)" in outcomes.reported[1]


def test_a_refused_item_halves_the_batch_for_each_refusal() -> None:
    assert [refused_limit(32, n) for n in range(7)] == [32, 16, 8, 4, 2, 1, 1]
    outcomes = Outcomes()
    outcomes.refusals[1] = 2
    taken, _ = outcomes.take([_job(i) for i in range(1, 20)], BatchLimits(32, DEFAULT_BLOCK_GAS_LIMIT))
    assert taken == list(range(1, 9))
    outcomes.refusals = {5: 3}
    taken, queue = outcomes.take([_job(i) for i in range(1, 20)], BatchLimits(32, DEFAULT_BLOCK_GAS_LIMIT))
    assert taken == [1, 2, 3, 4]
    assert queue.peek().request_id == 5


def test_jobs_past_their_deadline_expire_and_settled_ones_leave_the_queue() -> None:
    late, settled, ok = _job(1, deadline=int(NOW) - 1), _job(2), _job(3)
    settled.state = JobState.CONFIRMED
    outcomes = Outcomes()
    taken, queue = outcomes.take([late, settled, ok], BatchLimits(32, DEFAULT_BLOCK_GAS_LIMIT))
    assert (taken, outcomes.expired, len(queue)) == ([3], [1], 0)


def _head(number: int, gas_limit: int) -> Head:
    return Head(number, f"0x{number:x}", f"0x{number - 1:x}", 10**9, 1_700_000_000 + number, gas_limit)


def test_the_block_gas_limit_is_the_largest_of_the_recent_plausible_heads() -> None:
    view = ChainView()
    view.on_head(_head(1, 21_000))  # not believed: no chain has blocks that small
    assert view.block_gas_limit == DEFAULT_BLOCK_GAS_LIMIT
    view.on_head(_head(1, 36_000_000))
    view.on_head(_head(2, 21_000))  # not believed: no chain has blocks that small
    view.on_head(_head(3, 20_000_000))
    assert view.block_gas_limit == 36_000_000  # one low head does not shrink batches
    for n in range(4, 12):
        view.on_head(_head(n, 20_000_000))
    assert view.block_gas_limit == 20_000_000  # the chain's limit did fall
