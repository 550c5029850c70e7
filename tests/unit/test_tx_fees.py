"""Fees under the operator's cap and replacements (node/chain/delivery.py, node/chain/build.py,
node/chain/resend.py): a new transaction's fees, a bump by `bump_percent`, rebroadcast as is at the cap, a
replacement that drops orphaned jobs or becomes a 0-value transfer, and when a transaction is due for one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_utils.address import to_checksum_address

from node.chain import build, delivery
from node.chain.env import TxBooks, TxEnv
from node.chain.heads import Head
from node.chain.nonces import Nonces
from node.chain.policy import TxPolicy
from node.chain.resend import BUMP_MIN_AGE_S, Resender
from node.chain.view import ChainView
from node.jobs.states import JobState
from node.jobs.store import Job, JobStore, StoredTx
from tests.unit.txjobs import computed_job

ACCOUNT = Account.from_key("0x" + "33" * 32)
COORDINATOR = to_checksum_address("0x" + "44" * 20)
GWEI = 10**9
CAP = 100 * GWEI
POLICY = TxPolicy(max_fee_per_gas_wei=CAP, priority_fee_wei=GWEI, bump_percent=20, bump_after_blocks=3)


def test_new_fees_are_twice_the_base_fee_plus_the_tip_and_never_over_the_cap() -> None:
    assert delivery.fees(10 * GWEI, CAP, GWEI) == (21 * GWEI, GWEI)
    assert delivery.fees(60 * GWEI, CAP, GWEI) == (CAP, GWEI)  # 2 x 60 + 1 is over the cap: the cap
    assert delivery.fees(CAP - GWEI // 2, CAP, GWEI) == (CAP, GWEI // 2)  # the tip shrinks to fit under the cap
    assert delivery.fees(CAP + 1, CAP, GWEI) is None  # held until the base fee falls


def test_a_bump_raises_both_fees_by_bump_percent() -> None:
    request = {"maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI}
    bumped, raised = build.bumped(request, 2 * GWEI, POLICY)
    assert (bumped["maxFeePerGas"], bumped["maxPriorityFeePerGas"], raised) == (12 * GWEI, 1_200_000_000, True)
    assert request["maxFeePerGas"] == 10 * GWEI  # the old request is left as it was
    half = build.bumped(request, 2 * GWEI, TxPolicy(CAP, GWEI, bump_percent=50))[0]
    assert half["maxFeePerGas"] == 15 * GWEI


def test_a_bump_follows_a_rising_base_fee() -> None:
    bumped, raised = build.bumped({"maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI}, 20 * GWEI, POLICY)
    assert bumped["maxFeePerGas"] == 40 * GWEI + 1_200_000_000
    assert raised


def test_a_bump_stops_at_the_cap_and_below_10_percent_is_no_bump() -> None:
    at_cap, raised = build.bumped({"maxFeePerGas": CAP, "maxPriorityFeePerGas": GWEI}, GWEI, POLICY)
    assert (at_cap["maxFeePerGas"], raised) == (CAP, False)
    near, raised = build.bumped({"maxFeePerGas": 95 * GWEI, "maxPriorityFeePerGas": GWEI}, GWEI, POLICY)
    assert (near["maxFeePerGas"], raised) == (CAP, False)  # +5%: nodes refuse a replacement under +10%
    enough, raised = build.bumped({"maxFeePerGas": 90 * GWEI, "maxPriorityFeePerGas": GWEI}, GWEI, POLICY)
    assert (enough["maxFeePerGas"], raised) == (CAP, True)  # +11%


class Broadcasts:
    def __init__(self) -> None:
        self.sent: list[tuple[StoredTx, bool]] = []

    async def send(self, tx: StoredTx, *, quiet: bool = False) -> None:
        self.sent.append((tx, quiet))


class Rig:
    def __init__(self, location: str) -> None:
        self.store = JobStore(location, chain_id=31337, coordinator=COORDINATOR)
        self.view = ChainView()
        self.view.on_head(Head(10, "0x0a", "0x09", GWEI, 1_700_000_000, 30_000_000))
        self.books = TxBooks.new([ACCOUNT], self.store, 64)
        self.broadcasts = Broadcasts()
        env = TxEnv(None, self.store, None, COORDINATOR, POLICY, self.view)  # type: ignore[arg-type]
        nonces = Nonces(None, self.books.ledger)  # type: ignore[arg-type]
        self.resender = Resender(env, self.books, nonces, self.broadcasts)  # type: ignore[arg-type]

    def job(self, rid: int) -> Job:
        return computed_job(self.store, rid, COORDINATOR)

    def open_tx(self, max_fee_wei: int, *jobs: Job, sent_block: int = 5) -> StoredTx:
        request = build.unsigned_call(COORDINATOR, b"\x01", 300_000, 0, 31337, (max_fee_wei, GWEI))
        tx_hash, raw = build.sign(ACCOUNT, request)
        tx = StoredTx(ACCOUNT.address, 0, [tx_hash], raw, request, [(j.request_id, False) for j in jobs], sent_block)
        self.store.add_tx(tx, list(jobs))
        self.books.ledger.open(tx)
        self.books.ledger.carry(list(jobs))
        return tx


@pytest.fixture
def rig(store_at: str) -> Iterator[Rig]:
    r = Rig(store_at)
    yield r
    r.store.close()


async def test_an_unmined_transaction_is_re_signed_at_its_nonce_with_bumped_fees(rig: Rig) -> None:
    job = rig.job(1)
    tx = rig.open_tx(10 * GWEI, job)
    await rig.resender.replace(tx)
    assert len(tx.hashes) == 2
    assert tx.request["nonce"] == 0
    assert (tx.request["maxFeePerGas"], tx.request["maxPriorityFeePerGas"]) == (12 * GWEI, 1_200_000_000)
    assert rig.broadcasts.sent == [(tx, True)]
    assert rig.resender.replaced == 1
    assert tx.sent_block == 10  # the next bump waits bump_after_blocks from now
    (stored,) = rig.store.open_txs(ACCOUNT.address)
    assert stored.hashes == tx.hashes
    assert stored.raw == tx.raw
    assert (job.state, job.tx_hash) == (JobState.SUBMITTED, tx.hashes[-1])


async def test_at_the_cap_the_transaction_is_rebroadcast_as_it_is(rig: Rig) -> None:
    tx = rig.open_tx(CAP, rig.job(1))
    raw = tx.raw
    await rig.resender.replace(tx)
    assert len(tx.hashes) == 1
    assert tx.raw == raw
    assert rig.broadcasts.sent == [(tx, True)]
    assert rig.resender.replaced == 0


async def test_a_replacement_whose_jobs_were_all_orphaned_fills_the_nonce_with_a_0_value_transfer(rig: Rig) -> None:
    job = rig.job(1)
    tx = rig.open_tx(CAP, job)  # even at the cap: the payload changes, so it is re-signed
    rig.store.update(job, JobState.ORPHANED)
    await rig.resender.replace(tx)
    assert (tx.request["to"], tx.request["data"], tx.request["gas"]) == (ACCOUNT.address, "0x", delivery.CANCEL_GAS)
    assert tx.items == []
    assert len(tx.hashes) == 2
    assert tx.hashes[-1].lower() in rig.store.call_hashes


def test_a_transaction_is_due_for_a_bump_after_bump_after_blocks_and_bump_min_age(rig: Rig) -> None:
    tx = rig.open_tx(10 * GWEI, rig.job(1), sent_block=8)  # head 10: 2 blocks behind
    rig.books.ledger.touch(tx, at=time.monotonic() - BUMP_MIN_AGE_S - 1)
    assert not rig.resender.stale(tx)
    tx.sent_block = 7
    assert rig.resender.stale(tx)
    rig.books.ledger.touch(tx)  # just sent: blocks pass faster than a busy RPC answers
    assert not rig.resender.stale(tx)
