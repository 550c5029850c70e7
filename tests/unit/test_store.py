"""The job store on a real SQLite file and a real PostgreSQL database (each test once per backend): duplicates,
crash-safe state, reorg revival, pruning."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from eth_utils.address import to_checksum_address

from node.chain.contracts import InferenceRequest
from node.jobs.outcomes import Outcome, Outcomes
from node.jobs.rows import request_from_json, request_to_json
from node.jobs.store import JobState, JobStore, StoredTx

if TYPE_CHECKING:
    from node.devnet.postgres import ThrowawayPostgres

ADDR = to_checksum_address("0x" + "11" * 20)
ZERO = to_checksum_address("0x" + "00" * 20)


def request(rid: int, input_: bytes = b"hello", block: int = 10, block_hash: str = "0xaa") -> InferenceRequest:
    model = b"\x01" * 32
    return InferenceRequest(rid, model, ADDR, input_, ADDR, 10**15, 100_000, 1, 2**40, ZERO, block, block_hash, "0x", 0)


def test_a_request_keeps_its_verifier_and_an_old_row_reads_as_a_plain_request() -> None:
    verified = dataclasses.replace(request(1), verifier=to_checksum_address("0x" + "ab" * 20))
    assert request_from_json(request_to_json(verified)) == verified
    old_row = json.loads(request_to_json(request(2)))
    del old_row["verifier"]  # written before requests named their verifier
    assert request_from_json(json.dumps(old_row)).verifier == ZERO


def store(location: str) -> JobStore:
    return JobStore(location, chain_id=31337, coordinator=ADDR)


def test_a_request_seen_twice_is_one_job(store_at: str) -> None:
    s = store(store_at)
    assert s.add(request(1), "m") is not None
    assert s.add(request(1), "m") is None
    assert s.counts() == {"seen": 1}


def test_a_reopened_store_resumes_computed_jobs_with_their_output(store_at: str) -> None:
    s = store(store_at)
    job = s.add(request(7), "m")
    assert job is not None
    s.update(job, JobState.RUNNING, attempts=1)
    s.update(job, JobState.COMPUTED, output=b"answer")
    s.close()  # as if the process died here
    (resumed,) = store(store_at).resumable()
    assert (resumed.request_id, resumed.state, resumed.output, resumed.attempts) == (7, "computed", b"answer", 1)


def test_a_signed_transaction_is_kept_with_its_jobs(store_at: str) -> None:
    s = store(store_at)
    job = s.add(request(3), "m")
    assert job is not None
    s.update(job, JobState.COMPUTED, output=b"x")
    tx = StoredTx(ADDR, 5, ["0xbeef"], b"raw", {"nonce": 5}, [(3, False)], sent_block=11)
    s.add_tx(tx, [job])
    s.close()
    s2 = store(store_at)
    (open_tx,) = s2.open_txs(ADDR)
    assert (open_tx.nonce, open_tx.raw, open_tx.items) == (5, b"raw", [(3, False)])
    stored = s2.get(3)
    assert stored is not None
    assert (stored.state, stored.tx_hash, stored.nonce) == ("submitted", "0xbeef", 5)
    assert s2.resumable() == []  # the transaction, not the scheduler, owns it now


def test_a_reorg_orphans_jobs_and_a_reincluded_request_keeps_only_a_matching_output(store_at: str) -> None:
    s = store(store_at)
    for rid, block in ((1, 9), (2, 10), (3, 11)):
        job = s.add(request(rid, block=block), "m")
        assert job is not None
        s.update(job, JobState.COMPUTED, output=b"out")
    assert sorted(s.orphan_from(10)) == [2, 3]
    revived = s.add(request(2, block=10, block_hash="0xbb"), "m")  # the same request re-included
    assert revived is not None
    assert (revived.state, revived.output) == ("computed", b"out")
    other = s.add(request(3, input_=b"someone else", block=10, block_hash="0xbb"), "m")  # another request, same id
    assert other is not None
    assert (other.state, other.output) == ("seen", None)


def test_prune_deletes_only_old_finished_jobs(store_at: str) -> None:
    s = store(store_at)
    done = s.add(request(1), "m")
    live = s.add(request(2), "m")
    assert done is not None
    assert live is not None
    s.update(done, JobState.EXPIRED)
    assert s.prune(retention_s=3600) == 0
    assert s.prune(retention_s=-1.0) == 0  # finished, but its request's deadline (2**40) is still ahead: kept
    old = s.add(dataclasses.replace(request(3), deadline=1_000), "m")  # deadline long past
    assert old is not None
    s.update(old, JobState.EXPIRED)
    Outcomes(s).set(3, callback_ok=True, fee_earned=10**15)
    assert s.prune(retention_s=-1.0) == 1  # "older than one second in the future", deadline past too
    assert s.counts() == {"seen": 1, "expired": 1}
    assert Outcomes(s).get(3) == Outcome()  # its outcome row went with it


def test_outcomes_are_kept_per_request_and_reclaim_is_due_only_for_requests_left_open(store_at: str) -> None:
    s = store(store_at)
    outcomes = Outcomes(s)
    rows = {
        1: (JobState.CONFIRMED, 1),  # one-node request delivered: closed by the delivery, nothing to reclaim
        2: (JobState.CONFIRMED, 2),  # one of two slots delivered: the other may be open
        3: (JobState.EXPIRED, 1),
        4: (JobState.FAILED, 1),  # reported below the failure quorum: still open
        5: (JobState.SKIPPED, 1),  # outside the fee policy: not this node's to end
        6: (JobState.SEEN, 1),  # still being worked on
    }
    for rid, (state, redundancy) in rows.items():
        job = s.add(dataclasses.replace(request(rid), deadline=500 + rid, redundancy=redundancy), "m")
        assert job is not None
        if state is JobState.CONFIRMED or state is JobState.FAILED:
            s.update(job, JobState.COMPUTED, output=b"x")
            s.update(job, JobState.SUBMITTED, tx_hash="0xdd")
        if state is not JobState.SEEN:
            s.update(job, state)
    assert outcomes.reclaim_due(now=400, limit=10) == []  # no deadline passed yet
    assert outcomes.reclaim_due(now=10_000, limit=10) == [(2, 502), (3, 503), (4, 504)]
    assert outcomes.reclaim_due(now=10_000, limit=2) == [(2, 502), (3, 503)]  # oldest deadline first
    outcomes.set(3, reclaim="closed")
    outcomes.set(2, callback_ok=False, fee_earned=2**200)
    assert outcomes.reclaim_due(now=10_000, limit=10) == [(2, 502), (4, 504)]
    outcomes.set(4, reclaim="sent 0xab")  # sent by a run that died before it landed
    assert outcomes.reclaim_due(now=10_000, limit=10) == [(2, 502)]  # a recent mark: given time to land
    stale = outcomes.reclaim_due(now=10_000, limit=10, stale_before=time.time() + 1)
    assert stale == [(2, 502), (4, 504)]  # an old one is tried again
    outcomes.set(4, reclaim="done 0xab")
    assert outcomes.reclaim_due(now=10_000, limit=10, stale_before=time.time() + 1) == [(2, 502)]
    assert outcomes.get(2) == Outcome(callback_ok=False, fee_earned=2**200)
    assert outcomes.get(2).as_dict()["fee_earned"] == str(2**200)
    with pytest.raises(TypeError, match="not outcome fields"):
        outcomes.set(2, state="x")


def test_a_store_from_a_newer_infera_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    import sqlite3

    from node.errors import ConfigError
    from node.jobs.store import SCHEMA_VERSION, JobStore

    path = tmp_path / "infera.db"
    JobStore(path, chain_id=1, coordinator="0x" + "11" * 20).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="written by a newer Infera"):
        JobStore(path, chain_id=1, coordinator="0x" + "11" * 20)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def test_a_postgresql_store_from_a_newer_infera_is_refused_and_left_as_it_is(postgres: ThrowawayPostgres) -> None:
    import psycopg

    from node.errors import ConfigError
    from node.jobs.store import SCHEMA_VERSION

    url = postgres.new_database()
    JobStore(url, chain_id=1, coordinator="0x" + "11" * 20).close()
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT version FROM infera_schema").fetchall() == [(SCHEMA_VERSION,)]
        db.execute("UPDATE infera_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="written by a newer Infera"):
        JobStore(url, chain_id=1, coordinator="0x" + "11" * 20)
    with psycopg.connect(url, autocommit=True) as db:
        assert db.execute("SELECT version FROM infera_schema").fetchall() == [(SCHEMA_VERSION + 1,)]


def test_replicas_opening_one_new_postgresql_store_together_create_it_once(postgres: ThrowawayPostgres) -> None:
    """Two replicas start at once on an empty database: the schema lock makes one create the tables and the other
    find them (without it, one fails on a duplicate catalog row)."""
    from concurrent.futures import ThreadPoolExecutor

    url = postgres.new_database()
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: JobStore(url, chain_id=1, coordinator=ADDR), range(4)))
    job = stores[0].add(request(1), "m")
    assert job is not None
    assert [s.counts() for s in stores] == [{"seen": 1}] * 4
    for s in stores:
        s.close()


def test_a_postgresql_url_that_does_not_answer_is_a_config_error_without_its_password() -> None:
    from node.devnet import free_port
    from node.errors import ConfigError

    url = f"postgresql://infera:hunter2@127.0.0.1:{free_port()}/infera"
    with pytest.raises(ConfigError, match=r"^store\.url: cannot connect to postgresql://infera:\*\*\*@127") as caught:
        JobStore(url, chain_id=1, coordinator=ADDR)
    assert "hunter2" not in str(caught.value)
