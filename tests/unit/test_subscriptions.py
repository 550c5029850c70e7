"""Subscriptions without a chain: interval arithmetic against the contract's rule (random fuzz of timestamps, periods
and cancels), interval job ids, the SubscriptionManager's logs decoded from its compiled ABI, and the store's
`subscriptions` table and interval jobs on a real SQLite file (a version-1 file migrated)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from eth_abi.abi import encode as abi_encode
from eth_utils.address import to_checksum_address

from node.chain import batching
from node.chain.contracts import InferenceRequest
from node.chain.subscriptions import ManagerAbi, SubscriptionCancelled
from node.jobs.intervals import (
    MAX_INTERVAL,
    Subscription,
    current_interval,
    interval_end,
    interval_job_id,
    is_over,
    live_interval,
    split_job_id,
)
from node.jobs.rows import SCHEMA_VERSION, SUBSCRIPTIONS_TABLE
from node.jobs.states import JobState
from node.jobs.store import JobStore
from tests.unit.txjobs import computed_job

ADDR = to_checksum_address("0x" + "11" * 20)
MANAGER = to_checksum_address("0x" + "22" * 20)
NODE = to_checksum_address("0x" + "33" * 20)
MODEL = b"\x01" * 32


def subscription(
    sid: int = 1, *, start: int = 1_000, period: int = 60, intervals: int = 5, block: int = 10
) -> Subscription:
    return Subscription(
        sid, MODEL, ADDR, ADDR, 10**15, 100_000, 2, period, intervals, start, block, "0xbb", "0xcc", 0, intervals
    )


def cancelled(sub: Subscription, last: int) -> Subscription:
    """`sub` as the contract leaves it after `cancelSubscription` in interval `last`."""
    return Subscription(
        **{**{f: getattr(sub, f) for f in sub.__slots__}, "active_intervals": last + 1, "cancelled": True}
    )


def deliverable(sub: Subscription, interval: int, timestamp: int) -> bool:
    """The SubscriptionManager's rule in `deliverInterval`, written out from the contract."""
    elapsed = (timestamp - sub.start) // sub.period_s
    return interval == min(elapsed, MAX_INTERVAL) and interval < sub.active_intervals and not sub.cancelled


# ------------------------------------------------------------------------------------------ interval arithmetic


def test_fuzz_the_live_interval_is_exactly_the_one_the_contract_takes() -> None:
    rng = random.Random(17)
    for _ in range(5_000):
        period = rng.choice([60, 61, 3_600, 86_400, rng.randint(60, 365 * 86_400)])
        intervals = rng.randint(1, 100_000)
        sub = subscription(start=rng.randint(1, 2**40), period=period, intervals=intervals)
        if rng.random() < 0.3:
            sub = cancelled(sub, rng.randint(0, intervals - 1))
        timestamp = sub.start + rng.choice([0, period - 1, period, rng.randint(0, period * (intervals + 2))])
        live = live_interval(sub, timestamp)
        current = min((timestamp - sub.start) // period, MAX_INTERVAL)
        assert live in (None, current)
        assert (live == current) == deliverable(sub, current, timestamp)
        if live is not None:
            assert sub.start + live * period <= timestamp < interval_end(sub, live)
        if is_over(sub, timestamp):  # then nothing is deliverable from here on
            for later in (timestamp, timestamp + period, timestamp + rng.randint(0, 3 * period)):
                assert not deliverable(sub, current_interval(later, sub.start, period), later)
        else:
            assert current < sub.active_intervals
            assert not sub.cancelled


def test_intervals_start_at_the_creation_block_and_end_at_each_period() -> None:
    sub = subscription(start=1_000, period=60, intervals=3)
    assert [live_interval(sub, t) for t in (1_000, 1_059, 1_060, 1_179, 1_180)] == [0, 0, 1, 2, None]
    assert current_interval(999, 1_000, 60) == -1
    assert interval_end(sub, 1) == 1_120
    assert is_over(sub, 1_180)
    assert not is_over(sub, 1_179)


def test_a_cancelled_subscription_takes_nothing_more_not_even_its_current_interval() -> None:
    sub = cancelled(subscription(start=0, period=60, intervals=5), last=3)
    assert sub.active_intervals == 4
    assert [live_interval(sub, t) for t in (0, 3 * 60 + 1, 4 * 60)] == [None, None, None]
    assert is_over(sub, 0)


def test_a_period_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="period"):
        current_interval(10, 0, 0)


def test_fuzz_interval_job_ids_round_trip_and_never_equal_a_request_id() -> None:
    rng = random.Random(3)
    for _ in range(5_000):
        sid, interval = (
            rng.choice([1, 2, rng.randint(0, 2**200)]),
            rng.choice([0, MAX_INTERVAL, rng.randint(0, 2**32 - 1)]),
        )
        job_id = interval_job_id(sid, interval)
        assert job_id < 0
        assert split_job_id(job_id) == (sid, interval)
    assert split_job_id(0) is None
    assert split_job_id(7) is None
    with pytest.raises(ValueError, match="interval"):
        interval_job_id(1, 2**32)


