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
What they share is made here once and handed to each: `node.chain.env.TxEnv` (RPC, store, coordinator, policy,
chain view) and `node.chain.env.TxBooks` (keys, open transactions, ready queue, job history, settler).

Guarantees (the facade's own):
- Every signed transaction is committed to the store (with the jobs it carries, now `submitted`) before it is
  broadcast, under its key's nonce lock: a restart rebroadcasts the same nonce instead of signing a new one.
- Ready jobs are grouped: one job goes out as `deliver`/`reportFailure`, several as one `deliverBatch`. A verified
  request's output goes alone as `deliverWithProof` (with the proof stored with it), from the first key: the one
  its attestation is bound to.
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

from node import faultpoint
from node.chain import batching, delivery
from node.chain.broadcast import Broadcaster
from node.chain.build import TxBuilder
from node.chain.clock import ChainClock
from node.chain.contracts import CoordinatorAbi
from node.chain.env import TxBooks, TxEnv
from node.chain.heads import Head, as_head
from node.chain.keys import Key
from node.chain.nonces import Nonces
from node.chain.policy import TxPolicy
from node.chain.refusals import Refusals
from node.chain.resend import Resender
from node.chain.rpc import RpcPool
from node.chain.subscriptions import ManagerTarget
from node.chain.tracking import Confirmer
from node.chain.view import ChainView
from node.errors import Action, TxReverted
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore, StoredTx
from node.jobs.verification import Proofs
from node.observability.conditions import CONDITIONS

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

#: Reverts naming the sending key as no active node: the key's problem, never the jobs' (`_reverted`).
KEY_NOT_ACTIVE = frozenset({"NodeNotActive", "NotRegistered", "IsUnbonding"})


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
        manager: ManagerTarget | None = None,
    ) -> None:
        """`manager`: the SubscriptionManager interval deliveries go to (None: the node serves no subscriptions)."""
        self._env = TxEnv(rpc, store, abi, coordinator, policy, ChainView(clock), manager)
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
        self._proofs = Proofs(store)
        #: The key verified jobs are delivered from (the scheduler binds their attestations to it).
        self._prover = accounts[0].address

        self._books = TxBooks.new(accounts, store, policy.max_pending_per_key, metrics=metrics, on_settled=on_settled)
        self._nonces = Nonces(rpc, self._books.ledger)
        self._builder = TxBuilder(self._env)
        self._broadcaster = Broadcaster(
            rpc,
            spawn=self._spawn,
            on_receipt=self._on_receipt,
            on_refused=self._on_refused,
            max_per_s=policy.max_sends_per_s,
            max_per_block=policy.max_sends_per_block,
            head=lambda: self._env.view.head_number,
        )
        self._resender = Resender(self._env, self._books, self._nonces, self._broadcaster)
        self._refusals = Refusals(self._env, self._books, resender=self._resender, spawn=self._spawn)
        self._confirmer = Confirmer(
            self._env,
            self._books,
            broadcaster=self._broadcaster,
            resender=self._resender,
            metrics=metrics,
            on_finished=self._after_confirmation,
        )

    # ------------------------------------------------------------------------------------------- what it shows

    def guard_sends(self, guard: Callable[[], None]) -> None:
        """Has `guard` called before every send (it raises to forbid one): a replica's lease check."""
        self._broadcaster.guard = guard

    @property
    def addresses(self) -> list[ChecksumAddress]:
        return [k.address for k in self._books.keys.keys]

    @property
    def in_flight(self) -> int:
        return len(self._books.ledger)

    @property
    def queued(self) -> int:
        return len(self._books.queue)

    @property
    def settled(self) -> int:
        """Jobs settled (confirmed, failed or expired at the send) since the start."""
        return self._books.settler.settled

    @property
    def replaced(self) -> int:
        return self._resender.replaced

    @property
    def backing_off(self) -> int:
        """Jobs waiting out a back-off before they are ready again."""
        return self._refusals.backing_off

    @property
    def head(self) -> Head | None:
        return self._env.view.head

    @property
    def clock(self) -> ChainClock:
        """The chain's time (deadlines are judged by it, not by this machine's clock)."""
        return self._env.view.clock

    @property
    def block_gas_limit(self) -> int:
        return self._env.view.block_gas_limit

    @property
    def max_output_bytes(self) -> int | None:
        return self._builder.max_output_bytes

    @property
    def call_hashes(self) -> set[str]:
        """Every hash of a transaction that carries no job (a `send_call`, a nonce fill), known from its commit on
        (and from the store after a restart): the store's own set, which only grows."""
        return self._env.store.call_hashes

    # ------------------------------------------------------------------------------------------------ start

    async def start(self) -> None:
        """Syncs chain id, head and nonces; reloads open transactions from the store and rebroadcasts them."""
        chain_id = await self._builder.read_chain_id()
        if self._env.view.head is None:
            block = await self._env.rpc.call("eth_getBlockByNumber", lambda w3: w3.eth.get_block("latest"))
            self.on_head(as_head(block))
        await self._builder.read_limits()
        for key in self._books.keys.keys:
            stored = self._env.store.open_txs(key.address)
            await self._nonces.sync(key, stored)
            for tx in stored:
                if self._books.ledger.holds(tx.sender, tx.nonce):
                    continue  # tracked by an earlier try of `start` (it is retried until the RPC answers)
                self._books.ledger.open(tx, resumed=True)
                carried = (self._env.store.get(rid) for rid, _ in tx.items)
                self._books.ledger.carry([j for j in carried if j is not None and j.state is JobState.SUBMITTED])
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
        self._books.queue.append(job)

    def expect(self, upcoming: int) -> None:
        """The caller's count of jobs still being computed changed (one finished without a send: expired, failed,
        cancelled by a reorg); at 0 a lingering partial batch stops waiting and an idle node trims its heap."""
        self._upcoming = upcoming
        if upcoming == 0:
            self._books.queue.poke()
            self._after_confirmation()

    def on_head(self, head: Head) -> None:
        self._env.view.on_head(head)
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
            await self._books.queue.wait_for_jobs()
            await self._send_slots.acquire()
            key = await self._books.keys.acquire()
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
            if delivery.with_proof(batch[0]) and key.address != self._prover:
                self._books.keys.release(key)  # its attestation names the first key: only that one may deliver it
                key = await self._books.keys.acquire(only=self._prover)
            self._spawn(self._send_task(key, batch))

    def _take_batch(self) -> list[Job]:
        limits = batching.BatchLimits(
            self._env.policy.max_batch, self._env.view.block_gas_limit, self._builder.max_output_bytes
        )
        return batching.take_batch(
            self._books.queue,
            limits,
            now=self._env.view.clock.now(),
            refusals=self._books.history.refusals,
            expire=lambda job: self._books.settler.settle(
                job, JobState.EXPIRED, "deadline passed before delivery (by the chain's clock)"
            ),
            report=self._report_instead,
            commits=lambda job: delivery.commits(self._env.abi, job),
        )

    def _report_instead(self, job: Job, why: str) -> None:
        self._books.settler.report_instead(job, why)

    async def _linger(self) -> None:
        """Under load (a transaction of ours unmined, more jobs being computed), waits up to BATCH_LINGER_S for a
        partial batch to fill."""
        if self._env.policy.max_batch == 1:
            return
        deadline = time.monotonic() + batching.BATCH_LINGER_S
        while (
            len(self._books.queue) < self._env.policy.max_batch
            and self._upcoming > 0
            and self._books.ledger.any_pending()
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            waits = {
                asyncio.ensure_future(self._books.queue.next_arrival()),
                asyncio.ensure_future(self._books.keys.next_room()),
            }
            _, pending = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()

    def _release(self, key: Key) -> None:
        self._books.keys.release(key)
        self._send_slots.release()

    def _after_confirmation(self) -> None:
        if not self._books.ledger and not self._books.queue and self._upcoming == 0:
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
        for job in jobs:
            if delivery.with_proof(job) and job.proof is None:  # resumed after a restart: the proof is in the store
                job.proof = self._proofs.get(job.request_id)
        data = delivery.calldata(self._env.abi, jobs, self._env.manager)
        what = delivery.describe(jobs, self._env.abi)
        gas = delivery.gas_limit(jobs, self._env.abi)
        proof = len(jobs) == 1 and delivery.with_proof(jobs[0]) and not delivery.commits(self._env.abi, jobs[0])
        reverted = await self._builder.simulate(key.address, data, gas, what, to=self._env.target(jobs), proof=proof)
        if reverted is not None:
            await self._reverted(key, jobs, reverted)
            return
        fees = self._builder.fees(holding=len(jobs))
        if fees is None:  # held until the base fee falls: no nonce is spent meanwhile
            self._books.queue.put_back(jobs, wake=False)
            await self._env.view.next_head()
            return
        async with self._nonces.lock(key):
            tx = await self._sign(key, data, gas, fees, jobs)
            self._books.ledger.carry(jobs)
        faultpoint.reached("tx-stored")  # committed, not broadcast: a restart must send this nonce, not a second one
        self.sent += 1
        log.debug("sent %s nonce %d tx %s", what, tx.nonce, tx.hashes[-1])
        await self._broadcaster.send(tx)

    async def _reverted(self, key: Key, jobs: list[Job], reverted: TxReverted) -> None:
        """The simulation reverted: one job is settled or re-routed; a batch's items are sent one by one, each
        item's failure its own. A revert that says the sending key itself is not an active node (`NodeNotActive` of
        this key: unregistered, unbonding, slashed below the minimum) is the key's, never the jobs': the key pauses
        (`/readyz` names it) and the jobs wait for a key that can deliver, uncounted, until their deadline."""
        if reverted.error in KEY_NOT_ACTIVE and str(next(iter(reverted.error_args), "")).lower() == key.address.lower():
            self._books.keys.pause(key, f"{reverted.error_text}: not an active node; `infera node status` says why")
            self._refusals.requeue(jobs, reverted, counts=False)
            return
        if len(jobs) > 1:
            log.warning("%s; sending its items one by one", reverted)
            for job in jobs:
                await self._attempt(key, [job])
            return
        self._refusals.reverted(jobs[0], reverted)

    async def _sign(
        self, key: Key, data: bytes, gas: int, fees: tuple[int, int], jobs: list[Job], *, to: str | None = None
    ) -> StoredTx:
        """Under the key's nonce lock: signs a coordinator call (or a call of `to`) at the key's next nonce, commits
        it with the jobs it carries (before it leaves the process) and tracks it."""
        nonce = await self._nonces.reserve(key)
        tx = self._builder.new_tx(key.account, nonce, data, gas, fees, jobs, to=to)
        self._env.store.add_tx(tx, jobs)
        self._nonces.used(key, nonce)
        self._books.ledger.open(tx)
        return tx

    async def simulate(self, sender: str, data: bytes, gas: int, what: str, to: str | None = None) -> TxReverted | None:
        """Runs a call the node may send (`to`: default the coordinator) as `sender` at gas limit `gas`, as every
        delivery is run before it is signed: None if it would succeed, the decoded revert if not (the coordinator's
        errors by name). Raises what the RPC answered otherwise (`RpcError`, `RpcUnavailable`)."""
        return await self._builder.simulate(sender, data, gas, what, to=to)

    async def send_call(
        self, data: bytes, gas: int, what: str, *, sender: str | None = None, to: str | None = None
    ) -> tuple[StoredTx, asyncio.Future[Any]]:
        """Signs and sends one coordinator call that carries no job (a delegated request; with `to`, a call of that
        contract instead: a verifier's `dispute`) with the same keys, nonces, fee cap, tracking and replacement as
        deliveries. Returns the transaction (its `hashes` grow when it is replaced) and a future of its receipt once
        it is confirmed; the future fails if the transaction is abandoned. `sender` picks the key (the one the call
        was simulated from). Raises `RpcUnavailable` when it cannot be sent now, `TxReverted` when fees are over the
        cap."""
        await self._send_slots.acquire()
        key = await self._books.keys.acquire(only=sender)
        try:
            fees = self._builder.fees()
            if fees is None:
                base = self._env.view.base_fee_wei
                raise TxReverted(f"{what}: base fee {base} wei is above max_fee_per_gas_wei; try again later")
            async with self._nonces.lock(key):
                tx = await self._sign(key, data, gas, fees, [], to=to)  # its hash joins `call_hashes` as committed
                future = self._books.ledger.waiter(tx)
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
