"""What the transaction manager does when an answer is not a plain success: back-off, refusal, a paused key.

`TxManager` (node/chain/tx.py) signs and sends; this mixin, on the same state, decides what becomes of jobs and
transactions the RPC did not take (the taxonomy of `node.errors.Action`, docs/RELIABILITY.md).

Guarantees:
- Jobs whose send failed go back to the queue after a capped, jittered back-off (tenacity), never at once; a
  delivery that cannot be sent within `retry_window_s` (from its first failure, whatever was re-signed since)
  becomes a failure report.
- A refused batch is sent again in halves; an item refused alone `MAX_ITEM_REFUSALS` times over `REFUSAL_WINDOW_S`
  becomes a failure report. Only the coordinator's decoded errors act at once.
- A key without funds pauses with a growing back-off and is named on `/readyz` until one of its transactions is mined.
- A transaction refused in words that say nothing certain stays tracked; one refused for what it carries or for its
  key is given up, and its nonce filled (a 0-value transfer) when a later nonce of the key is open. A resync never
  moves a key's next nonce below its own open transactions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from node.chain import delivery
from node.chain.rpc import classify
from node.chain.tracking import SETTLED_ERRORS, Key, Tracking
from node.errors import Action, short
from node.jobs.store import Job, JobState, StoredTx
from node.observability.conditions import CONDITIONS
from node.retry import backoff_s

if TYPE_CHECKING:
    pass

log = logging.getLogger("node.chain.tx")

#: Back-off of a job whose send failed (any outside answer but a settled one): capped exponential with jitter.
SEND_BACKOFF_BASE_S = 0.25
SEND_BACKOFF_MAX_S = 10.0
#: How long a key whose sends are refused for lack of funds (or similar) pauses, at first and at most.
KEY_PAUSE_BASE_S = 2.0
KEY_PAUSE_MAX_S = 60.0
#: Times one item must be refused alone (not as part of a batch), for a reason other than a decoded revert, over at
#: least `REFUSAL_WINDOW_S` before the node takes the refusal as final and reports the failure instead: a flaky
#: endpoint that says "invalid request" now and then must not turn a good output into a failure report.
MAX_ITEM_REFUSALS = 3
REFUSAL_WINDOW_S = 20.0
#: A sent transaction whose sends and rebroadcasts the RPC refused this many times over at least this many seconds
#: (with words nobody classified, or "try again") is taken as refused for what it carries, whatever the words.
MAX_TX_REFUSALS = 5
TX_REFUSAL_WINDOW_S = 60.0


class Refusals(Tracking):
    """Back-off, refusals and paused keys for `TxManager`; the attributes are the manager's, set in its `__init__`."""

    _tx_refusals: dict[tuple[str, int], tuple[int, float]]
    _ready_event: asyncio.Event
    backing_off: int

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        raise NotImplementedError

    async def _send(self, key: Key, jobs: list[Job]) -> None:
        raise NotImplementedError

    async def _pending_nonce(self, key: Key) -> int:
        raise NotImplementedError

    def _requeue(
        self, jobs: list[Job], exc: BaseException, *, counts: bool = True, retry_after_s: float | None = None
    ) -> None:
        """Puts jobs whose send failed back in the queue after a capped, jittered back-off. `counts`: the failure
        was theirs and counts towards the back-off and the window (a key that cannot send is not its jobs' failure:
        they wait for it until their deadline). `retry_after_s`: at least this long, as the endpoint asked. A
        delivery that could not be sent for `retry_window_s` (from its first failure, whatever was re-signed since)
        becomes a failure report; a failure report that could not be sent for as long is given up (failed here; the
        request's deadline refunds its consumer)."""
        now = time.monotonic()
        later: list[Job] = []
        delay = 0.0
        for job in jobs:
            if job.state is not JobState.COMPUTED:
                continue  # sent meanwhile (a split batch), orphaned, or settled
            rid = job.request_id
            first = self._first_failure.setdefault(rid, now) if counts else self._first_failure.get(rid, now)
            if counts and now - first > self._policy.retry_window_s:
                if job.failure is None:
                    reason = f"could not deliver for {now - first:.0f} s: {short(exc)}"
                    log.error("request %d: %s; reporting the failure instead", rid, reason)
                    self._store.update(job, JobState.COMPUTED, output=None, failure=reason)
                    self._first_failure[rid] = now  # the report gets a window of its own
                else:
                    self._settle(job, JobState.FAILED, f"could not send for {now - first:.0f} s: {short(exc)}")
                    continue
            failures = self._send_failures[rid] = self._send_failures.get(rid, 0) + (1 if counts else 0)
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
        for job in reversed(jobs):
            self._ready.appendleft(job)
        self._ready_event.set()  # the send loop may be asleep on an empty queue

    def _item_refused(self, jobs: list[Job], reason: str) -> None:
        """The RPC refused a transaction for what it carried (not a decoded revert: too big, too much gas, an
        invalid request). A batch is sent again in halves; an item refused alone `MAX_ITEM_REFUSALS` times over at
        least `REFUSAL_WINDOW_S` is reported as a failure (a failure report refused as often is given up)."""
        if not jobs:
            return
        if len(jobs) > 1:
            for job in jobs:
                self._refusals[job.request_id] = self._refusals.get(job.request_id, 0) + 1
            log.warning("%d item(s) refused together (%s); sending them again in smaller batches", len(jobs), reason)
            self._requeue(jobs, RuntimeError(reason))
            return
        job = jobs[0]
        rid = job.request_id
        refused = self._refusals[rid] = self._refusals.get(rid, 0) + 1
        first = self._first_refusal.setdefault(rid, time.monotonic())
        if refused < MAX_ITEM_REFUSALS or time.monotonic() - first < REFUSAL_WINDOW_S:
            self._requeue(jobs, RuntimeError(reason))
        elif job.failure is None:
            why = f"delivery refused by the RPC {refused} times: {short(reason)}"
            log.error("request %d: %s; reporting the failure instead", rid, why)
            self._store.update(job, JobState.COMPUTED, output=None, failure=why)
            self._refusals.pop(rid, None)
            self._first_refusal.pop(rid, None)
            self.enqueue(job)
        else:
            self._settle(job, JobState.FAILED, f"failure report refused by the RPC {refused} times: {short(reason)}")

    def _pause_key(self, key: Key, reason: str) -> None:
        """`key` cannot send (no funds, ...): it sends nothing for a capped, growing pause, and `/readyz` says why."""
        key.pauses += 1
        pause = backoff_s(key.pauses, KEY_PAUSE_BASE_S, KEY_PAUSE_MAX_S)
        key.paused_until = time.monotonic() + pause
        CONDITIONS.set(f"key {key.address}", f"cannot send: {short(reason)} (paused {pause:.0f} s)")

    def _key_ok(self, address: str) -> None:
        """A transaction of this key was mined: whatever paused it is over."""
        key = self._by_address.get(address.lower())
        if key is not None and key.pauses:
            key.pauses = 0
            key.paused_until = 0.0
            CONDITIONS.set(f"key {key.address}", None)

    async def _refused(self, key: Key, jobs: list[Job], reverted: Any) -> None:
        """The simulation reverted: settle or re-route what it carried."""
        if len(jobs) > 1:
            log.warning("%s; sending its items one by one", reverted)
            for job in jobs:
                await self._send_task_item(key, job)
            return
        job = jobs[0]
        if reverted.error in SETTLED_ERRORS:
            self._settle(job, JobState.EXPIRED, f"already settled on-chain ({reverted.error})")
        elif reverted.error is None:
            # Not one of the coordinator's errors (an endpoint that says "revert" for something else, a revert
            # without data): refused a few times before the node believes it.
            self._item_refused([job], str(reverted))
        elif job.failure is None:
            # The coordinator will not take this output (e.g. too large): failure is an answer, report it.
            log.warning("request %d: %s; reporting the failure instead", job.request_id, reverted)
            self._store.update(job, JobState.COMPUTED, failure=f"delivery refused: {reverted.error or reverted}")
            self.enqueue(job)
        else:
            self._settle(job, JobState.FAILED, str(reverted))

    async def _send_task_item(self, key: Key, job: Job) -> None:
        """One item of a batch whose simulation reverted, sent alone; its failure is its own (classified as in
        `_send_task`), never the batch's."""
        try:
            await self._send(key, [job])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            action = classify(exc)
            CONDITIONS.count("send", action)
            if action is Action.REFUSED:
                self._item_refused([job], str(exc))
            else:
                self._requeue([job], exc, retry_after_s=getattr(exc, "retry_after_s", None))

    async def _send_refused(self, tx: StoredTx, error: str, quiet: bool, action: Action) -> None:
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
        slot = (tx.sender.lower(), tx.nonce)
        if "underpriced" not in message:  # an underpriced rebroadcast means the pool has it already
            count, first = self._tx_refusals.get(slot, (0, time.monotonic()))
            self._tx_refusals[slot] = (count + 1, first)
            if count + 1 >= MAX_TX_REFUSALS and time.monotonic() - first >= TX_REFUSAL_WINDOW_S:
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
        self._tx_refusals.pop(slot, None)
        log.error("nonce %d of %s refused by the RPC (%s); its jobs will be sent again", tx.nonce, tx.sender, error)
        jobs = await self._abandon(tx, error, requeue=False)
        if action is Action.REFUSED:
            self._item_refused(jobs, error)
        else:
            self._pause_key(self._by_address[tx.sender.lower()], error)
            self._requeue(jobs, RuntimeError(error), counts=False)

    async def _nonce_taken(self, tx: StoredTx) -> None:
        """The chain already has a transaction at this nonce that is none of ours on record: resync, resend."""
        for tx_hash in tx.hashes:
            if await self._receipt(tx_hash) is not None:
                return  # one of ours was mined: the tracker settles it
        await self._abandon(tx, "nonce too low", taken=True)

    async def _abandon(self, tx: StoredTx, reason: str, *, requeue: bool = True, taken: bool = False) -> list[Job]:
        """A signed transaction that will not be mined as it is: its jobs go back to the queue (after a back-off,
        with `requeue`; else the caller decides) and its nonce is accounted for. `taken`: another transaction holds
        the nonce already, so it is just dropped. Otherwise, when a later nonce of the key is open, the nonce is
        filled with a 0-value transfer to self (the later ones would wait for it for ever); when it is the key's
        newest, the key sends its next transaction at it. A resync never moves the key's next nonce below an open
        transaction of its own. Returns the jobs to be sent again."""
        key = self._by_address[tx.sender.lower()]
        jobs = [j for rid, _ in tx.items if (j := self._carried.pop(rid, None) or self._store.get(rid)) is not None]
        for job in jobs:
            if job.state is JobState.SUBMITTED:
                self._store.update(job, JobState.COMPUTED, tx_hash=None, nonce=None)
        jobs = [j for j in jobs if j.state is JobState.COMPUTED]
        async with key.lock:
            later = any(t.sender.lower() == tx.sender.lower() and t.nonce > tx.nonce for t in self._open.values())
            if later and not taken:
                self._fill(tx, key, reason)
            else:
                tx.state = "failed"
                self._store.update_tx(tx)
                self._untrack(tx)
                if not taken:
                    key.next_nonce = min(key.next_nonce, tx.nonce)  # reused by the next send
                try:
                    pending = await self._pending_nonce(key)
                    key.next_nonce = max(key.next_nonce if not taken else 0, pending, self._top_open(key) + 1)
                    if not later or taken:
                        log.info("sender %s: next nonce %d (%s)", key.address, key.next_nonce, reason)
                except Exception as exc:  # the jobs must not be lost meanwhile; the next send resyncs first
                    key.resync = True
                    log.warning("sender %s: nonce resync failed (%s); retried before the next send", key.address, exc)
        if requeue:
            self._requeue(jobs, RuntimeError(reason))
        return jobs

    def _top_open(self, key: Key) -> int:
        """The highest nonce of `key` with an open transaction (-1: none)."""
        address = key.address.lower()
        return max((t.nonce for t in self._open.values() if t.sender.lower() == address), default=-1)

    def _fill(self, tx: StoredTx, key: Key, reason: str) -> None:
        """Re-signs `tx` as a 0-value transfer to self at the same nonce (fees raised as for a replacement), so the
        key's later transactions are not held behind a nonce that nothing fills. It stays tracked."""
        base = self.head.base_fee_wei if self.head else 0
        new_max, new_tip, _ = delivery.replacement_fees(
            tx.request, base, self._policy.max_fee_per_gas_wei, self._policy.bump_percent
        )
        request = {
            **tx.request,
            "to": tx.sender,
            "data": "0x",
            "gas": delivery.CANCEL_GAS,
            "maxFeePerGas": new_max,
            "maxPriorityFeePerGas": new_tip,
        }
        signed = key.account.sign_transaction(request)
        tx.hashes.append("0x" + signed.hash.hex())
        self.call_hashes.add(tx.hashes[-1].lower())
        tx.items, tx.raw, tx.request = [], bytes(signed.raw_transaction), request
        self._tx_refusals.pop((tx.sender.lower(), tx.nonce), None)  # a new payload: its own refusals count
        self._store.update_tx(tx)
        self._sent_at[(tx.sender.lower(), tx.nonce)] = 0.0  # the tracker rebroadcasts it at its next check
        log.warning(
            "nonce %d of %s filled with a 0-value transfer (%s): a later nonce is open", tx.nonce, tx.sender, reason
        )
