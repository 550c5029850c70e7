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
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from node.chain import delivery
from node.chain.broadcast import Broadcaster
from node.chain.clock import ChainClock
from node.chain.contracts import CoordinatorAbi
from node.chain.heads import Head, as_head
from node.chain.refusals import Refusals
from node.chain.rpc import RpcError, RpcPool, as_reverted, classify, is_revert
from node.chain.tracking import Key, TxPolicy
from node.errors import Action, TxReverted
from node.jobs.store import Job, JobState, JobStore, StoredTx
from node.observability.conditions import CONDITIONS

if TYPE_CHECKING:
    from node.observability.metrics import Metrics

log = logging.getLogger(__name__)

#: How long, at most, a partial batch waits to fill while one of the node's transactions is unmined.
BATCH_LINGER_S = 0.02
#: Share of the block gas limit one batch may use (a lone item may use up to `LONE_ITEM_GAS_SHARE`): a transaction
#: over the limit can never be mined, and a batch that fills a whole block waits behind everyone else's.
BATCH_GAS_SHARE = 0.5
LONE_ITEM_GAS_SHARE = 0.95
#: Block gas limit assumed until a block says (Ethereum mainnet's was 30-36 M in 2025).
DEFAULT_BLOCK_GAS_LIMIT = 30_000_000
#: A head's gas limit below this is not believed (no chain the node serves has blocks that small).
MIN_PLAUSIBLE_GAS_LIMIT = 1_000_000
#: Heads whose gas limits are remembered (the largest is used).
GAS_LIMIT_HEADS = 8
#: Calldata bytes in one batch: geth's transaction pool refuses transactions over 128 KiB.
MAX_BATCH_DATA_BYTES = 96 * 1024


