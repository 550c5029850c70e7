"""Sends the node's transactions: simulate, batch, sign with local nonces, track, bump, resend, settle the jobs.

Guarantees:
- One nonce counter per key, synced from the chain at start and again on "nonce too low"; transactions are
  pipelined (many in flight per key) and never share or skip a nonce: every signed transaction is committed to the
  store before it is broadcast, and a nonce handed out is always filled (by the transaction, its replacement, or a
  0-value cancel when a reorg removed everything it carried).
- Ready jobs are grouped: one job goes out as `deliver`/`reportFailure`, several as one `deliverBatch`.
- Every transaction is simulated (`eth_call` at its gas limit) before it is signed: a request already settled is
  not sent (its job expires); a delivery the coordinator would refuse becomes an on-chain failure report; and no
  nonce is spent while the RPC does not answer.
- The gas limit is a bound computed from the items (each gets its whole callback limit), not an `eth_estimateGas`:
  an estimate runs the transaction a dozen times over, and for a batch it can settle on a limit at which the
  coordinator skips items instead of reverting. Unused gas is not paid for.
- EIP-1559 fees from the latest head, never above the operator's cap; a transaction unmined after
  `bump_after_blocks` blocks is re-signed with fees raised by `bump_percent` (or rebroadcast as is at the cap), which
  also resends one the mempool dropped.
- Up to `max_concurrent_sends` transactions are simulated and signed at once (pipelining). A batch goes out at once
  unless more jobs are being computed *and* a transaction of ours is still unmined: then a partial batch waits up to
  `BATCH_LINGER_S` to fill, so a burst becomes a few full batches rather than many small transactions (each costs
  the chain a block's work on a devnet, and 21,000 gas anywhere). A lone request never waits.
- Where the endpoint has `eth_sendRawTransactionSync` (EIP-7966) a transaction is sent that way, in the background:
  the answer is its receipt, so a delivery costs two RPC calls (simulate, send). Elsewhere (or when that call times
  out) receipts are polled on every head.
- Receipts are tracked for every open transaction; jobs settle from the receipt's events once `confirmations` deep:
  confirmed (delivered), failed (failure reported or item refused), or expired (someone else settled it first).
- On restart, open transactions are loaded from the store and rebroadcast, then tracked as before.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from node.chain import delivery
from node.chain.broadcast import Broadcaster
from node.chain.contracts import CoordinatorAbi
from node.chain.listener import Head, as_head
from node.chain.rpc import RpcError, RpcPool, as_reverted, is_revert
from node.chain.tracking import SETTLED_ERRORS, Key, Tracking, TxPolicy
from node.errors import RpcUnavailable, TxReverted
from node.jobs.store import Job, JobState, JobStore, StoredTx

if TYPE_CHECKING:
    from node.metrics import Metrics

log = logging.getLogger(__name__)

#: How long, at most, a partial batch waits to fill while one of the node's transactions is unmined.
BATCH_LINGER_S = 0.02
SEND_BACKOFF_BASE_S = 0.25
SEND_BACKOFF_MAX_S = 10.0


class TxManager(Tracking):
    """Owns every transaction of the node's keys, from a ready job to its settled state."""

    def __init__(
        self,
        rpc: RpcPool,
        store: JobStore,
        abi: CoordinatorAbi,
        coordinator: ChecksumAddress,
        accounts: list[LocalAccount],
        policy: TxPolicy,
        *,
        on_settled: Callable[[Job], None] = lambda job: None,
        metrics: Metrics | None = None,
    ) -> None:
        self._rpc = rpc
        self._store = store
        self._abi = abi
        self._coordinator = coordinator
        self._keys = [Key(a) for a in accounts]
        self._by_address = {k.address.lower(): k for k in self._keys}
        self._policy = policy
        self._on_settled = on_settled
        #: Jobs still being computed (set by the node: the scheduler's count); a partial batch lingers only for them.
        self.upcoming: Callable[[], int] = lambda: 0
        #: Called when a confirmation leaves nothing open, queued or computing (the node trims its heap then).
        self.on_idle: Callable[[], None] = lambda: None
        #: Jobs settled (confirmed, failed or expired at the send) since the start.
        self.settled = 0
        self._ready: collections.deque[Job] = collections.deque()
        self._ready_event = asyncio.Event()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._open: dict[tuple[str, int], StoredTx] = {}
        self._receipts: dict[tuple[str, int], Any] = {}
        #: Jobs carried by open transactions, by request id.
        self._carried: dict[int, Job] = {}
        self._first_failure: dict[int, float] = {}
        self._reverts: dict[int, int] = {}
        self._rr = 0
        self._send_slots = asyncio.Semaphore(policy.max_concurrent_sends)
        self._broadcaster = Broadcaster(
            rpc, spawn=self._spawn, on_receipt=self._on_receipt, on_refused=self._send_refused
        )
        self._tg: asyncio.TaskGroup | None = None
        #: monotonic time each open transaction was last (re)signed, by slot (not stored: after a restart, 0).
        self._sent_at: dict[tuple[str, int], float] = {}
        self._spawn_later: list[Coroutine[Any, Any, None]] = []
        #: Receipts awaited by `send_call` callers, by (sender, nonce).
        self._calls: dict[tuple[str, int], asyncio.Future[Any]] = {}
        #: Every hash of a `send_call` transaction, known from signing on (and from the store after a restart).
        self.call_hashes: set[str] = store.call_tx_hashes()
        self._chain_id = 0
        self.head: Head | None = None
        self._cap_warned = False
        #: Delivery transactions by outcome, for metrics.
        self.sent = 0
        self.replaced = 0
        #: Observes confirmation times, gas and delivery latencies, when set.
        self.metrics = metrics

    @property
    def addresses(self) -> list[ChecksumAddress]:
        return [k.address for k in self._keys]

    @property
    def in_flight(self) -> int:
        return len(self._open)

    @property
    def queued(self) -> int:
        return len(self._ready)

    # ------------------------------------------------------------------------------------------------ start

    async def start(self) -> None:
        """Syncs chain id, head and nonces; reloads open transactions from the store and rebroadcasts them."""
        self._chain_id = await self._rpc.call("eth_chainId", lambda w3: w3.eth.chain_id)
        if self.head is None:
            block = await self._rpc.call("eth_getBlockByNumber", lambda w3: w3.eth.get_block("latest"))
            self.head = as_head(block)
        for key in self._keys:
            chain_next = await self._pending_nonce(key)
            stored = self._store.open_txs(key.address)
            key.next_nonce = max([chain_next] + [t.nonce + 1 for t in stored])
            for tx in stored:
                self._track(tx, key, resumed=True)
                for rid, _ in tx.items:
                    job = self._store.get(rid)
                    if job is not None and job.state is JobState.SUBMITTED:
                        self._carried[rid] = job
                if tx.state == "pending":
                    await self._broadcaster.send(tx, quiet=True)
            log.info(
                "sender %s ready: chain %d, next nonce %d, %d transaction(s) resumed",
                key.address,
                self._chain_id,
                key.next_nonce,
                len(stored),
            )

    async def _pending_nonce(self, key: Key) -> int:
        return int(
            await self._rpc.call(
                "eth_getTransactionCount", lambda w3: w3.eth.get_transaction_count(key.address, "pending")
            )
        )

    # ----------------------------------------------------------------------------------------------- inputs

    def enqueue(self, job: Job) -> None:
        """Queues a job that has its output (or its failure reason) for sending."""
        self._ready.append(job)
        self._ready_event.set()

    def on_head(self, head: Head) -> None:
        self.head = head
        self._wake.set()

    def on_reorg(self, fork: int) -> None:
        """Transactions mined at or above the fork are tracked again as pending."""
        for tx in self._open.values():
            if tx.mined_block is not None and tx.mined_block >= fork:
                tx.state, tx.mined_block = "pending", None
                tx.sent_block = fork
                self._receipts.pop((tx.sender.lower(), tx.nonce), None)
                self._store.update_tx(tx)
        self._wake.set()

    # ------------------------------------------------------------------------------------------------- loops

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for coro in self._spawn_later:
                tg.create_task(coro)
            self._spawn_later.clear()
            tg.create_task(self._send_loop(), name="tx-send")
            tg.create_task(self._track_loop(), name="tx-track")
        self._tg = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` beside the loops (an error in it stops the node like one in the loops); before `run`, queued."""
        if self._tg is None:
            self._spawn_later.append(coro)
        else:
            self._tg.create_task(coro)

    async def _send_loop(self) -> None:
        while True:
            if not self._ready:
                self._ready_event.clear()
                await self._ready_event.wait()
                continue
            await self._send_slots.acquire()
            key = await self._free_key()
            await self._linger()
            batch: list[Job] = []
            now = time.time()
            while self._ready and len(batch) < self._policy.max_batch:
                job = self._ready.popleft()
                if job.state is not JobState.COMPUTED:
                    continue  # orphaned or settled meanwhile
                if job.request.deadline <= now:
                    self._settle(job, JobState.EXPIRED, "deadline passed before delivery")
                    continue
                batch.append(job)
            if not batch:
                self._release(key)
                continue
            self._spawn(self._send_task(key, batch))

    async def _linger(self) -> None:
        """Under load (a transaction of ours unmined), waits up to BATCH_LINGER_S for a partial batch to fill."""
        if self._policy.max_batch == 1:
            return
        deadline = time.monotonic() + BATCH_LINGER_S
        while (
            len(self._ready) < self._policy.max_batch
            and self.upcoming() > 0
            and any(t.state == "pending" for t in self._open.values())
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._ready_event.clear()
            self._room.clear()
            waits = {asyncio.ensure_future(self._ready_event.wait()), asyncio.ensure_future(self._room.wait())}
            _, pending = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    async def _send_task(self, key: Key, batch: list[Job]) -> None:
        try:
            await self._send(key, batch)
        except RpcUnavailable as exc:
            self._requeue(batch, exc)
            await asyncio.sleep(self._backoff(batch[0]))
        finally:
            self._release(key)

    def _release(self, key: Key) -> None:
        key.reserved -= 1
        self._send_slots.release()
        self._room.set()

    def _backoff(self, job: Job) -> float:
        first = self._first_failure.get(job.request_id, time.monotonic())
        waited = time.monotonic() - first
        return min(SEND_BACKOFF_MAX_S, max(SEND_BACKOFF_BASE_S, waited / 4))

    def _requeue(self, jobs: list[Job], exc: Exception) -> None:
        now = time.monotonic()
        for job in reversed(jobs):
            first = self._first_failure.setdefault(job.request_id, now)
            if now - first > self._policy.retry_window_s:
                self._settle(job, JobState.FAILED, f"could not send for {now - first:.0f} s: {exc}")
            else:
                self._ready.appendleft(job)
        self._ready_event.set()  # the send loop may be asleep on an empty queue (an abandoned tx requeues from afar)
        log.warning("%d job(s) waiting to be sent: %s", len(jobs), exc)

    async def _free_key(self, *, only: str | None = None) -> Key:
        """The next key (round-robin; or the key of address `only`) with room for another transaction in flight."""
        while True:
            for i in range(len(self._keys)):
                key = self._keys[(self._rr + i) % len(self._keys)]
                if only is not None and key.address.lower() != only.lower():
                    continue
                if key.open + key.reserved < self._policy.max_pending_per_key:
                    self._rr = (self._rr + i + 1) % len(self._keys)
                    key.reserved += 1
                    return key
            self._room.clear()
            await self._room.wait()

    # -------------------------------------------------------------------------------------------------- send

    async def send_call(
        self, data: bytes, gas: int, what: str, *, sender: str | None = None
    ) -> tuple[StoredTx, asyncio.Future[Any]]:
        """Signs and sends one coordinator call that carries no job (a delegated request) with the same keys,
        nonces, fee cap, tracking and replacement as deliveries. Returns the transaction (its `hashes` grow when it
        is replaced) and a future of its receipt once it is confirmed; the future fails if the transaction is
        abandoned. `sender` picks the key (the one the call was simulated from). Raises `RpcUnavailable` when it
        cannot be sent now, `TxReverted` when fees are over the cap."""
        await self._send_slots.acquire()
        key = await self._free_key(only=sender)
        try:
            base = self.head.base_fee_wei if self.head else 0
            fees = delivery.fees(base, self._policy.max_fee_per_gas_wei, self._policy.priority_fee_wei)
            if fees is None:
                raise TxReverted(f"{what}: base fee {base} wei is above max_fee_per_gas_wei; try again later")
            async with key.lock:
                tx = self._sign(key, data, gas, fees, [])
                self.call_hashes.add(tx.hashes[0].lower())
                future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                self._calls[(tx.sender.lower(), tx.nonce)] = future
        finally:
            self._release(key)
        log.info("sent %s nonce %d tx %s", what, tx.nonce, tx.hashes[-1])
        await self._broadcaster.send(tx)
        return tx, future

    async def _send(self, key: Key, jobs: list[Job]) -> None:
        data = delivery.calldata(self._abi, jobs)
        what = delivery.describe(jobs)
        gas = delivery.gas_limit(jobs)
        call = {"from": key.address, "to": self._coordinator, "data": "0x" + data.hex(), "gas": hex(gas)}
        try:
            await self._rpc.request("eth_call", [call, "latest"])
        except RpcError as exc:
            if not is_revert(exc):
                raise
            await self._refused(key, jobs, as_reverted(exc, self._abi, what))
            return
        base = self.head.base_fee_wei if self.head else 0
        fees = delivery.fees(base, self._policy.max_fee_per_gas_wei, self._policy.priority_fee_wei)
        if fees is None:
            if not self._cap_warned:
                log.warning(
                    "base fee %d wei is above the cap max_fee_per_gas_wei=%d: holding %d job(s) until it falls",
                    base,
                    self._policy.max_fee_per_gas_wei,
                    len(jobs),
                )
                self._cap_warned = True
            for job in reversed(jobs):
                self._ready.appendleft(job)
            self._wake.clear()
            await self._wake.wait()
            return
        self._cap_warned = False
        async with key.lock:
            tx = self._sign(key, data, gas, fees, jobs)
            for job in jobs:
                self._carried[job.request_id] = job
                self._first_failure.pop(job.request_id, None)
        self.sent += 1
        log.debug("sent %s nonce %d tx %s", what, tx.nonce, tx.hashes[-1])
        await self._broadcaster.send(tx)

    def _sign(self, key: Key, data: bytes, gas: int, fees: tuple[int, int], jobs: list[Job]) -> StoredTx:
        """Signs a coordinator call at the key's next nonce, commits it with the jobs it carries (before it leaves
        the process) and tracks it. Under `key.lock`."""
        unsigned: dict[str, Any] = {
            "to": self._coordinator,
            "data": "0x" + data.hex(),
            "value": 0,
            "gas": gas,
            "nonce": key.next_nonce,
            "chainId": self._chain_id,
            "maxFeePerGas": fees[0],
            "maxPriorityFeePerGas": fees[1],
            "type": 2,
        }
        signed = key.account.sign_transaction(unsigned)
        tx = StoredTx(
            sender=key.address,
            nonce=key.next_nonce,
            hashes=["0x" + signed.hash.hex()],
            raw=bytes(signed.raw_transaction),
            request=unsigned,
            items=[(j.request_id, j.failure is not None) for j in jobs],
            sent_block=self.head.number if self.head else 0,
        )
        self._store.add_tx(tx, jobs)
        key.next_nonce += 1
        self._track(tx, key)
        return tx

    async def _refused(self, key: Key, jobs: list[Job], reverted: Any) -> None:
        """The simulation reverted: settle or re-route what it carried."""
        if len(jobs) > 1:
            log.warning("%s; sending its items one by one", reverted)
            for job in jobs:
                await self._send(key, [job])
            return
        job = jobs[0]
        if reverted.error in SETTLED_ERRORS:
            self._settle(job, JobState.EXPIRED, f"already settled on-chain ({reverted.error})")
        elif job.failure is None:
            # The coordinator will not take this output (e.g. too large): failure is an answer, report it.
            log.warning("request %d: %s; reporting the failure instead", job.request_id, reverted)
            self._store.update(job, JobState.COMPUTED, failure=f"delivery refused: {reverted.error or reverted}")
            self.enqueue(job)
        else:
            self._settle(job, JobState.FAILED, str(reverted))

    async def _send_refused(self, tx: StoredTx, error: str, quiet: bool) -> None:
        """The RPC refused a transaction: known already, nonce taken, or invalid (its jobs go out again)."""
        message = error.lower()
        if "already known" in message or "already imported" in message:
            return
        if "nonce too low" in message:
            if not quiet:
                await self._nonce_taken(tx)
            return
        if quiet:
            log.info("rebroadcast of nonce %d: %s", tx.nonce, error)
            return
        log.error("nonce %d of %s refused by the RPC (%s); its jobs will be sent again", tx.nonce, tx.sender, error)
        await self._abandon(tx, error)

    async def _nonce_taken(self, tx: StoredTx) -> None:
        """The chain already has a transaction at this nonce that is none of ours on record: resync, resend."""
        for tx_hash in tx.hashes:
            if await self._receipt(tx_hash) is not None:
                return  # one of ours was mined: the tracker settles it
        await self._abandon(tx, "nonce too low")

    async def _abandon(self, tx: StoredTx, reason: str) -> None:
        """A signed transaction that can never be mined: free its nonce (resync) and queue its jobs again."""
        key = self._by_address[tx.sender.lower()]
        tx.state = "failed"
        self._store.update_tx(tx)
        self._untrack(tx)
        async with key.lock:
            key.next_nonce = await self._pending_nonce(key)
            log.info("sender %s: nonce resynced to %d (%s)", key.address, key.next_nonce, reason)
        jobs = [j for rid, _ in tx.items if (j := self._carried.pop(rid, None)) is not None]
        for job in jobs:
            if job.state is JobState.SUBMITTED:
                self._store.update(job, JobState.COMPUTED, tx_hash=None, nonce=None)
        self._requeue([j for j in jobs if j.state is JobState.COMPUTED], RuntimeError(reason))

    def _track(self, tx: StoredTx, key: Key, *, resumed: bool = False) -> None:
        slot = (tx.sender.lower(), tx.nonce)
        self._open[slot] = tx
        self._sent_at[slot] = 0.0 if resumed else time.monotonic()
        key.open += 1

    def _untrack(self, tx: StoredTx) -> None:
        if self._open.pop((tx.sender.lower(), tx.nonce), None) is not None:
            self._by_address[tx.sender.lower()].open -= 1
            self._receipts.pop((tx.sender.lower(), tx.nonce), None)
            self._sent_at.pop((tx.sender.lower(), tx.nonce), None)
            self._room.set()
        call = self._calls.pop((tx.sender.lower(), tx.nonce), None)
        if call is not None and not call.done():
            call.set_exception(RuntimeError(f"transaction {tx.hashes[-1]} was abandoned ({tx.state})"))
