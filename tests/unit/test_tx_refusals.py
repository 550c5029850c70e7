"""Refused items and transactions (node/chain/refusals.py) on a real SQLite store with a clock the test moves: an
item refused alone 3 times over at least 20 s becomes a failure report (not sooner), a refused failure report is
given up, a refused batch is split, a transaction refused 5 times over 60 s in words nobody classified is given up,
a key without funds pauses, and a delivery that cannot be sent within the retry window is reported."""

from __future__ import annotations

from collections.abc import Coroutine, Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from node.chain import build
from node.chain.batching import refused_limit
from node.chain.env import TxBooks, TxEnv
from node.chain.nonces import Nonces
from node.chain.policy import TxPolicy
from node.chain.refusals import MAX_ITEM_REFUSALS, MAX_TX_REFUSALS, REFUSAL_WINDOW_S, TX_REFUSAL_WINDOW_S, Refusals
from node.chain.resend import Resender
from node.chain.view import ChainView
from node.errors import Action
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore, StoredTx
from node.observability.conditions import CONDITIONS
from tests.unit.txjobs import computed_job

ACCOUNT = Account.from_key("0x" + "66" * 32)
COORDINATOR = to_checksum_address("0x" + "77" * 20)
POLICY = TxPolicy(max_fee_per_gas_wei=100 * 10**9, priority_fee_wei=10**9, retry_window_s=600.0)