# ------------------------------------------------------------------------------------------------- the ABI


@pytest.fixture(scope="module")
def manager_abi(contracts_built: None) -> ManagerAbi:
    return ManagerAbi.from_artifacts()


def _word(value: int | str) -> str:
    if isinstance(value, str):
        return "0x" + value.lower().removeprefix("0x").rjust(64, "0")
    return "0x" + value.to_bytes(32, "big").hex()


def created_log(abi: ManagerAbi, sub: Subscription, address: str = MANAGER) -> dict[str, object]:
    data = abi_encode(
        ["address", "uint256", "uint32", "uint16", "uint32", "uint32", "uint64"],
        [
            sub.token,
            sub.fee_per_node_wei,
            sub.callback_gas_limit,
            sub.redundancy,
            sub.period_s,
            sub.intervals,
            sub.start,
        ],
    )
    return {
        "address": address,
        "topics": [abi.created_topic, _word(sub.subscription_id), "0x" + sub.model_id.hex(), _word(sub.consumer)],
        "data": "0x" + data.hex(),
        "blockNumber": hex(sub.block_number),
        "blockHash": sub.block_hash,
        "transactionHash": sub.tx_hash,
        "logIndex": hex(sub.log_index),
    }


def test_fuzz_subscription_logs_decode_to_what_the_contract_emitted(manager_abi: ManagerAbi) -> None:
    rng = random.Random(5)
    for _ in range(300):
        sub = Subscription(
            subscription_id=rng.randint(1, 2**256 - 1),
            model_id=rng.randbytes(32),
            consumer=to_checksum_address(rng.randbytes(20)),
            token=to_checksum_address(rng.randbytes(20)),
            fee_per_node_wei=rng.randint(0, 2**256 - 1),
            callback_gas_limit=rng.randint(1, 2**32 - 1),
            redundancy=rng.randint(1, 2**16 - 1),
            period_s=rng.randint(60, 2**32 - 1),
            intervals=(n := rng.randint(1, 100_000)),
            start=rng.randint(0, 2**64 - 1),
            block_number=rng.randint(0, 2**40),
            block_hash="0x" + rng.randbytes(32).hex(),
            tx_hash="0x" + rng.randbytes(32).hex(),
            log_index=rng.randint(0, 1_000),
            active_intervals=n,
        )
        assert manager_abi.decode(created_log(manager_abi, sub)) == sub
    cancel = {
        "topics": [manager_abi.cancelled_topic, _word(9)],
        "data": "0x" + abi_encode(["uint32", "uint256"], [3, 2 * 10**15]).hex(),
        "blockNumber": "0x10",
        "blockHash": "0x" + "ab" * 32,
        "transactionHash": "0x" + "cd" * 32,
        "logIndex": "0x1",
    }
    assert manager_abi.decode(cancel) == SubscriptionCancelled(
        9, 3, 2 * 10**15, 16, "0x" + "ab" * 32, "0x" + "cd" * 32, 1
    )
    with pytest.raises(ValueError, match="not a subscription log"):
        manager_abi.decode({**cancel, "topics": [manager_abi.fulfilled_topic, _word(9)]})


def test_only_the_managers_interval_fulfilled_of_this_node_settles_an_interval(manager_abi: ManagerAbi) -> None:
    def fulfilled(address: str, node: str, sid: int = 4, interval: int = 2) -> dict[str, object]:
        return {
            "address": address,
            "topics": [manager_abi.fulfilled_topic, _word(sid), _word(interval), _word(node)],
            "data": "0x" + "00" * 64,
        }

    logs = [
        fulfilled(ADDR, NODE),  # a consumer's callback emitting a look-alike: not the manager
        fulfilled(MANAGER, ADDR),  # another node's delivery
        {"address": MANAGER, "topics": []},  # a log of any shape is passed over
        fulfilled(MANAGER.lower(), NODE),
    ]
    assert manager_abi.interval_outcomes(logs, NODE, MANAGER) == {interval_job_id(4, 2): "fulfilled"}


def test_deliver_interval_calldata_names_the_subscription_interval_and_output(manager_abi: ManagerAbi) -> None:
    data = manager_abi.deliver_calldata(7, 3, b"out")
    assert data[4:] == abi_encode(["uint256", "uint32", "bytes"], [7, 3, b"out"])
    assert ManagerAbi.decode_input("0x" + abi_encode(["bytes"], [b"interval-3"]).hex()) == b"interval-3"
    with pytest.raises(ValueError, match="returned nothing"):
        ManagerAbi.decode_input("0x")


