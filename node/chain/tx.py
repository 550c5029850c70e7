"""Sends the node's transactions: the facade that composes the transaction layer's units and runs its loops.

The units, each with its own state and its own guarantees (see their modules):
- `node.chain.keys.KeyPool`: which key sends next, slots in flight per key, paused keys;
- `node.chain.nonces.Nonces`: nonce allocation per key (sync, resync, never below the key's own open nonces);
- `node.chain.batching` and `node.chain.build`: which ready jobs go out together, simulation, fees, signing;
- `node.chain.broadcast.Broadcaster`: handing signed transactions to the RPC under per-key ceilings;
- `node.chain.tracking.Confirmer`: receipts, confirmations, settling jobs from the receipt's events, reorgs;
- `node.chain.resend.Resender`: fee bumps, rebroadcasts, giving a transaction up and filling its nonce;
- `node.chain.refusals.Refusals`: back-off of failed sends, refused items and transactions, paused keys;
- `node.chain.ledger.OpenTxs` and `node.chain.settle`: what is open, and the one way a job is settled.

Guarantees (the facade's own):
- Every signed transaction is committed to the store (with the jobs it carries, now `submitted`) before it is
  broadcast, under its key's nonce lock: a restart rebroadcasts the same nonce instead of signing a new one.
- Ready jobs are grouped: one job goes out as `deliver`/`reportFailure`, several as one `deliverBatch`.
- A delivery whose simulation reverts is settled or re-routed (`Refusals.reverted`); a batch that reverts is sent
  again item by item, each item's failure its own.
- While the base fee is above the cap the jobs are held until the next head; no nonce is spent on them.
- Up to `max_concurrent_sends` transactions are simulated and signed at once (pipelining). A batch goes out at once
  unless more jobs are being computed (the caller's hint, `enqueue(job, upcoming=n)`) *and* a transaction of ours is
  still unmined: then a partial batch waits up to `BATCH_LINGER_S` to fill. A lone request never waits.
- The send loop never stops the node: a round that fails for any reason is counted, logged and tried again.
- On restart, open transactions are loaded from the store and rebroadcast, then tracked as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from node.chain import batching, delivery
from node.chain.broadcast import Broadcaster
from node.chain.build import TxBuilder
from node.chain.clock import ChainClock
from node.chain.contracts import CoordinatorAbi
from node.chain.heads import Head, as_head
from node.chain.keys import Key, KeyPool
from node.chain.ledger import OpenTxs
from node.chain.nonces import Nonces
from node.chain.policy import TxPolicy
from node.chain.refusals import Refusals
from node.chain.resend import Resender
from node.chain.rpc import RpcPool
from node.chain.settle import JobHistory, Settler
from node.chain.tracking import Confirmer
from node.chain.view import ChainView
from node.errors import Action, TxReverted
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore, StoredTx
from node.observability.conditions import CONDITIONS

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)


class TxManager:
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
        on_idle: Callable[[], None] = lambda: None,
        metrics: Metrics | None = None,
        clock: ChainClock | None = None,
    ) -> None:
        self._rpc = rpc
        self._store = store
        self._abi = abi
        self._policy = policy
        #: Called when a confirmation leaves nothing open, queued or computing (the node trims its heap then).
        self.on_idle = on_idle
        #: Observes confirmation times, gas and delivery latencies, when set.
        self.metrics = metrics
        #: Delivery transactions signed since the start, for metrics.
        self.sent = 0
        #: The latest count of jobs still being computed (the caller's hint to `enqueue`).
        self._upcoming = 0
        self._tg: asyncio.TaskGroup | None = None
        self._spawn_later: list[Coroutine[Any, Any, None]] = []
        self._send_slots = asyncio.Semaphore(policy.max_concurrent_sends)

        self._view = ChainView(clock)
        self._keys = KeyPool(accounts, policy.max_pending_per_key)
        self._ledger = OpenTxs(self._keys)
        self._nonces = Nonces(rpc, self._ledger)
        self._builder = TxBuilder(rpc, abi, coordinator, self._view, policy)
        self._queue = batching.ReadyQueue()
        self._history = JobHistory()
        self._settler = Settler(store, self._history, metrics=metrics, on_settled=on_settled)
        self._broadcaster = Broadcaster(
            rpc,
            spawn=self._spawn,
            on_receipt=self._on_receipt,
            on_refused=self._on_refused,
            max_per_s=policy.max_sends_per_s,
            max_per_block=policy.max_sends_per_block,
            head=lambda: self._view.head_number,
        )
        self._resender = Resender(
            store, abi, policy, self._view, self._keys, self._ledger, self._nonces, self._broadcaster
        )
        self._refusals = Refusals(
            rpc,
            store,
            policy,
            keys=self._keys,
            ledger=self._ledger,
            queue=self._queue,
            history=self._history,
            settler=self._settler,
            resender=self._resender,
            spawn=self._spawn,
        )
        self._confirmer = Confirmer(
            rpc,
            store,
            abi,
            coordinator,
            policy,
            view=self._view,
            keys=self._keys,
            ledger=self._ledger,
            queue=self._queue,
            history=self._history,
            broadcaster=self._broadcaster,
            resender=self._resender,
            settler=self._settler,
            metrics=metrics,
            on_finished=self._after_confirmation,
        )

    # ------------------------------------------------------------------------------------------- what it shows

    @property
    def addresses(self) -> list[ChecksumAddress]:
        return [k.address for k in self._keys.keys]

    @property
    def in_flight(self) -> int:
        return len(self._ledger)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def settled(self) -> int:
        """Jobs settled (confirmed, failed or expired at the send) since the start."""
        return self._settler.settled

    @property
    def replaced(self) -> int:
        return self._resender.replaced

    @property
    def backing_off(self) -> int:
        """Jobs waiting out a back-off before they are ready again."""
        return self._refusals.backing_off

    @property
    def head(self) -> Head | None:
        return self._view.head

    @property
    def clock(self) -> ChainClock:
        """The chain's time (deadlines are judged by it, not by this machine's clock)."""
        return self._view.clock

    @property
    def block_gas_limit(self) -> int:
        return self._view.block_gas_limit

    @property
    def max_output_bytes(self) -> int | None:
        return self._builder.max_output_bytes

    @property
    def call_hashes(self) -> set[str]:
        """Every hash of a transaction that carries no job (a `send_call`, a nonce fill), known from its commit on
        (and from the store after a restart): the store's own set, which only grows."""
        return self._store.call_hashes

    # ------------------------------------------------------------------------------------------------ start

    async def start(self) -> None:
        """Syncs chain id, head and nonces; reloads open transactions from the store and rebroadcasts them."""
        chain_id = await self._builder.read_chain_id()
        if self._view.head is None:
            block = await self._rpc.call("eth_getBlockByNumber", lambda w3: w3.eth.get_block("latest"))
            self.on_head(as_head(block))
        await self._builder.read_limits()
        for key in self._keys.keys:
            stored = self._store.open_txs(key.address)
            await self._nonces.sync(key, stored)
            for tx in stored:
                if self._ledger.holds(tx.sender, tx.nonce):
                    continue  # tracked by an earlier try of `start` (it is retried until the RPC answers)
                self._ledger.open(tx, resumed=True)
                carried = (self._store.get(rid) for rid, _ in tx.items)
                self._ledger.carry([j for j in carried if j is not None and j.state is JobState.SUBMITTED])
                if tx.state == "pending":
                    await self._broadcaster.send(tx, quiet=True)
            log.info(
                "sender %s ready: chain %d, next nonce %d, %d transaction(s) resumed",
                key.address,
                chain_id,
                self._nonces.next(key),
                len(stored),
            )

    # ----------------------------------------------------------------------------------------------- inputs

    def enqueue(self, job: Job, upcoming: int = 0) -> None:
        """Queues a job that has its output (or its failure reason) for sending. `upcoming`: how many jobs the
        caller is still computing (the latest hint is kept): a partial batch lingers only while some are."""
        self._upcoming = upcoming
        self._queue.append(job)

    def expect(self, upcoming: int) -> None:
        """The caller's count of jobs still being computed changed (one finished without a send: expired, failed,
        cancelled by a reorg); at 0 a lingering partial batch stops waiting and an idle node trims its heap."""
        self._upcoming = upcoming
        if upcoming == 0:
            self._queue.poke()
            self._after_confirmation()

    def on_head(self, head: Head) -> None:
        self._view.on_head(head)
        self._confirmer.wake()

    def on_reorg(self, fork: int) -> None:
        """Transactions mined at or above the fork are tracked again as pending."""
        self._confirmer.on_reorg(fork)

    # ------------------------------------------------------------------------------------------------- loops

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for coro in self._spawn_later:
                tg.create_task(coro)
            self._spawn_later.clear()
            tg.create_task(self._send_loop(), name="tx-send")
            tg.create_task(self._confirmer.run(), name="tx-track")
        self._tg = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` beside the loops, guarded: an exception out of it is logged and counted, never raised into
        the loops (an outside answer must not stop the node); before `run`, queued."""
        guarded = _guarded(coro)
        if self._tg is None:
            self._spawn_later.append(guarded)
        else:
            self._tg.create_task(guarded)

    async def _send_loop(self) -> None:
        """Takes ready jobs into transactions until cancelled. Whatever goes wrong in one round (a head with absurd
        values, a bug), the loop goes on after a pause: it is never the reason the node stops."""
        while True:
            await self._queue.wait_for_jobs()
            await self._send_slots.acquire()
            key = await self._keys.acquire()
            try:
                await self._linger()
                batch = self._take_batch()
            except Exception:
                self._release(key)
                CONDITIONS.count("send", Action.UNKNOWN)
                log.exception("forming a transaction failed; trying again in a moment")
                await asyncio.sleep(1.0)  # a back-off
                continue
            if not batch:
                self._release(key)
                continue
            self._spawn(self._send_task(key, batch))

    def _take_batch(self) -> list[Job]:
        limits = batching.BatchLimits(
            self._policy.max_batch, self._view.block_gas_limit, self._builder.max_output_bytes
        )
        return batching.take_batch(
            self._queue,
            limits,
            now=self._view.clock.now(),
            refusals=self._history.refusals,
            expire=lambda job: self._settler.settle(
                job, JobState.EXPIRED, "deadline passed before delivery (by the chain's clock)"
            ),
            report=self._report_instead,
        )

    def _report_instead(self, job: Job, why: str) -> None:
        log.warning("request %d: %s; reporting the failure instead", job.request_id, why)
        self._store.update(job, JobState.COMPUTED, output=None, failure=why)

    async def _linger(self) -> None:
        """Under load (a transaction of ours unmined, more jobs being computed), waits up to BATCH_LINGER_S for a
        partial batch to fill."""
        if self._policy.max_batch == 1:
            return
        deadline = time.monotonic() + batching.BATCH_LINGER_S
        while len(self._queue) < self._policy.max_batch and self._upcoming > 0 and self._ledger.any_pending():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            waits = {asyncio.ensure_future(self._queue.next_arrival()), asyncio.ensure_future(self._keys.next_room())}
            _, pending = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    def _release(self, key: Key) -> None:
        self._keys.release(key)
        self._send_slots.release()

    def _after_confirmation(self) -> None:
        if not self._ledger and not self._queue and self._upcoming == 0:
            self.on_idle()

    # ------------------------------------------------------------------------------------------------- send

    async def _send_task(self, key: Key, batch: list[Job]) -> None:
        """Simulates, signs and sends one transaction of `batch`; whatever the RPC answers, its jobs end settled,
        sent, or back in the queue after a back-off (never an exception out of here: one item cannot stop the
        node)."""
        try:
            await self._attempt(key, batch)
        finally:
            self._release(key)

    async def _attempt(self, key: Key, jobs: list[Job]) -> None:
        try:
            await self._send(key, jobs)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._refusals.send_failed(key, jobs, exc)

    async def _send(self, key: Key, jobs: list[Job]) -> None:
        data = delivery.calldata(self._abi, jobs)
        what = delivery.describe(jobs)
        gas = delivery.gas_limit(jobs)
        reverted = await self._builder.simulate(key.address, data, gas, what)
        if reverted is not None:
            await self._reverted(key, jobs, reverted)
            return
        fees = self._builder.fees(holding=len(jobs))
        if fees is None:  # held until the base fee falls: no nonce is spent meanwhile
            self._queue.put_back(jobs, wake=False)
            await self._view.next_head()
            return
        async with self._nonces.lock(key):
            tx = await self._sign(key, data, gas, fees, jobs)
            self._ledger.carry(jobs)
        self.sent += 1
        log.debug("sent %s nonce %d tx %s", what, tx.nonce, tx.hashes[-1])
        await self._broadcaster.send(tx)

    async def _reverted(self, key: Key, jobs: list[Job], reverted: TxReverted) -> None:
        """The simulation reverted: one job is settled or re-routed; a batch's items are sent one by one, each
        item's failure its own."""
        if len(jobs) > 1:
            log.warning("%s; sending its items one by one", reverted)
            for job in jobs:
                await self._attempt(key, [job])
            return
        self._refusals.reverted(jobs[0], reverted)

    async def _sign(self, key: Key, data: bytes, gas: int, fees: tuple[int, int], jobs: list[Job]) -> StoredTx:
        """Under the key's nonce lock: signs a coordinator call at the key's next nonce, commits it with the jobs it
        carries (before it leaves the process) and tracks it."""
        nonce = await self._nonces.reserve(key)
        tx = self._builder.new_tx(key.account, nonce, data, gas, fees, jobs)
        self._store.add_tx(tx, jobs)
        self._nonces.used(key, nonce)
        self._ledger.open(tx)
        return tx

    async def send_call(
        self, data: bytes, gas: int, what: str, *, sender: str | None = None
    ) -> tuple[StoredTx, asyncio.Future[Any]]:
        """Signs and sends one coordinator call that carries no job (a delegated request) with the same keys,
        nonces, fee cap, tracking and replacement as deliveries. Returns the transaction (its `hashes` grow when it
        is replaced) and a future of its receipt once it is confirmed; the future fails if the transaction is
        abandoned. `sender` picks the key (the one the call was simulated from). Raises `RpcUnavailable` when it
        cannot be sent now, `TxReverted` when fees are over the cap."""
        await self._send_slots.acquire()
        key = await self._keys.acquire(only=sender)
        try:
            fees = self._builder.fees()
            if fees is None:
                base = self._view.base_fee_wei
                raise TxReverted(f"{what}: base fee {base} wei is above max_fee_per_gas_wei; try again later")
            async with self._nonces.lock(key):
                tx = await self._sign(key, data, gas, fees, [])  # its hash joins `call_hashes` as it is committed
                future = self._ledger.waiter(tx)
        finally:
            self._release(key)
        log.info("sent %s nonce %d tx %s", what, tx.nonce, tx.hashes[-1])
        await self._broadcaster.send(tx)
        return tx, future

    # ------------------------------------------------------------------------------------ broadcaster answers

    def _on_receipt(self, tx: StoredTx, receipt: Any) -> None:
        self._confirmer.on_receipt(tx, receipt)

    async def _on_refused(self, tx: StoredTx, error: str, quiet: bool, action: Action) -> None:
        await self._refusals.tx_refused(tx, error, quiet, action)


async def _guarded(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        CONDITIONS.count("send", Action.UNKNOWN)
        log.exception("a transaction task failed; the transaction stays tracked and its jobs stored")
