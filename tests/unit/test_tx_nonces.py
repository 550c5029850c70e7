"""Nonce allocation (node/chain/nonces.py) and what a refused or taken nonce does to the counter, on a real SQLite
store and a scripted RPC: sync at start, the double-checked pending count, resync on "nonce too low", never below the
key's own open nonces, reuse of a freed newest nonce, a 0-value fill of an earlier one, a failed resync redone."""

from __future__ import annotations

from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address
from web3.exceptions import TransactionNotFound

from node.chain import build, delivery
from node.chain.env import TxBooks, TxEnv
from node.chain.nonces import Nonces
from node.chain.policy import TxPolicy
from node.chain.refusals import Refusals
from node.chain.resend import Resender
from node.chain.view import ChainView
from node.errors import Action, RpcUnavailable
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore, StoredTx
from node.observability.conditions import CONDITIONS
from tests.unit.txjobs import computed_job

ACCOUNT = Account.from_key("0x" + "11" * 32)
COORDINATOR = to_checksum_address("0x" + "22" * 20)
GWEI = 10**9


class ScriptedRpc:
    """Answers `eth_getTransactionCount` from a script (the last answer repeats; an exception is raised) and knows
    no receipt."""

    def __init__(self, *counts: int | Exception) -> None:
        self.counts: list[int | Exception] = list(counts)
        self.calls: Counter[str] = Counter()

    async def call(self, method: str, fn: Any) -> Any:
        self.calls[method] += 1
        if method == "eth_getTransactionReceipt":
            raise TransactionNotFound("no receipt")
        assert method == "eth_getTransactionCount", method
        answer = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class QuietBroadcaster:
    def __init__(self) -> None:
        self.sent: list[StoredTx] = []

    async def send(self, tx: StoredTx, *, quiet: bool = False) -> None:
        self.sent.append(tx)


@dataclass
class Stack:
    rpc: ScriptedRpc
    store: JobStore
    books: TxBooks
    nonces: Nonces
    refusals: Refusals
    spawned: list[Coroutine[Any, Any, None]] = field(default_factory=list)

    @property
    def key(self) -> Any:
        return self.books.keys.keys[0]

    def job(self, rid: int) -> Job:
        return computed_job(self.store, rid, COORDINATOR)

    def open_tx(self, nonce: int, *jobs: Job) -> StoredTx:
        """A signed delivery at `nonce`, committed with `jobs` and tracked, as the send path leaves it."""
        request = build.unsigned_call(COORDINATOR, b"\x01", 300_000, nonce, 31337, (2 * GWEI, GWEI))
        tx_hash, raw = build.sign(ACCOUNT, request)
        items = [(j.request_id, False) for j in jobs]
        tx = StoredTx(ACCOUNT.address, nonce, [tx_hash], raw, request, items, sent_block=1)
        self.store.add_tx(tx, list(jobs))
        self.books.ledger.open(tx)
        self.books.ledger.carry(list(jobs))
        return tx


@pytest.fixture(autouse=True)
def _no_conditions_left() -> Iterator[None]:
    yield
    CONDITIONS.reset()


@pytest.fixture
def stack(store_at: str) -> Iterator[Stack]:
    rpc = ScriptedRpc(0)
    store = JobStore(store_at, chain_id=31337, coordinator=COORDINATOR)
    policy = TxPolicy(max_fee_per_gas_wei=100 * GWEI, priority_fee_wei=GWEI)
    books = TxBooks.new([ACCOUNT], store, policy.max_pending_per_key)
    env = TxEnv(rpc, store, None, COORDINATOR, policy, ChainView())  # type: ignore[arg-type]
    nonces = Nonces(rpc, books.ledger)  # type: ignore[arg-type]
    resender = Resender(env, books, nonces, QuietBroadcaster())  # type: ignore[arg-type]
    spawned: list[Coroutine[Any, Any, None]] = []
    refusals = Refusals(env, books, resender=resender, spawn=spawned.append)
    yield Stack(rpc, store, books, nonces, refusals, spawned)
    for coro in spawned:
        coro.close()  # the back-offs of requeued jobs: not run here
    store.close()


async def test_start_takes_the_chains_count_or_one_past_the_stored_open_transactions(stack: Stack) -> None:
    stored = [StoredTx(ACCOUNT.address, 9, ["0x01"], b"", {}, [], sent_block=1)]
    stack.rpc.counts = [4]
    assert await stack.nonces.sync(stack.key, stored) == 10  # a restart resends 9 at its own nonce
    stack.rpc.counts = [12, 12]
    assert await stack.nonces.sync(stack.key, stored) == 12


async def test_a_count_past_the_next_nonce_is_believed_only_when_repeated(stack: Stack) -> None:
    stack.rpc.counts = [5, 5]
    await stack.nonces.sync(stack.key, [])
    stack.rpc.counts = [9, 7]
    with pytest.raises(ValueError, match="answered 9, then 7"):
        await stack.nonces.pending(stack.key)
    stack.rpc.counts = [9, 9]
    assert await stack.nonces.pending(stack.key) == 9
    stack.rpc.calls.clear()
    stack.rpc.counts = [3]
    assert await stack.nonces.pending(stack.key) == 3
    assert stack.rpc.calls["eth_getTransactionCount"] == 1  # a count at or below ours is asked once


