"""Confirmation: every open transaction tracked to its receipt, and its jobs settled from the receipt's events.

Guarantees:
- Every open transaction is checked on each head (or every `receipt_poll_s`), each on its own: one check's failure
  does not cost the others theirs. While every check fails the loop backs off (capped) and says so once.
- A receipt marks a transaction mined (from a check, or from an `eth_sendRawTransactionSync` answer); once it is
  `confirmations` deep its jobs settle from the receipt's events, in one commit with the transaction: confirmed
  (delivered), failed (failure reported, item refused, or reverted twice), or expired (someone else settled the
  request first). Outcomes come only from the coordinator's own logs. A delivery with a proof settles by its
  verdict: valid (`RequestFulfilled`) confirmed, verification `valid`; held for an optimistic verdict
  (`VerificationPending`) confirmed, verification `pending until <verdictBy>` (node/chain/reclaim.py's `Finalizer`
  settles it later); rejected (`DeliveryRejected`) failed, verification `rejected`.
- A reorg at or below a mined transaction's block makes it pending again: it is tracked (and, if it vanished,
  replaced at its nonce by `node.chain.resend`) as if it had never been mined.
- An unmined transaction is handed to `Resender` (bump or rebroadcast); a mined one after a restart has its receipt
  read again, or is pending again when none is found.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from web3.exceptions import TransactionNotFound

from node.chain.broadcast import Broadcaster
from node.chain.commitments import COMMITTED
from node.chain.delivery import with_proof
from node.chain.env import TxBooks, TxEnv
from node.chain.resend import Resender
from node.chain.rpc import RpcPool, classify
from node.jobs.outcomes import PENDING_UNTIL, VERIFICATION_REJECTED, VERIFICATION_VALID, Outcomes
from node.jobs.states import JobState
from node.jobs.store import StoredTx
from node.observability.conditions import CONDITIONS
from node.retry import backoff_s, wait_set

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

#: Coordinator errors that mean "nothing to do here", as opposed to a delivery that is wrong.
#: The SubscriptionManager's: the interval is over (or cancelled), has its `redundancy` deliveries, or has ours.
#: `NoSlotLeft`: every slot of a verified request is taken by deliveries awaiting a verdict. `CommitClosed`: a
#: consensus request's commit phase is over (every slot committed, or its window passed). (`AlreadyCommitted`,
#: `ALREADY_COMMITTED`, is not among them: the commitment is ours, mined unseen, and it is revealed.)
ALREADY_COMMITTED = "AlreadyCommitted"
SETTLED_ERRORS = frozenset(
    {
        "CommitClosed",
        "AlreadyServed",
        "RequestClosed",
        "DeadlinePassed",
        "NoSlotLeft",
        "IntervalNotActive",
        "IntervalFull",
        "AlreadyDelivered",
    }
)
#: Coordinator errors that mean "this node cannot serve this request the way it tried" (a proof it did not give, a
#: verifier that could not judge what it gave: the operator's `[chain] verifiers` do not match the chain): never
#: reported failed, since the request may still be served by a node configured right.
#: `ModelDigestMismatch`: a consensus request that requires a model digest other than the one this node committed.
#: `ConsensusRequired`: a plain delivery to a consensus request (the node commits and reveals instead).
NOT_SERVED_ERRORS = frozenset(
    {"ProofRequired", "VerifierFailed", "NoVerifier", "ModelDigestMismatch", "ConsensusRequired"}
)


def not_served(error: str | None, shown: str | None = None) -> str:
    """Why a job whose delivery the coordinator refused with `error` (one of `NOT_SERVED_ERRORS`) is skipped; `shown`:
    the error with its arguments, said in place of its name when given."""
    said = shown or error
    if error == "ModelDigestMismatch":
        return (
            f"the request requires a model digest other than the one this node committed for the model ({said}):"
            " only nodes committed to that digest may serve it"
        )
    if error == "ConsensusRequired":
        return (
            f"the coordinator refused a plain delivery ({said}): the request is a consensus request, whose nodes"
            " commit and then reveal; this node's coordinator ABI has no consensus module (rebuild the contracts)"
        )
    if error == "ProofRequired":
        return (
            f"the coordinator refused a delivery without a proof ({said}): the request names a verifier; list it in"
            " [chain] verifiers to serve such requests"
        )
    return (
        f"the coordinator refused the delivery ({said}): the request's verifier could not judge it; check the"
        " verifier's kind in [chain] verifiers (attestation or optimistic) against the contract at that address"
    )


async def receipt_of(rpc: RpcPool, tx_hash: str) -> Any:
    """The receipt of `tx_hash`, or None while it is not mined."""
    try:
        return await rpc.call(
            "eth_getTransactionReceipt",
            lambda w3: w3.eth.get_transaction_receipt(tx_hash),  # type: ignore[arg-type]
        )
    except TransactionNotFound:
        return None


class Confirmer:
    """Tracks open transactions to their receipts and settles the jobs they carried."""

    def __init__(
        self,
        env: TxEnv,
        books: TxBooks,
        *,
        broadcaster: Broadcaster,
        resender: Resender,
        metrics: Metrics | None = None,
        on_finished: Callable[[], None] = lambda: None,
    ) -> None:
        self._env = env
        self._books = books
        self._broadcaster = broadcaster
        self._resender = resender
        self._metrics = metrics
        self._on_finished = on_finished
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Checks open transactions now (a new head, a reorg) rather than at the next poll."""
        self._wake.set()

    def on_reorg(self, fork: int) -> None:
        """Transactions mined at or above the fork are tracked again as pending."""
        for tx in self._books.ledger.all():
            if tx.mined_block is not None and tx.mined_block >= fork:
                tx.state, tx.mined_block = "pending", None
                tx.sent_block = fork
                self._books.ledger.set_receipt(tx, None)
                self._env.store.update_tx(tx)
        self._wake.set()

    async def run(self) -> None:
        """Checks open transactions on each head (or every `receipt_poll_s`) until cancelled. Whatever the RPC
        answers, the loop goes on; while checks fail it backs off (capped) and says so once, not once per check."""
        failures = 0
        while True:
            await wait_set(self._wake, self._env.policy.receipt_poll_s)
            self._wake.clear()
            if not self._books.ledger:
                continue
            try:
                await self._check_open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                CONDITIONS.set("receipts", f"cannot check transactions ({type(exc).__name__}); backing off")
                log.debug("receipt checks failed: %s", exc)
                await asyncio.sleep(backoff_s(failures, self._env.policy.receipt_poll_s, 30.0))  # a back-off
            else:
                if failures:
                    failures = 0
                    CONDITIONS.set("receipts", None)

    def on_receipt(self, tx: StoredTx, receipt: Any) -> None:
        """A receipt of an open transaction: it is mined; settled at once if that is deep enough."""
        if not self._books.ledger.is_open(tx) or tx.state != "pending":
            return
        self._books.ledger.set_receipt(tx, receipt)
        tx.state, tx.mined_block = "mined", int(receipt["blockNumber"])
        sent_at = self._books.ledger.sent_at(tx)
        if self._metrics is not None and sent_at:
            self._metrics.observe_mined(time.monotonic() - sent_at)
        head = max(self._env.view.head_number, tx.mined_block)  # the receipt proves its block exists
        if head >= tx.mined_block + self._env.policy.confirmations:
            self._finish(tx, receipt)  # records the block with the settled jobs, in the same commit
        else:
            self._env.store.update_tx(tx)

    async def _check_open(self) -> None:
        """Checks every open transaction, each on its own. Raises the first failure when every check failed (the loop
        backs off then); a partial failure is only recorded (the next round comes soon anyway)."""
        results = await asyncio.gather(
            *(self._check_one(tx) for tx in self._books.ledger.all()), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, Exception)]
        for error in errors:
            CONDITIONS.count("rpc", classify(error))
        if errors and len(errors) == len(results):
            raise errors[0]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled

    async def _check_one(self, tx: StoredTx) -> None:
        if not self._books.ledger.is_open(tx):
            return  # settled since this check was scheduled (its sync send's answer came first)
        if tx.state == "pending":
            stale = self._resender.stale(tx)
            if self._broadcaster.awaiting(tx) and not stale:
                return  # the sync send's answer brings the receipt
            for tx_hash in reversed(tx.hashes):
                receipt = await receipt_of(self._env.rpc, tx_hash)
                if receipt is not None:
                    self.on_receipt(tx, receipt)
                    return
            await self._resender.unmined(tx, stale=stale)
            return
        if tx.mined_block is not None and self._env.view.head_number >= tx.mined_block + self._env.policy.confirmations:
            receipt = self._books.ledger.receipt(tx)
            if receipt is None:  # resumed after a restart
                for tx_hash in tx.hashes:
                    receipt = await receipt_of(self._env.rpc, tx_hash)
                    if receipt is not None:
                        break
                else:
                    tx.state, tx.mined_block = "pending", None
                    return
                if not self._books.ledger.is_open(tx):
                    return  # settled by another check while this one waited for the receipt
            self._finish(tx, receipt)

    def _finish(self, tx: StoredTx, receipt: Any) -> None:
        """Settles the jobs of a mined, confirmed transaction from its receipt."""
        ok = int(receipt["status"]) == 1
        logs = list(receipt["logs"])
        outcomes = self._env.abi.delivery_outcomes(logs, tx.sender, self._env.coordinator) if ok else {}
        if ok and self._env.manager is not None:  # an interval's delivery: the manager's IntervalFulfilled
            outcomes.update(self._env.manager.abi.interval_outcomes(logs, tx.sender, self._env.manager.address))
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        gas_each = int(receipt["gasUsed"]) // max(1, len(tx.items))
        if self._metrics is not None:
            try:
                self._metrics.observe_receipt(tx.sender, receipt)
            except Exception:  # a figure for the operator must never keep a transaction from settling
                log.exception("could not record the receipt of nonce %d in the metrics", tx.nonce)
        details = self._env.abi.fulfilled_details(logs, tx.sender, self._env.coordinator) if outcomes else {}
        held: dict[int, dict[str, Any]] = {}  # deliveries held for an optimistic verdict: when it is due
        if "pending" in outcomes.values():
            held = self._env.abi.event_fields("VerificationPending", logs, tx.sender, self._env.coordinator)
        with self._env.store.transaction():  # one commit for the transaction and all the jobs it carried
            self._record_outcomes(details)
            self._settle_items(tx, outcomes, ok, tx_hash, gas_each, details, held)
            tx.state = "confirmed" if ok else "failed"
            self._env.store.update_tx(tx)
        self._books.ledger.close(tx, receipt)
        self._books.keys.unpause(tx.sender)
        if ok and tx.items and CONDITIONS.get("sending") is not None:
            CONDITIONS.set("sending", None)  # a delivery went through: whatever failed before is over
        self._on_finished()

    def _record_outcomes(self, details: dict[int, dict[str, Any]]) -> None:
        """Records, for each delivery in the receipt, whether the consumer's callback ran (`callbackOk`) and the fee
        credited to the node (the event's `fee`, when the coordinator's event carries it)."""
        record = Outcomes(self._env.store)
        for rid, fields in details.items():
            fee = fields.get("fee")
            record.set(rid, callback_ok=bool(fields.get("callbackOk")), fee_earned=None if fee is None else int(fee))

    def _settle_items(
        self,
        tx: StoredTx,
        outcomes: dict[int, str],
        ok: bool,
        tx_hash: str,
        gas_each: int,
        details: dict[int, dict[str, Any]],
        held: dict[int, dict[str, Any]],
    ) -> None:
        """Moves each job `tx` carried on from `submitted`, by its outcome in the receipt (`ok`: it did not revert;
        `held`: the `VerificationPending` fields of deliveries an optimistic verifier holds)."""
        settle = self._books.settler.settle
        record = Outcomes(self._env.store)
        for rid, _failed in tx.items:
            job = self._books.ledger.drop(rid) or self._env.store.get(rid)
            if job is None or job.state is not JobState.SUBMITTED:
                continue
            job.tx_hash = tx_hash
            outcome = outcomes.get(rid)
            if not ok:
                if self._books.history.reverted(rid) > 1:
                    settle(job, JobState.FAILED, f"delivery tx {tx_hash} reverted twice")
                else:
                    log.warning("request %d: tx %s reverted on-chain; sending it again", rid, tx_hash)
                    self._env.store.update(job, JobState.COMPUTED)
                    self._books.queue.append(job)
            elif outcome == "pending":
                verdict_by = held.get(rid, {}).get("verdictBy")
                record.set(rid, verification=f"{PENDING_UNTIL}{verdict_by}")
                log.info("request %d: delivered with a proof; verification pending until %s", rid, verdict_by)
                settle(job, JobState.CONFIRMED, None, tx_hash=tx_hash, gas=gas_each, block=tx.mined_block)
            elif outcome in ("committed", ALREADY_COMMITTED):  # a consensus request's commitment: its reveal follows
                record.set(rid, verification=COMMITTED)
                settle(
                    job,
                    JobState.CONFIRMED,
                    None,
                    tx_hash=tx_hash,
                    gas=gas_each,
                    block=tx.mined_block,
                    detail={"committed": True},
                )
            elif outcome == "rejected":
                record.set(rid, verification=VERIFICATION_REJECTED)
                settle(job, JobState.FAILED, f"the request's verifier rejected the delivery (tx {tx_hash})")
            elif outcome == "fulfilled":
                if with_proof(job):
                    record.set(rid, verification=VERIFICATION_VALID)
                settle(
                    job,
                    JobState.CONFIRMED,
                    None,
                    tx_hash=tx_hash,
                    gas=gas_each,
                    block=tx.mined_block,
                    detail=details.get(rid, {}),
                )
            elif outcome == "reported":
                settle(job, JobState.FAILED, f"failure reported on-chain: {job.failure}", tx_hash=tx_hash)
            elif outcome in SETTLED_ERRORS:
                settle(job, JobState.EXPIRED, f"already settled on-chain ({outcome})")
            elif outcome in NOT_SERVED_ERRORS:
                settle(job, JobState.SKIPPED, not_served(outcome))
            else:
                settle(job, JobState.FAILED, f"delivery refused on-chain: {outcome or 'no event'}")