class TxManager(Refusals):
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
        clock: ChainClock | None = None,
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
        #: monotonic time of each job's first failed send; cleared only when the job settles (re-signing does not).
        self._first_failure: dict[int, float] = {}
        #: Failed sends of each job (for its back-off) and refusals of it alone (for giving up), by request id.
        self._send_failures: dict[int, int] = {}
        self._refusals: dict[int, int] = {}
        #: monotonic time each job was first refused alone.
        self._first_refusal: dict[int, float] = {}
        #: (refusals, monotonic time of the first) of each open transaction's sends, by slot.
        self._tx_refusals: dict[tuple[str, int], tuple[int, float]] = {}
        self._reverts: dict[int, int] = {}
        #: Jobs waiting out a back-off before they are ready again.
        self.backing_off = 0
        self._rr = 0
        self._send_slots = asyncio.Semaphore(policy.max_concurrent_sends)
        self._broadcaster = Broadcaster(
            rpc,
            spawn=self._spawn,
            on_receipt=self._on_receipt,
            on_refused=self._send_refused,
            max_per_s=policy.max_sends_per_s,
            max_per_block=policy.max_sends_per_block,
            head=lambda: self.head.number if self.head else 0,
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
        #: The chain's time (deadlines are judged by it, not by this machine's clock).
        self.clock = clock or ChainClock()
        #: The block gas limit batches are sized below: the largest of the last `GAS_LIMIT_HEADS` heads' limits.
        self.block_gas_limit = DEFAULT_BLOCK_GAS_LIMIT
        self._gas_limits: collections.deque[int] = collections.deque(maxlen=GAS_LIMIT_HEADS)
        #: The coordinator's `maxOutputBytes` (read at start; None if it could not be read): a longer output is
        #: reported as a failure instead of being sent to a certain revert.
        self.max_output_bytes: int | None = None
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
            self.on_head(as_head(block))
        await self._read_limits()
        for key in self._keys:
            chain_next = await self._pending_nonce(key)
            stored = self._store.open_txs(key.address)
            key.next_nonce = max([chain_next] + [t.nonce + 1 for t in stored])
            for tx in stored:
                if (tx.sender.lower(), tx.nonce) in self._open:
                    continue  # tracked by an earlier try of `start` (it is retried until the RPC answers)
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

    async def _read_limits(self) -> None:
        """Reads the coordinator's `maxOutputBytes` (best effort: without it, oversized outputs are found by the
        simulation's revert or the RPC's refusal)."""
        call = {"to": self._coordinator, "data": "0x" + self._abi.encode_call("maxOutputBytes").hex()}
        try:
            answer = await self._rpc.request("eth_call", [call, "latest"])
            self.max_output_bytes = int(answer, 16)
        except Exception as exc:  # any answer: the limit is an optimisation, not a guarantee
            log.info("could not read the coordinator's maxOutputBytes (%s); outputs are checked at simulation", exc)

    async def _pending_nonce(self, key: Key) -> int:
        """The key's pending transaction count. A count past the key's next nonce (transactions this node did not
        sign, or a wrong answer) is asked for again and believed only when repeated: a single wrong count would open
        a nonce gap that holds every later transaction of the key for ever. Raises ValueError when the two differ."""

        async def count() -> int:
            return int(
                await self._rpc.call(
                    "eth_getTransactionCount", lambda w3: w3.eth.get_transaction_count(key.address, "pending")
                )
            )

        first = await count()
        if first > key.next_nonce:
            again = await count()
            if again != first:
                CONDITIONS.count("rpc", Action.UNKNOWN)
                raise ValueError(f"pending transaction count of {key.address} answered {first}, then {again}")
        return first

    # ----------------------------------------------------------------------------------------------- inputs

    def enqueue(self, job: Job) -> None:
        """Queues a job that has its output (or its failure reason) for sending."""
        self._ready.append(job)
        self._ready_event.set()

    def on_head(self, head: Head) -> None:
        self.head = head
        self.clock.on_head(head.timestamp, head.number)
        if head.gas_limit >= MIN_PLAUSIBLE_GAS_LIMIT:
            # The largest of the recent heads' limits: one head with a wrong (low) limit does not shrink batches or
            # turn good outputs into failure reports; a wrong high one is met by the RPC's refusal (batches split).
            self._gas_limits.append(head.gas_limit)
            self.block_gas_limit = max(self._gas_limits)
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
            if not self._ready:
                self._ready_event.clear()
                await self._ready_event.wait()
                continue
            await self._send_slots.acquire()
            key = await self._free_key()
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
        """The next transaction's jobs from the ready queue: at most `max_batch` (halved for each time one of them
        was refused), below `BATCH_GAS_SHARE` of the block gas limit and `MAX_BATCH_DATA_BYTES` of calldata. A job
        past its deadline (by the chain's clock) is skipped; one that can never fit a transaction (gas over the
        block's limit, output over the coordinator's `maxOutputBytes`) becomes a failure report."""
        batch: list[Job] = []
        now = self.clock.now()
        limit = self._policy.max_batch
        gas = delivery.BATCH_BASE_GAS
        size = 0
        gas_budget = int(self.block_gas_limit * BATCH_GAS_SHARE)
        while self._ready and len(batch) < limit:
            job = self._ready[0]
            if job.state is not JobState.COMPUTED:
                self._ready.popleft()
                continue  # orphaned or settled meanwhile
            if job.request.deadline <= now:
                self._ready.popleft()
                self._settle(job, JobState.EXPIRED, "deadline passed before delivery (by the chain's clock)")
                continue
            if (why := self._unsendable(job)) is not None:
                log.warning("request %d: %s; reporting the failure instead", job.request_id, why)
                self._store.update(job, JobState.COMPUTED, output=None, failure=why)
            refused = self._refusals.get(job.request_id, 0)
            if refused:
                limit = min(limit, max(1, self._policy.max_batch >> refused))
                if len(batch) >= limit:
                    break
            item_gas = delivery.item_gas(job)
            item_size = delivery.item_bytes(job)
            if batch and (gas + item_gas > gas_budget or size + item_size > MAX_BATCH_DATA_BYTES):
                break
            self._ready.popleft()
            batch.append(job)
            gas += item_gas
            size += item_size
        return batch

    def _unsendable(self, job: Job) -> str | None:
        """Why `job`'s delivery can never be mined (None: it can): what the failure report will say."""
        if job.failure is not None:
            return None
        output = job.output or b""
        if self.max_output_bytes is not None and len(output) > self.max_output_bytes:
            return f"output of {len(output)} bytes is over the coordinator's maxOutputBytes ({self.max_output_bytes})"
        gas = delivery.gas_limit([job])
        if gas > self.block_gas_limit * LONE_ITEM_GAS_SHARE:
            return f"delivery needs {gas} gas, over the block gas limit ({self.block_gas_limit})"
        return None

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
        """Simulates, signs and sends one transaction of `batch`; whatever the RPC answers, its jobs end settled,
        sent, or back in the queue after a back-off (never an exception out of here: one item cannot stop the
        node)."""
        try:
            await self._send(key, batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            action = classify(exc)
            if action is Action.UNKNOWN and not isinstance(exc, RpcError):
                log.exception("sending %s failed unexpectedly; retrying later", delivery.describe(batch))
            CONDITIONS.count("send", action)
            if action is Action.REFUSED:
                self._item_refused([j for j in batch if j.state is JobState.COMPUTED], str(exc))
            elif action is Action.KEY_BLOCKED:
                self._pause_key(key, str(exc))
                self._requeue(batch, exc, counts=False)
            else:
                self._requeue(batch, exc, retry_after_s=getattr(exc, "retry_after_s", None))
        finally:
            self._release(key)

    def _release(self, key: Key) -> None:
        key.reserved -= 1
        self._send_slots.release()
        self._room.set()

    async def _free_key(self, *, only: str | None = None) -> Key:
        """The next key (round-robin; or the key of address `only`) that is not paused and has room for another
        transaction in flight."""
        while True:
            now = time.monotonic()
            unpaused_at: float | None = None
            for i in range(len(self._keys)):
                key = self._keys[(self._rr + i) % len(self._keys)]
                if only is not None and key.address.lower() != only.lower():
                    continue
                if key.paused_until > now:
                    unpaused_at = min(unpaused_at or key.paused_until, key.paused_until)
                    continue
                if key.open + key.reserved < self._policy.max_pending_per_key:
                    self._rr = (self._rr + i + 1) % len(self._keys)
                    key.reserved += 1
                    return key
            self._room.clear()
            timeout = None if unpaused_at is None else max(0.0, unpaused_at - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout)

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
            if key.resync:  # a resync after a refusal failed: the chain's nonce first (never below our own)
                key.next_nonce = max(key.next_nonce, await self._pending_nonce(key), self._top_open(key) + 1)
                key.resync = False
            tx = self._sign(key, data, gas, fees, jobs)
            for job in jobs:
                self._carried[job.request_id] = job
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

    def _track(self, tx: StoredTx, key: Key, *, resumed: bool = False) -> None:
        slot = (tx.sender.lower(), tx.nonce)
        self._open[slot] = tx
        self._sent_at[slot] = 0.0 if resumed else time.monotonic()
        key.open += 1

    def _untrack(self, tx: StoredTx) -> None:
        self._tx_refusals.pop((tx.sender.lower(), tx.nonce), None)
        if self._open.pop((tx.sender.lower(), tx.nonce), None) is not None:
            self._by_address[tx.sender.lower()].open -= 1
            self._receipts.pop((tx.sender.lower(), tx.nonce), None)
            self._sent_at.pop((tx.sender.lower(), tx.nonce), None)
            self._room.set()
        call = self._calls.pop((tx.sender.lower(), tx.nonce), None)
        if call is not None and not call.done():
            call.set_exception(RuntimeError(f"transaction {tx.hashes[-1]} was abandoned ({tx.state})"))


async def _guarded(coro: Coroutine[Any, Any, None]) -> None:
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        CONDITIONS.count("send", Action.UNKNOWN)
        log.exception("a transaction task failed; the transaction stays tracked and its jobs stored")