class ChainCount:
    """The RPC as the give-up path reads it: the key's pending count."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def call(self, method: str, fn: Any) -> int:
        assert method == "eth_getTransactionCount", method
        return self.count


class Broadcasts:
    async def send(self, tx: StoredTx, *, quiet: bool = False) -> None:
        pass


class Rig:
    def __init__(self, location: str) -> None:
        self.now = 1_000.0
        self.store = JobStore(location, chain_id=31337, coordinator=COORDINATOR)
        self.books = TxBooks.new([ACCOUNT], self.store, 64)
        self.spawned: list[Coroutine[Any, Any, None]] = []
        rpc = ChainCount(0)
        env = TxEnv(rpc, self.store, None, COORDINATOR, POLICY, ChainView())  # type: ignore[arg-type]
        nonces = Nonces(rpc, self.books.ledger)  # type: ignore[arg-type]
        resender = Resender(env, self.books, nonces, Broadcasts())  # type: ignore[arg-type]
        self.refusals = Refusals(
            env, self.books, resender=resender, spawn=self.spawned.append, monotonic=lambda: self.now
        )

    def job(self, rid: int, *, failure: str | None = None) -> Job:
        return computed_job(self.store, rid, COORDINATOR, failure=failure)

    def refuse_alone(self, job: Job, at: float) -> None:
        self.now = at
        self.refusals.item_refused([job], "invalid request")


@pytest.fixture
def rig(store_at: str) -> Iterator[Rig]:
    r = Rig(store_at)
    yield r
    for coro in r.spawned:
        coro.close()  # the back-offs of requeued jobs: not run here
    r.store.close()
    CONDITIONS.reset()


def test_an_item_refused_alone_3_times_within_20_s_is_still_sent_as_it_is(rig: Rig) -> None:
    job = rig.job(1)
    for at in (1_000.0, 1_001.0, 1_000.0 + REFUSAL_WINDOW_S - 0.1):
        rig.refuse_alone(job, at)
    assert MAX_ITEM_REFUSALS == 3
    assert (job.state, job.failure, job.output) == (JobState.COMPUTED, None, b"out")
    assert rig.refusals.backing_off == 3
    assert len(rig.books.queue) == 0


def test_an_item_refused_alone_3_times_over_20_s_becomes_a_failure_report(rig: Rig) -> None:
    job = rig.job(1)
    for at in (1_000.0, 1_010.0, 1_000.0 + REFUSAL_WINDOW_S):
        rig.refuse_alone(job, at)
    assert job.state is JobState.COMPUTED
    assert job.output is None
    assert job.failure is not None
    assert job.failure.startswith("delivery refused by the RPC 3 times: invalid request")
    assert len(rig.books.queue) == 1
    assert rig.books.queue.peek() is job
    assert rig.books.history.refusals(1) == 0  # the report is a new item: the delivery's refusals are not its own


def test_refusals_slow_in_coming_still_need_3(rig: Rig) -> None:
    job = rig.job(1)
    rig.refuse_alone(job, 1_000.0)
    rig.refuse_alone(job, 1_100.0)  # the window is long past, but this is only the second
    assert job.failure is None


def test_a_failure_report_refused_as_often_is_given_up(rig: Rig) -> None:
    job = rig.job(1, failure="no answer")
    for at in (1_000.0, 1_010.0, 1_020.0):
        rig.refuse_alone(job, at)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.startswith("failure report refused by the RPC 3 times")
    assert rig.books.settler.settled == 1


def test_a_refused_batch_is_sent_again_in_smaller_batches(rig: Rig) -> None:
    jobs = [rig.job(i) for i in range(1, 5)]
    rig.refusals.item_refused(jobs, "oversized data")
    assert [rig.books.history.refusals(j.request_id) for j in jobs] == [1, 1, 1, 1]
    assert refused_limit(POLICY.max_batch, rig.books.history.refusals(1)) == POLICY.max_batch // 2
    assert all(j.failure is None for j in jobs)
    assert rig.refusals.backing_off == 4


def _open_tx(rig: Rig, nonce: int, job: Job) -> StoredTx:
    request = build.unsigned_call(COORDINATOR, b"\x01", 300_000, nonce, 31337, (2 * 10**9, 10**9))
    tx_hash, raw = build.sign(ACCOUNT, request)
    tx = StoredTx(ACCOUNT.address, nonce, [tx_hash], raw, request, [(job.request_id, False)], sent_block=1)
    rig.store.add_tx(tx, [job])
    rig.books.ledger.open(tx)
    rig.books.ledger.carry([job])
    return tx


async def test_a_transaction_refused_5_times_over_60_s_in_unclassified_words_is_given_up(rig: Rig) -> None:
    job = rig.job(1)
    tx = _open_tx(rig, 0, job)
    for i in range(MAX_TX_REFUSALS + 1):  # 6 refusals within the window: not yet
        rig.now = 1_000.0 + i * 10
        await rig.refusals.tx_refused(tx, "something nobody has seen", False, Action.UNKNOWN)
        assert rig.books.ledger.is_open(tx)  # words that say nothing certain: kept, the tracker rebroadcasts it
    rig.now = 1_000.0 + TX_REFUSAL_WINDOW_S
    await rig.refusals.tx_refused(tx, "something nobody has seen", False, Action.UNKNOWN)
    assert not rig.books.ledger.is_open(tx)
    assert job.state is JobState.COMPUTED
    assert rig.books.history.refusals(1) == 1


async def test_a_key_without_funds_pauses_until_one_of_its_transactions_is_mined(rig: Rig) -> None:
    job = rig.job(1)
    tx = _open_tx(rig, 0, job)
    key = rig.books.keys.keys[0]
    await rig.refusals.tx_refused(tx, "insufficient funds for gas * price + value", False, Action.KEY_BLOCKED)
    assert rig.books.keys.paused(key)
    assert any("cannot send" in p for p in CONDITIONS.problems())
    assert job.state is JobState.COMPUTED
    assert rig.books.history.refusals(1) == 0
    rig.books.keys.unpause(key.address)
    assert not rig.books.keys.paused(key)


def test_a_delivery_that_cannot_be_sent_within_the_retry_window_is_reported(rig: Rig) -> None:
    job = rig.job(1)
    rig.refusals.requeue([job], RuntimeError("busy"))
    rig.now += POLICY.retry_window_s + 1
    rig.refusals.requeue([job], RuntimeError("busy"))
    assert job.failure is not None
    assert job.failure.startswith("could not deliver for 601 s")


# The coordinator's reverts, decoded by the node's one decoder from the bytes the coordinator returns: what the node
# says carries the error's arguments, while what it does is still chosen by the error's name.
@pytest.mark.usefixtures("contracts_built")
@pytest.mark.parametrize(
    ("signature", "args", "state", "says"),
    [
        (
            "OutputTooLarge(uint256,uint256)",
            [300, 256],
            JobState.COMPUTED,
            "delivery refused: OutputTooLarge(length=300, maxOutputBytes=256)",
        ),
        (
            "RequestClosed(uint256,uint8)",
            [1, 2],
            JobState.EXPIRED,
            "already settled on-chain (RequestClosed(requestId=1, status=2))",
        ),
        (
            "ProofRequired(uint256)",
            [1],
            JobState.SKIPPED,
            "the coordinator refused a delivery without a proof (ProofRequired(requestId=1))",
        ),
    ],
)
def test_a_refused_delivery_is_said_with_the_errors_arguments(
    rig: Rig, signature: str, args: list[int], state: JobState, says: str
) -> None:
    from eth_abi.abi import encode
    from eth_utils.crypto import keccak

    from node.chain.contracts import CoordinatorAbi
    from node.chain.rpc import RpcError, as_reverted

    types = signature[signature.index("(") + 1 : -1].split(",")
    data = "0x" + (keccak(text=signature)[:4] + encode(types, args)).hex()
    reverted = as_reverted(
        RpcError("eth_call", 3, "execution reverted", data), CoordinatorAbi.from_artifacts(), "deliver of request 1"
    )
    assert reverted.error == signature[: signature.index("(")]  # the name the rules compare, unchanged
    job = rig.job(1)
    rig.refusals.reverted(job, reverted)
    assert job.state is state
    said = job.failure if state is JobState.COMPUTED else job.error
    assert said is not None
    assert says in said
    if state is JobState.COMPUTED:  # a failure report instead, queued to be sent
        assert said == says
        assert rig.books.queue.peek() is job
