"""Turns the stored subscriptions into interval jobs, by block time.

On each head (and after the listener committed subscription logs), for each live subscription whose model this node
serves: the interval current at the head's timestamp (`node.jobs.intervals`), if it is below the subscription's
`active_intervals`, the subscription is not cancelled, and it is not yet a job, becomes one: its input is read at
that head with an eth_call of the consumer's `subscriptionInput(subscriptionId, interval)`, and its row goes into the
jobs table (keyed by the manager's address, the subscription id and the interval), after which the scheduler
computes it and the transaction layer delivers it with `deliverInterval` like any job.

Guarantees:
- Time is the chain's: the head's timestamp, never this machine's clock.
- At most one job per (subscription, interval): the row's primary key, and the job state machine from there on (a
  restart resumes the row, never makes a second). Only the current interval is ever made a job: an interval that is
  over before this node saw a head in it (the node was down, a head jumped) is skipped and counted as such, and the
  consumer reclaims its escrow. A live interval is never missed while heads come: each head looks again.
- An input that cannot be read (the consumer reverts, the RPC fails) makes no row; the next head tries again while
  the interval lasts. The loop never ends on an error: a failed round is logged and the next head starts another.
- Redundancy is the manager's: a delivery to an interval that is full, over, or already ours reverts in simulation
  and the job settles without a transaction (node/chain/refusals.py, `SETTLED_ERRORS`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

from node.chain.contracts import InferenceRequest
from node.chain.heads import Head
from node.chain.rpc import RpcPool
from node.chain.subscriptions import ManagerTarget
from node.config import ETH_TOKEN
from node.jobs.intervals import Subscription, interval_end, interval_job_id, live_interval
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore

log = logging.getLogger(__name__)


class IntervalServer:
    """Makes the due interval of each served subscription a job, head by head."""

    def __init__(
        self,
        store: JobStore,
        rpc: RpcPool,
        manager: ManagerTarget,
        models: Mapping[bytes, str],
        on_jobs: Callable[[list[Job]], None],
        *,
        count_interval: Callable[[str, int], None] = lambda outcome, n: None,
    ) -> None:
        """`models`: model id -> name of the models served here; `on_jobs`: gets the interval jobs just committed
        (the scheduler's `admit`); `count_interval(outcome, n)`: told of intervals skipped (missed) here."""
        self._store = store
        self._rpc = rpc
        self._manager = manager
        self._models = models
        self._on_jobs = on_jobs
        self._count_interval = count_interval
        self._head: Head | None = None
        self._wake = asyncio.Event()
        #: The newest interval of each subscription this process considered (for counting the skipped ones).
        self._last: dict[int, int] = {}
        #: (subscription, interval) whose input could not be read, said once each.
        self._input_failed: set[tuple[int, int]] = set()
        #: Interval jobs made since the start.
        self.made = 0

    def on_head(self, head: Head) -> None:
        """A new head: the next round looks at its timestamp (rounds never queue up: the newest head wins)."""
        self._head = head
        self._wake.set()

    def poke(self) -> None:
        """New subscription logs were committed: look again at the newest head."""
        self._wake.set()

    async def run(self) -> None:
        """Serves rounds until cancelled; a round that fails is logged and the next head starts another."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            head = self._head
            if head is None:
                continue
            try:
                await self.serve(head)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("subscription round at block %d failed; trying again at the next head", head.number)

    async def serve(self, head: Head) -> list[Job]:
        """One round at `head`: makes a job of each due interval (see the module's guarantees) and hands the new
        ones to `on_jobs`; returns them. Raises what the store raises (an SQLite error)."""
        jobs: list[Job] = []
        for sub in self._store.subscriptions.live(head.timestamp):
            model = self._models.get(sub.model_id)
            interval = live_interval(sub, head.timestamp)
            if model is None or interval is None:
                continue
            self._count_skipped(sub.subscription_id, interval)
            job_id = interval_job_id(sub.subscription_id, interval)
            known = self._store.get(job_id)
            if known is not None and known.state is not JobState.ORPHANED:
                continue
            data = await self._read_input(sub, interval, head)
            if data is None:
                continue
            with self._store.transaction():
                job = self._store.add(_interval_request(sub, interval, data, head), model)
            if job is not None:
                self.made += 1
                jobs.append(job)
                log.info(
                    "subscription %d interval %d: due at block %d (time %d); job made",
                    sub.subscription_id,
                    interval,
                    head.number,
                    head.timestamp,
                )
        if jobs:
            self._on_jobs(jobs)
        return jobs

    def _count_skipped(self, subscription_id: int, interval: int) -> None:
        """Counts the intervals of a subscription between the last one considered (or made a job before a restart)
        and `interval` that never became a job here."""
        last = self._last.get(subscription_id)
        if last is None:
            last = self._store.last_interval(subscription_id)
            last = -1 if last is None else last
        if interval > last + 1:
            missed = interval - last - 1
            log.info(
                "subscription %d: %d interval(s) before %d were over before this node could serve them",
                subscription_id,
                missed,
                interval,
            )
            self._count_interval("skipped", missed)
        self._last[subscription_id] = max(interval, last)

    async def _read_input(self, sub: Subscription, interval: int, head: Head) -> bytes | None:
        """The consumer's input for `interval` at `head`, or None (said once) when it cannot be read now."""
        params = self._manager.abi.input_call(sub.consumer, sub.subscription_id, interval, head.number)
        try:
            return self._manager.abi.decode_input(await self._rpc.request("eth_call", params))
        except Exception as exc:  # any answer: the next head tries again while the interval lasts
            if (sub.subscription_id, interval) not in self._input_failed:
                self._input_failed.add((sub.subscription_id, interval))
                log.warning(
                    "subscription %d interval %d: could not read subscriptionInput from consumer %s (%s); trying"
                    " again at the next head",
                    sub.subscription_id,
                    interval,
                    sub.consumer,
                    exc,
                )
            return None


def _interval_request(sub: Subscription, interval: int, data: bytes, head: Head) -> InferenceRequest:
    """The job's request: the subscription's terms, the interval's input, its end as the deadline, and the head it
    was made at (a reorg below that head orphans it, and the next round makes it again)."""
    return InferenceRequest(
        request_id=interval_job_id(sub.subscription_id, interval),
        model_id=sub.model_id,
        consumer=sub.consumer,  # type: ignore[arg-type]
        input=data,
        token=sub.token,  # type: ignore[arg-type]
        fee_per_node_wei=sub.fee_per_node_wei,
        callback_gas_limit=sub.callback_gas_limit,
        redundancy=sub.redundancy,
        deadline=interval_end(sub, interval),
        verifier=ETH_TOKEN,  # type: ignore[arg-type]  # the zero address: intervals have no verifier
        block_number=head.number,
        block_hash=head.hash,
        tx_hash=sub.tx_hash,
        log_index=sub.log_index,
    )