# --------------------------------------------------------------------------------------------------- the store


def store(location: str) -> JobStore:
    return JobStore(location, chain_id=31337, coordinator=ADDR, subscription_manager=MANAGER)


def interval_request(sid: int, interval: int, *, block: int = 20, input_: bytes = b"in") -> InferenceRequest:
    return InferenceRequest(
        interval_job_id(sid, interval),
        MODEL,
        ADDR,
        input_,
        ADDR,
        10**15,
        100_000,
        2,
        2**40,
        to_checksum_address("0x" + "00" * 20),
        block,
        "0xdd",
        "0xcc",
        0,
    )


def test_subscriptions_are_recorded_once_cancelled_and_undone_by_a_reorg(store_at: str) -> None:
    s = store(store_at)
    sub = subscription(1, start=1_000, block=10)
    assert s.record_requests([(sub, "m"), (sub, "m")], cursor=11) == []
    assert s.subscriptions.live(1_000) == [sub]
    s.record_requests([(SubscriptionCancelled(1, 2, 5, 12, "0xee", "0xff", 0), "")], cursor=13)
    s.record_requests([(SubscriptionCancelled(99, 2, 5, 12, "0xee", "0xff", 1), "")], cursor=13)  # not followed
    assert s.subscriptions.get(1) == cancelled(sub, 2)
    assert s.subscriptions.live(1_000) == []
    s.orphan_from(12)  # the cancel's block was replaced: the subscription is whole again
    assert s.subscriptions.get(1) == sub
    s.orphan_from(10)  # and its creation's
    assert s.subscriptions.get(1) is None
    assert s.cursor(0) == 13


def test_an_interval_job_is_one_row_keyed_by_the_manager_subscription_and_interval(store_at: str) -> None:
    s = store(store_at)
    with s.transaction():
        job = s.add(interval_request(5, 2), "m")
        assert s.add(interval_request(5, 2), "m") is None
    assert job is not None
    assert job.subscription == (5, 2)
    request = computed_job(s, 5, ADDR)  # request 5 of the coordinator: another job
    assert request.subscription is None
    rows = [tuple(r) for r in s.execute("SELECT coordinator, request_id, interval FROM jobs")]
    assert sorted(rows) == sorted([(MANAGER.lower(), "5", 2), (ADDR.lower(), "5", 0)])
    s.update(job, JobState.RUNNING, attempts=1)
    s.close()
    reopened = store(store_at)
    assert {j.request_id for j in reopened.resumable()} == {interval_job_id(5, 2), 5}
    assert reopened.last_interval(5) == 2
    assert reopened.last_interval(6) is None
    latest = {(j["request_id"], j.get("subscription_id"), j.get("interval")) for j in reopened.latest(10)}
    assert latest == {(None, "5", 2), ("5", None, None)}
    assert [r.job.subscription for r in reopened.list_jobs()] == [(5, 2), None]  # the newest change first
    assert reopened.orphan_from(20) == [interval_job_id(5, 2)]  # made at a head that a reorg replaced
    again = reopened.add(interval_request(5, 2, block=21), "m")  # the next round makes it again
    assert again is not None
    assert again.state is JobState.SEEN


def test_a_version_1_store_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    s = JobStore(tmp_path / "jobs.db", chain_id=31337, coordinator=ADDR)
    computed_job(s, 3, ADDR)
    s.close()
    db = sqlite3.connect(tmp_path / "jobs.db")
    db.execute("DROP TABLE subscriptions")  # the layout of version 1
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    migrated = store(str(tmp_path / "jobs.db"))
    assert [j.request_id for j in migrated.resumable()] == [3]
    migrated.record_requests([(subscription(1), "m")])
    assert migrated.subscriptions.get(1) == subscription(1)
    version = sqlite3.connect(tmp_path / "jobs.db").execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION == 2
    assert "CREATE TABLE IF NOT EXISTS subscriptions" in SUBSCRIPTIONS_TABLE


# ------------------------------------------------------------------------------------------------- batching


def test_an_interval_delivery_always_goes_alone(tmp_path: Path) -> None:
    s = store(str(tmp_path / "jobs.db"))
    first, second = computed_job(s, 1, ADDR), computed_job(s, 2, ADDR)
    with s.transaction():
        interval = s.add(interval_request(5, 0), "m")
    assert interval is not None
    s.update(interval, JobState.COMPUTED, output=b"out")
    queue = batching.ReadyQueue()
    for job in (first, interval, second):
        queue.append(job)
    limits = batching.BatchLimits(32, 30_000_000)

    def take() -> list[int]:
        batch = batching.take_batch(
            queue, limits, now=0, refusals=lambda rid: 0, expire=lambda job: None, report=lambda job, why: None
        )
        return [j.request_id for j in batch]

    assert [take(), take(), take()] == [[1], [interval.request_id], [2]]
