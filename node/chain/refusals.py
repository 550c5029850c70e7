"""What becomes of jobs and transactions the RPC did not take: back-off, refusal, a paused key, a taken nonce.

`TxManager` (node/chain/tx.py) sends; this unit decides, by the taxonomy of `node.errors.Action`
(docs/RELIABILITY.md), what happens to what was not sent.

Guarantees:
- Jobs whose send failed go back to the queue after a capped, jittered back-off (tenacity), never at once; a
  delivery that cannot be sent within `retry_window_s` (from its first failure, whatever was re-signed since)
  becomes a failure report, and a failure report that cannot be sent for as long is given up (the request's
  deadline refunds its consumer).
- A delivery the coordinator refuses because its request needs a proof (`ProofRequired`) is settled `skipped`,
  never turned into a failure report (the request is not this node's to fail).
- A refused batch is sent again in halves; an item refused alone `MAX_ITEM_REFUSALS` times over `REFUSAL_WINDOW_S`
  becomes a failure report. Only the coordinator's decoded errors act at once.
- A key without funds pauses with a growing back-off and is named on `/readyz` until one of its transactions is mined.
- A transaction refused in words that say nothing certain stays tracked; one refused for what it carries or for its
  key (or refused `MAX_TX_REFUSALS` times over `TX_REFUSAL_WINDOW_S`, whatever the words) is given up, its nonce
  filled or reused (`Resender.abandon`). "nonce too low" with no receipt of ours resyncs the key's nonce from the
  chain and sends the jobs again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from node.chain import delivery
from node.chain.build import PROOF_REJECTED
from node.chain.commitments import COMMITTED
from node.chain.env import TxBooks, TxEnv
from node.chain.keys import Key
from node.chain.resend import Resender
from node.chain.rpc import RpcError, classify
from node.chain.tracking import ALREADY_COMMITTED, NOT_SERVED_ERRORS, SETTLED_ERRORS, not_served, receipt_of
from node.errors import Action, TxReverted, short
from node.jobs.outcomes import Outcomes
from node.jobs.states import JobState
from node.jobs.store import Job, StoredTx
from node.observability.conditions import CONDITIONS
from node.retry import backoff_s

log = logging.getLogger(__name__)

#: Back-off of a job whose send failed (any outside answer but a settled one): capped exponential with jitter.
SEND_BACKOFF_BASE_S = 0.25
SEND_BACKOFF_MAX_S = 10.0
#: Times one item must be refused alone (not as part of a batch), for a reason other than a decoded revert, over at
#: least `REFUSAL_WINDOW_S` before the node takes the refusal as final and reports the failure instead: a flaky
#: endpoint that says "invalid request" now and then must not turn a good output into a failure report.
MAX_ITEM_REFUSALS = 3
REFUSAL_WINDOW_S = 20.0
#: A sent transaction whose sends and rebroadcasts the RPC refused this many times over at least this many seconds
#: (with words nobody classified, or "try again") is taken as refused for what it carries, whatever the words.
MAX_TX_REFUSALS = 5
TX_REFUSAL_WINDOW_S = 60.0


class Refusals:
    """Back-off of failed sends, refused items and transactions, paused keys."""

    def __init__(
        self,
        env: TxEnv,
        books: TxBooks,
        *,
        resender: Resender,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._env = env
        self._books = books
        self._resender = resender
        self._spawn = spawn
        self._monotonic = monotonic
        #: Jobs waiting out a back-off before they are ready again.
        self.backing_off = 0

    # ---------------------------------------------------------------------------------------------- jobs

    def send_failed(self, key: Key, jobs: list[Job], exc: Exception) -> None:
        """Sending `jobs` from `key` raised `exc` (an outside answer, or a bug): refused items are counted, a blocked
        key pauses, everything else goes back to the queue after a back-off."""
        action = classify(exc)
        if action is Action.UNKNOWN and not isinstance(exc, RpcError):
            log.error("sending %s failed unexpectedly; retrying later", delivery.describe(jobs), exc_info=exc)
        CONDITIONS.count("send", action)
        if action is Action.REFUSED:
            self.item_refused([j for j in jobs if j.state is JobState.COMPUTED], str(exc))
        elif action is Action.KEY_BLOCKED:
            self._books.keys.pause(key, str(exc))
            self.requeue(jobs, exc, counts=False)
        else:
            self.requeue(jobs, exc, retry_after_s=getattr(exc, "retry_after_s", None))

    def reverted(self, job: Job, reverted: TxReverted) -> None:
        """The simulation of `job` alone reverted: settle it, report its failure, or doubt the revert."""
        if job.state is JobState.ORPHANED:  # a reorg removed its request during the simulation: nothing to do
            log.info("request %d: removed by a reorg while its send was simulated; dropped", job.request_id)
            return
        if reverted.error == ALREADY_COMMITTED:  # ours, mined unseen (a lagging RPC): reveal it, never drop it
            Outcomes(self._env.store).set(job.request_id, verification=COMMITTED)
            self._books.settler.settle(job, JobState.CONFIRMED, None, detail={"committed": True})
        elif reverted.error in SETTLED_ERRORS:
            self._books.settler.settle(job, JobState.EXPIRED, f"already settled on-chain ({reverted.error_text})")
        elif reverted.error == PROOF_REJECTED:
            # Sending it would cost gas and the node's stake (the verifier slashes what it rejects): never sent.
            self._books.settler.settle(job, JobState.FAILED, str(reverted))
        elif reverted.error in NOT_SERVED_ERRORS:
            # A request that needs a proof this node did not give: not a failure of the model, never reported.
            self._books.settler.settle(job, JobState.SKIPPED, not_served(reverted.error, reverted.error_text))
        elif reverted.error is None:
            # Not one of the coordinator's errors (an endpoint that says "revert" for something else, a revert
            # without data): refused a few times before the node believes it.
            self.item_refused([job], str(reverted))
        elif job.failure is None:
            # The coordinator will not take this output (e.g. too large): failure is an answer, report it.
            if self._books.settler.report_instead(job, f"delivery refused: {reverted.error_text or reverted}"):
                self._books.queue.append(job)
        else:
            self._books.settler.settle(job, JobState.FAILED, str(reverted))

    def requeue(
        self, jobs: list[Job], exc: BaseException, *, counts: bool = True, retry_after_s: float | None = None
    ) -> None:
        """Puts jobs whose send failed back in the queue after a capped, jittered back-off. `counts`: the failure
        was theirs and counts towards the back-off and the window (a key that cannot send is not its jobs' failure:
        they wait for it until their deadline). `retry_after_s`: at least this long, as the endpoint asked."""
        now = self._monotonic()
        later: list[Job] = []
        delay = 0.0
        for job in jobs:
            if job.state is not JobState.COMPUTED:
                continue  # sent meanwhile (a split batch), orphaned, or settled
            rid = job.request_id
            first = self._books.history.first_failure(rid, now, counts=counts)
            if counts and now - first > self._env.policy.retry_window_s:
                if job.failure is None:
                    reason = f"could not deliver for {now - first:.0f} s: {short(exc)}"
                    if not self._books.settler.report_instead(job, reason):
                        continue  # an interval: settled as failed, nothing to report
                    self._books.history.restart_window(rid, now)  # the report gets a window of its own
                else:
                    self._books.settler.settle(
                        job, JobState.FAILED, f"could not send for {now - first:.0f} s: {short(exc)}"
                    )
                    continue
            failures = self._books.history.failed_send(rid, counts=counts)
            delay = max(delay, backoff_s(max(1, failures), SEND_BACKOFF_BASE_S, SEND_BACKOFF_MAX_S))
            later.append(job)
        if retry_after_s:
            delay = max(delay, retry_after_s)
        if not later:
            return
        # Once per change of what is failing (logged by the condition), the detail of every retry at debug.
        CONDITIONS.set("sending", f"sends failing ({type(exc).__name__}); retrying with back-off", blocks_ready=False)
        log.debug("%d job(s) waiting %.2f s to be sent again: %s", len(later), delay, short(exc))
        self.backing_off += len(later)
        self._spawn(self._ready_after(later, delay))

    async def _ready_after(self, jobs: list[Job], delay_s: float) -> None:
        try:
            await asyncio.sleep(delay_s)  # a back-off, not a wait for a condition
        finally:
            self.backing_off -= len(jobs)
        self._books.queue.put_back(jobs)  # wakes the send loop, which may be asleep on an empty queue

    def item_refused(self, jobs: list[Job], reason: str) -> None:
        """The RPC refused a transaction for what it carried (not a decoded revert: too big, too much gas, an
        invalid request). A batch is sent again in halves; an item refused alone `MAX_ITEM_REFUSALS` times over at
        least `REFUSAL_WINDOW_S` is reported as a failure (a failure report refused as often is given up)."""
        if not jobs:
            return
        if len(jobs) > 1:
            for job in jobs:
                self._books.history.refused_in_batch(job.request_id)
            log.warning("%d item(s) refused together (%s); sending them again in smaller batches", len(jobs), reason)
            self.requeue(jobs, RuntimeError(reason))
            return
        job = jobs[0]
        rid = job.request_id
        now = self._monotonic()
        refused, first = self._books.history.refused_alone(rid, now)
        if refused < MAX_ITEM_REFUSALS or now - first < REFUSAL_WINDOW_S:
            self.requeue(jobs, RuntimeError(reason))
        elif job.failure is None:
            why = f"delivery refused by the RPC {refused} times: {short(reason)}"
            if self._books.settler.report_instead(job, why):
                self._books.history.forget_refusals(rid)
                self._books.queue.append(job)
        else:
            self._books.settler.settle(
                job, JobState.FAILED, f"failure report refused by the RPC {refused} times: {short(reason)}"
            )

    # ------------------------------------------------------------------------------------------ transactions

    async def tx_refused(self, tx: StoredTx, error: str, quiet: bool, action: Action) -> None:
        """The RPC refused a transaction (`action`: what the refusal means). Known already: nothing to do. Nonce
        taken: resync. A refusal of what it carries (`REFUSED`) or of its key (`KEY_BLOCKED`): the transaction is
        given up, its nonce filled, its jobs sent again after a back-off (in smaller batches or as a failure report;
        after the key's pause). Anything else (`RETRY`, `UNHEALTHY`, `UNKNOWN`: "internal error", "try again", a
        message nobody classified) says nothing certain about the transaction, which may well be in the pool: it
        stays tracked, and the tracker finds its receipt, rebroadcasts it or replaces it. Never a resend at once."""
        message = error.lower()
        if "already known" in message or "already imported" in message:
            return
        if "nonce too low" in message:
            if not quiet:
                await self._nonce_taken(tx)
            return
        if "underpriced" not in message:  # an underpriced rebroadcast means the pool has it already
            now = self._monotonic()
            count, first = self._books.ledger.count_refusal(tx, now)
            if count >= MAX_TX_REFUSALS and now - first >= TX_REFUSAL_WINDOW_S:
                # However the RPC words it, a transaction refused this often for this long will not be taken.
                action, quiet = Action.REFUSED, False
        if quiet:
            log.info("rebroadcast of nonce %d: %s", tx.nonce, error)
            return
        CONDITIONS.count("send", action)
        if action not in (Action.REFUSED, Action.KEY_BLOCKED):
            log.warning(
                "nonce %d of %s: the RPC answered %r; kept, the tracker rebroadcasts it", tx.nonce, tx.sender, error
            )
            return
        self._books.ledger.clear_refusals(tx)
        log.error("nonce %d of %s refused by the RPC (%s); its jobs will be sent again", tx.nonce, tx.sender, error)
        jobs = await self._resender.abandon(tx, error)
        if action is Action.REFUSED:
            self.item_refused(jobs, error)
        else:
            self._books.keys.pause(self._books.keys.get(tx.sender), error)
            self.requeue(jobs, RuntimeError(error), counts=False)

    async def _nonce_taken(self, tx: StoredTx) -> None:
        """The chain already has a transaction at this nonce that is none of ours on record: resync, resend."""
        for tx_hash in tx.hashes:
            if await receipt_of(self._env.rpc, tx_hash) is not None:
                return  # one of ours was mined: the tracker settles it
        jobs = await self._resender.abandon(tx, "nonce too low", taken=True)
        self.requeue(jobs, RuntimeError("nonce too low"))