async def test_nonce_too_low_resyncs_from_the_chain_and_sends_the_jobs_again(stack: Stack) -> None:
    job = stack.job(1)
    tx = stack.open_tx(5, job)
    stack.nonces.used(stack.key, 5)
    stack.rpc.counts = [8, 8]  # someone else sent nonces 5, 6 and 7 from this key

    await stack.refusals.tx_refused(tx, "nonce too low: next nonce 8, tx nonce 5", False, Action.RETRY)

    assert stack.nonces.next(stack.key) == 8
    assert len(stack.books.ledger) == 0
    assert stack.store.open_txs(ACCOUNT.address) == []
    assert (job.state, job.tx_hash, job.nonce) == (JobState.COMPUTED, None, None)
    assert stack.refusals.backing_off == 1  # sent again after a back-off, never at once


async def test_after_nonce_too_low_the_chains_count_wins_even_downwards(stack: Stack) -> None:
    tx = stack.open_tx(5, stack.job(1))
    stack.nonces.used(stack.key, 7)  # 6 and 7 were given up meanwhile: nothing of ours above 5 is open
    stack.rpc.counts = [6]  # someone else's transaction took nonce 5

    await stack.refusals.tx_refused(tx, "nonce too low", False, Action.RETRY)

    assert stack.nonces.next(stack.key) == 6  # no gap at 6 and 7


async def test_a_rebroadcast_meeting_nonce_too_low_changes_nothing(stack: Stack) -> None:
    tx = stack.open_tx(5, stack.job(1))
    stack.nonces.used(stack.key, 5)
    await stack.refusals.tx_refused(tx, "nonce too low", True, Action.RETRY)
    assert stack.books.ledger.is_open(tx)
    assert stack.nonces.next(stack.key) == 6


async def test_a_resync_never_moves_below_the_keys_own_open_nonces(stack: Stack) -> None:
    txs = [stack.open_tx(n, stack.job(n)) for n in (5, 6, 7)]
    stack.nonces.used(stack.key, 7)
    stack.rpc.counts = [3]  # a lagging endpoint: below every open nonce of ours

    await stack.refusals.tx_refused(txs[0], "nonce too low", False, Action.RETRY)

    assert stack.nonces.next(stack.key) == 8
    assert [t.nonce for t in stack.books.ledger.all()] == [6, 7]


async def test_a_refused_newest_nonce_is_reused_by_the_next_send(stack: Stack) -> None:
    tx = stack.open_tx(5, stack.job(1))
    stack.nonces.used(stack.key, 5)
    stack.rpc.counts = [5]

    await stack.refusals.tx_refused(tx, "oversized data", False, Action.REFUSED)

    assert len(stack.books.ledger) == 0
    assert stack.nonces.next(stack.key) == 5
    async with stack.nonces.lock(stack.key):
        assert await stack.nonces.reserve(stack.key) == 5


async def test_a_refused_nonce_below_an_open_one_is_filled_with_a_0_value_transfer(stack: Stack) -> None:
    first, second = stack.job(1), stack.job(2)
    tx = stack.open_tx(5, first)
    stack.open_tx(6, second)
    stack.nonces.used(stack.key, 6)

    await stack.refusals.tx_refused(tx, "oversized data", False, Action.REFUSED)

    assert stack.books.ledger.is_open(tx)  # still tracked: the fill is mined at nonce 5
    assert (tx.request["to"], tx.request["data"], tx.request["gas"]) == (ACCOUNT.address, "0x", delivery.CANCEL_GAS)
    assert tx.items == []
    assert len(tx.hashes) == 2
    assert tx.request["maxFeePerGas"] > 2 * GWEI  # a replacement must raise the fee
    assert tx.hashes[-1].lower() in stack.store.call_hashes
    assert stack.nonces.next(stack.key) == 7
    assert first.state is JobState.COMPUTED
    assert second.state is JobState.SUBMITTED


async def test_a_failed_resync_is_done_before_the_next_send(stack: Stack) -> None:
    tx = stack.open_tx(5, stack.job(1))
    stack.nonces.used(stack.key, 5)
    stack.rpc.counts = [RpcUnavailable("no endpoint answered")]

    await stack.refusals.tx_refused(tx, "oversized data", False, Action.REFUSED)
    assert stack.nonces.next(stack.key) == 5  # freed for the next send; the chain's word is still to come

    stack.rpc.counts = [8, 8]
    async with stack.nonces.lock(stack.key):
        assert await stack.nonces.reserve(stack.key) == 8  # the chain's count first
    stack.rpc.calls.clear()
    async with stack.nonces.lock(stack.key):
        await stack.nonces.reserve(stack.key)
    assert stack.rpc.calls["eth_getTransactionCount"] == 0  # once resynced, not again
