"""The second half of a transaction's life: tracked to its receipt, replaced when it lingers, and its jobs settled.

`TxManager` (node/chain/tx.py) signs and sends; this mixin holds what happens after, on the same state.

Guarantees:
- Every open transaction is checked on each head (or every `receipt_poll_s`): a receipt marks it mined, and once it
  is `confirmations` deep its jobs settle from the receipt's events: confirmed (delivered), failed (failure
  reported, item refused, or reverted twice), or expired (someone else settled the request first).
- A transaction unmined after `bump_after_blocks` blocks and `BUMP_MIN_AGE_S` seconds is re-signed at the same
  nonce with fees raised by `bump_percent` (at the cap: rebroadcast as is); jobs orphaned meanwhile are dropped from
  it, and a transaction left with nothing to carry becomes a 0-value transfer, so the nonce is still filled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from web3.exceptions import TransactionNotFound

from node.chain import delivery
from node.chain.contracts import CoordinatorAbi
from node.chain.rpc import RpcPool, classify
from node.jobs.store import Job, JobState, JobStore, StoredTx
from node.observability.conditions import CONDITIONS
from node.retry import backoff_s

if TYPE_CHECKING:
    from node.chain.broadcast import Broadcaster
    from node.chain.heads import Head
    from node.observability.metrics import Metrics

log = logging.getLogger("node.chain.tx")

#: A transaction is replaced only when it is `bump_after_blocks` behind *and* this old: on a devnet that mines a block
#: per transaction (or a chain with sub-second blocks), blocks pass faster than a busy RPC answers.
BUMP_MIN_AGE_S = 3.0
#: A pending transaction is handed to the RPC again (as it is) this long after it was last (re)sent, blocks or no
#: blocks: a send lost on the way (a 502 that was the gateway's, a dropped connection) holds every later nonce of the
#: key, and a chain that mines only when there are transactions (a devnet) makes no blocks to count.
REBROADCAST_AFTER_S = 10.0
#: Coordinator errors that mean "nothing to do here", as opposed to a delivery that is wrong.
SETTLED_ERRORS = frozenset({"AlreadyServed", "RequestClosed", "DeadlinePassed"})


@dataclass(frozen=True)
class TxPolicy:
    """The operator's transaction settings: fee cap and tip (wei), replacement, confirmations, batching, in-flight and
    send ceilings, retry window (s)."""

    max_fee_per_gas_wei: int
    priority_fee_wei: int
    bump_percent: int = 20
    bump_after_blocks: int = 3
    confirmations: int = 0
    max_batch: int = 32
    max_pending_per_key: int = 64
    retry_window_s: float = 600.0
    receipt_poll_s: float = 1.0
    max_concurrent_sends: int = 4
    #: Ceilings on what one key hands to the RPC (new transactions, replacements and rebroadcasts alike).
    max_sends_per_s: float = 100.0
    max_sends_per_block: int = 256


@dataclass
class Key:
    """One sending key: its next nonce, transactions open and reserved, its lock, and whether it is paused (cannot
    send)."""

    account: LocalAccount
    next_nonce: int = 0
    open: int = 0
    #: Sends under way that will take a slot of `max_pending_per_key` once signed.
    reserved: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: Pauses in a row (a key that cannot send: no funds, ...) and the monotonic time the current one ends.
    pauses: int = 0
    paused_until: float = 0.0
    #: Set when a nonce resync failed: the next send resyncs first.
    resync: bool = False

    @property
    def address(self) -> ChecksumAddress:
        return self.account.address


class Tracking:
    """Receipts, replacement and settlement for `TxManager`; the attributes are the manager's, set in its
    `__init__`."""

    _rpc: RpcPool
    _store: JobStore
    _abi: CoordinatorAbi
    _coordinator: str
    _policy: TxPolicy
    _broadcaster: Broadcaster
    _by_address: dict[str, Key]
    _open: dict[tuple[str, int], StoredTx]
    _receipts: dict[tuple[str, int], Any]
    _carried: dict[int, Job]
    _first_failure: dict[int, float]
    _send_failures: dict[int, int]
    _refusals: dict[int, int]
    _first_refusal: dict[int, float]
    _reverts: dict[int, int]
    _sent_at: dict[tuple[str, int], float]
    _calls: dict[tuple[str, int], asyncio.Future[Any]]
    _wake: asyncio.Event
    _on_settled: Callable[[Job], None]
    _ready: collections.deque[Job]
    upcoming: Callable[[], int]
    on_idle: Callable[[], None]
    settled: int
    head: Head | None
    metrics: Metrics | None
    call_hashes: set[str]
    replaced: int

    def enqueue(self, job: Job) -> None:
        raise NotImplementedError

    def _untrack(self, tx: StoredTx) -> None:
        raise NotImplementedError

    def _key_ok(self, address: str) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------- track

    async def _track_loop(self) -> None:
        """Checks open transactions on each head (or every `receipt_poll_s`). Whatever the RPC answers, the loop goes
        on; while checks fail it backs off (capped) and says so once, not once per check."""
        failures = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._policy.receipt_poll_s)
            self._wake.clear()
            if not self._open:
                continue
            try:
                await self._check_open()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                CONDITIONS.set("receipts", f"cannot check transactions ({type(exc).__name__}); backing off")
                log.debug("receipt checks failed: %s", exc)
                await asyncio.sleep(backoff_s(failures, self._policy.receipt_poll_s, 30.0))  # a back-off
            else:
                if failures:
                    failures = 0
                    CONDITIONS.set("receipts", None)

    async def _receipt(self, tx_hash: str) -> Any:
        try:
            return await self._rpc.call(
                "eth_getTransactionReceipt",
                lambda w3: w3.eth.get_transaction_receipt(tx_hash),  # type: ignore[arg-type]
            )
        except TransactionNotFound:
            return None

    def _on_receipt(self, tx: StoredTx, receipt: Any) -> None:
        """A receipt of an open transaction: it is mined; settled at once if that is deep enough."""
        slot = (tx.sender.lower(), tx.nonce)
        if self._open.get(slot) is not tx or tx.state != "pending":
            return
        self._receipts[slot] = receipt
        tx.state, tx.mined_block = "mined", int(receipt["blockNumber"])
        if self.metrics is not None and self._sent_at.get(slot):
            self.metrics.observe_mined(time.monotonic() - self._sent_at[slot])
        head = max(self.head.number if self.head else 0, tx.mined_block)  # the receipt proves its block exists
        if head >= tx.mined_block + self._policy.confirmations:
            self._finish(tx, receipt)  # records the block with the settled jobs, in the same commit
        else:
            self._store.update_tx(tx)

    async def _check_one(self, tx: StoredTx) -> None:
        slot = (tx.sender.lower(), tx.nonce)
        if self._open.get(slot) is not tx:
            return  # settled since this check was scheduled (its sync send's answer came first)
        head = self.head.number if self.head else 0
        if tx.state == "pending":
            stale = (
                head - tx.sent_block >= self._policy.bump_after_blocks
                and time.monotonic() - self._sent_at.get(slot, 0.0) >= BUMP_MIN_AGE_S
            )
            if self._broadcaster.awaiting(tx) and not stale:
                return  # the sync send's answer brings the receipt
            for tx_hash in reversed(tx.hashes):
                receipt = await self._receipt(tx_hash)
                if receipt is not None:
                    self._on_receipt(tx, receipt)
                    return
            if stale:
                await self._replace(tx)
            elif time.monotonic() - self._sent_at.get(slot, 0.0) >= REBROADCAST_AFTER_S:
                self._sent_at[slot] = time.monotonic()
                await self._broadcaster.send(tx, quiet=True)
            return
        if tx.mined_block is not None and head >= tx.mined_block + self._policy.confirmations:
            receipt = self._receipts.get(slot)
            if receipt is None:  # resumed after a restart
                for tx_hash in tx.hashes:
                    receipt = await self._receipt(tx_hash)
                    if receipt is not None:
                        break
                else:
                    tx.state, tx.mined_block = "pending", None
                    return
                if self._open.get(slot) is not tx:
                    return  # settled by another check while this one waited for the receipt
            self._finish(tx, receipt)

    async def _check_open(self) -> None:
        """Checks every open transaction, each on its own: one check's failure does not cost the others theirs.
        Raises the first failure when every check failed (the loop backs off then); a partial failure is only
        recorded (the next round comes at the next head or `receipt_poll_s` anyway)."""
        results = await asyncio.gather(
            *(self._check_one(tx) for tx in list(self._open.values())), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, Exception)]
        for error in errors:
            CONDITIONS.count("rpc", classify(error))
        if errors and len(errors) == len(results):
            raise errors[0]
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancelled

    def _finish(self, tx: StoredTx, receipt: Any) -> None:
        """Settles the jobs of a mined, confirmed transaction from its receipt."""
        ok = int(receipt["status"]) == 1
        logs = list(receipt["logs"])
        outcomes = self._abi.delivery_outcomes(logs, tx.sender, self._coordinator) if ok else {}
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        gas_each = int(receipt["gasUsed"]) // max(1, len(tx.items))
        if self.metrics is not None:
            try:
                self.metrics.observe_receipt(tx.sender, receipt)
            except Exception:  # a figure for the operator must never keep a transaction from settling
                log.exception("could not record the receipt of nonce %d in the metrics", tx.nonce)
        with self._store.transaction():  # one commit for the transaction and all the jobs it carried
            self._settle_items(tx, outcomes, ok, tx_hash, gas_each)
            tx.state = "confirmed" if ok else "failed"
            self._store.update_tx(tx)
        call = self._calls.pop((tx.sender.lower(), tx.nonce), None)
        if call is not None and not call.done():
            call.set_result(receipt)
        self._untrack(tx)
        self._key_ok(tx.sender)
        if ok and tx.items and CONDITIONS.get("sending") is not None:
            CONDITIONS.set("sending", None)  # a delivery went through: whatever failed before is over
        if not self._open and not self._ready and self.upcoming() == 0:
            self.on_idle()

    def _settle_items(self, tx: StoredTx, outcomes: dict[int, str], ok: bool, tx_hash: str, gas_each: int) -> None:
        """Moves each job `tx` carried on from `submitted`, by its outcome in the receipt (`ok`: it did not revert)."""
        for rid, _failed in tx.items:
            job = self._carried.pop(rid, None) or self._store.get(rid)
            if job is None or job.state is not JobState.SUBMITTED:
                continue
            job.tx_hash = tx_hash
            outcome = outcomes.get(rid)
            if not ok:
                reverts = self._reverts[rid] = self._reverts.get(rid, 0) + 1
                if reverts > 1:
                    self._settle(job, JobState.FAILED, f"delivery tx {tx_hash} reverted twice")
                else:
                    log.warning("request %d: tx %s reverted on-chain; sending it again", rid, tx_hash)
                    self._store.update(job, JobState.COMPUTED)
                    self.enqueue(job)
            elif outcome == "fulfilled":
                self._settle(job, JobState.CONFIRMED, None, tx_hash=tx_hash, gas=gas_each, block=tx.mined_block)
            elif outcome == "reported":
                self._settle(job, JobState.FAILED, f"failure reported on-chain: {job.failure}", tx_hash=tx_hash)
            elif outcome in SETTLED_ERRORS:
                self._settle(job, JobState.EXPIRED, f"already settled on-chain ({outcome})")
            else:
                self._settle(job, JobState.FAILED, f"delivery refused on-chain: {outcome or 'no event'}")

    def _settle(
        self,
        job: Job,
        state: JobState,
        error: str | None,
        *,
        tx_hash: str | None = None,
        gas: int = 0,
        block: int | None = None,
    ) -> None:
        self._store.update(job, state, error=error, tx_hash=tx_hash or job.tx_hash)
        self.settled += 1
        rid = job.request_id
        for per_job in (self._first_failure, self._send_failures, self._refusals, self._first_refusal, self._reverts):
            per_job.pop(rid, None)
        took_ms = (time.monotonic() - job.seen_at) * 1000
        if state is JobState.CONFIRMED:
            if self.metrics is not None:
                self.metrics.observe_delivered(took_ms / 1000)
            log.info(
                "request %d: delivered %s in %.0f ms tx %s block %s gas %d",
                rid,
                job.model_name,
                took_ms,
                tx_hash,
                block,
                gas,
            )
        elif state is JobState.EXPIRED:
            log.info("request %d: skipped: %s", rid, error)
        else:
            log.error("request %d: %s after %.0f ms: %s", rid, state, took_ms, error)
        self._on_settled(job)

    # ------------------------------------------------------------------------------------------------ replace

    async def _replace(self, tx: StoredTx) -> None:
        """Re-signs an unmined transaction at the same nonce with higher fees (or rebroadcasts it at the cap)."""
        head = self.head
        assert head is not None
        key = self._by_address[tx.sender.lower()]
        new_max, new_tip, raised = delivery.replacement_fees(
            tx.request, head.base_fee_wei, self._policy.max_fee_per_gas_wei, self._policy.bump_percent
        )
        old_max = int(tx.request["maxFeePerGas"])
        live = [j for rid, _ in tx.items if (j := self._carried.get(rid)) is not None and j.state is JobState.SUBMITTED]
        waited = head.number - tx.sent_block
        tx.sent_block = head.number
        self._sent_at[(tx.sender.lower(), tx.nonce)] = time.monotonic()
        if not raised and len(live) == len(tx.items):
            log.warning(
                "nonce %d of %s unmined after %d blocks and its fee is at the cap (%d wei): rebroadcasting",
                tx.nonce,
                tx.sender,
                waited,
                old_max,
            )
            self._store.update_tx(tx)
            await self._broadcaster.send(tx, quiet=True)
            return
        request = {**tx.request, "maxFeePerGas": new_max, "maxPriorityFeePerGas": new_tip}
        if len(live) != len(tx.items):
            if live:
                request["data"] = "0x" + delivery.calldata(self._abi, live).hex()
            else:  # nothing left to carry (a reorg orphaned it): fill the nonce with a 0-value transfer to self
                request.update(to=tx.sender, data="0x", gas=delivery.CANCEL_GAS)
            tx.items = [(j.request_id, j.failure is not None) for j in live]
        signed = key.account.sign_transaction(request)
        tx.hashes.append("0x" + signed.hash.hex())
        if not tx.items:
            self.call_hashes.add(tx.hashes[-1].lower())
        tx.raw, tx.request = bytes(signed.raw_transaction), request
        self._store.update_tx(tx)
        for job in live:
            self._store.update(job, JobState.SUBMITTED, tx_hash=tx.hashes[-1])
        self.replaced += 1
        log.warning(
            "nonce %d of %s unmined after %d blocks: replaced with maxFeePerGas %d (was %d), tx %s",
            tx.nonce,
            tx.sender,
            waited,
            new_max,
            old_max,
            tx.hashes[-1],
        )
        await self._broadcaster.send(tx, quiet=True)
