"""The leader lease and its fencing on a real PostgreSQL cluster: one holder at a time, a taking raises the epoch, a
deposed holder writes nothing, and a taking waits for the old holder's write in progress."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import psycopg
import pytest
from eth_utils.address import to_checksum_address

from node.chain.contracts import InferenceRequest
from node.devnet.processes import wait_until
from node.jobs.lease import Lease, LeaseLost, lease_name
from node.jobs.store import JobStore

if TYPE_CHECKING:
    from node.devnet.postgres import ThrowawayPostgres

ADDR = to_checksum_address("0x" + "11" * 20)
NAME = lease_name(31337, ADDR)


def request(rid: int) -> InferenceRequest:
    return InferenceRequest(rid, b"\x01" * 32, ADDR, b"in", ADDR, 10**15, 100_000, 1, 2**40, ADDR, 10, "0xaa", "0x", 0)


class Replica:
    """What a node process holds: the lease and the store, fenced by it."""

    def __init__(self, url: str, name: str, ttl_s: float = 30.0) -> None:
        self.lease = Lease(url, NAME, name, ttl_s)
        self.store = JobStore(url, chain_id=31337, coordinator=ADDR)
        self.store.fence_with(self.lease)

    def close(self) -> None:
        self.store.close()
        self.lease.close()


@pytest.fixture
def url(postgres: ThrowawayPostgres) -> str:
    return postgres.new_database()


@pytest.fixture
def pair(url: str) -> Iterator[tuple[Replica, Replica]]:
    a, b = Replica(url, "a"), Replica(url, "b")
    yield a, b
    a.close()
    b.close()


def end_lease_now(url: str) -> None:
    """What a pause or a partition past the lease's end looks like to the database."""
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE leases SET expires_at = clock_timestamp() WHERE name = %s", (NAME,))


def test_one_holder_at_a_time_and_each_taking_raises_the_epoch(pair: tuple[Replica, Replica], url: str) -> None:
    a, b = pair
    assert a.lease.try_acquire()
    assert not b.lease.try_acquire()  # held and not ended
    a.lease.renew()
    state = b.lease.read()
    assert state is not None
    assert (state.holder, state.epoch) == (a.lease.holder, 1)
    assert state.expires_at > state.renewed_at
    end_lease_now(url)
    assert b.lease.try_acquire()
    assert b.lease.epoch == 2
    with pytest.raises(LeaseLost, match="epoch 1"):
        a.lease.renew()
    assert a.lease.epoch is None


def test_a_deposed_leader_writes_nothing_and_its_successor_sees_every_committed_write(
    pair: tuple[Replica, Replica], url: str
) -> None:
    a, b = pair
    assert a.lease.try_acquire()
    first = a.store.add(request(1), "m")  # an autocommit write: fenced on its own
    assert first is not None
    end_lease_now(url)  # a paused a: its lease ends, nobody has taken it yet
    with pytest.raises(LeaseLost):
        a.store.add(request(2), "m")
    assert b.lease.try_acquire()
    with pytest.raises(LeaseLost), a.store.transaction():  # a wakes up: whatever it tries, nothing lands
        a.store.add(request(3), "m")
    with pytest.raises(LeaseLost):
        a.store.update(first, first.state.__class__("running"), attempts=1)
    assert b.store.counts() == {"seen": 1}
    record = b.store.record(1)
    assert record is not None
    assert record.job.attempts == 0  # a's update after its lease ended never landed
    assert b.store.add(request(2), "m") is not None  # the new leader writes


def test_a_taking_waits_for_the_old_leaders_write_in_progress(url: str) -> None:
    a, b = Replica(url, "a", ttl_s=1.0), Replica(url, "b")
    try:
        assert a.lease.try_acquire()
        taken: list[bool] = []
        with a.store.transaction():  # the fence passed: a holds the lease row FOR SHARE until this commits
            a.store.add(request(1), "m")
            with psycopg.connect(url, autocommit=True) as watch:
                wait_until(  # a's lease ends while its write is still open
                    lambda: watch.execute(
                        "SELECT expires_at < clock_timestamp() FROM leases WHERE name = %s", (NAME,)
                    ).fetchone()[0],
                    timeout_s=10,
                    what="a's one-second lease to end",
                )
                taker = threading.Thread(target=lambda: taken.append(b.lease.try_acquire()))
                taker.start()
                wait_until(  # b's taking is blocked on a's row lock, not refused
                    lambda: (
                        watch.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                            ("INSERT INTO leases%",),
                        ).fetchone()[0]
                        == 1
                    ),
                    timeout_s=10,
                    what="b's taking to wait on a's write",
                )
                assert taken == []
        taker.join(timeout=10)
        assert taken == [True]
        assert b.store.counts() == {"seen": 1}  # a's write committed before b took over, and b sees it
        with pytest.raises(LeaseLost):
            a.store.add(request(2), "m")
    finally:
        a.close()
        b.close()


def test_a_clean_stop_releases_the_lease_at_once(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    assert a.lease.try_acquire()
    a.lease.release()
    assert b.lease.try_acquire()
    assert b.lease.epoch == 2


def test_the_database_restarting_breaks_no_guarantee(postgres: ThrowawayPostgres) -> None:
    """The store's and the lease's connections are opened again after the database comes back; the lease held
    through the outage (it had not ended) is renewed, and writes go on: a connection that died while idle is replaced
    before a statement is lost on it."""
    url = postgres.new_database()
    a = Replica(url, "a")
    try:
        assert a.lease.try_acquire()
        assert a.store.add(request(1), "m") is not None
        postgres.stop()
        with pytest.raises(psycopg.OperationalError):
            a.lease.renew()
        with pytest.raises(psycopg.OperationalError):
            a.store.add(request(2), "m")
        postgres.start()
        a.lease.renew()
        assert a.store.add(request(2), "m") is not None
        assert a.store.counts() == {"seen": 2}
        postgres.stop()  # a restart while the node is idle: its connections die unnoticed
        postgres.start()
        a.lease.renew()
        job = a.store.add(request(3), "m")  # the first write after it goes through (a new connection), not an error
        assert job is not None
        with a.store.transaction():  # and so does the first transaction
            a.store.update(job, job.state.__class__("running"), attempts=1)
        assert a.store.counts() == {"seen": 2, "running": 1}
    finally:
        a.close()
